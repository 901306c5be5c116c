"""The game families behind one seam: every stage plays, records and reads games through these functions, so
choosing a family (`--family`) is the only difference a stage sees.

- `textworld` (the default): TextWorld games made with tw-make, files on disk (oel/textworld_games.py).
- `frozenlake`, `sokoban` and their board variants (`frozenlake-4x4-h3`, `sokoban-7x7`): the paper's own games
  from TextArena, a game being a family and a seed (oel/arena_games.py).

A game is named by an id from which it can be replayed: a .z8 path, or FAMILY/SEED. Its episode has one
interface: `objective, intro, history, admissible, done, won, lost, score, max_score, step(command), close()`,
`turn_messages(history=, list_commands=, example=)` (the turn prompt without knowledge: play.py inserts it, as
distill.py does for the teacher) and `choose(response, match)` (the command sent, how it was read).

A set is named the same way in every stage: `extract` and `deploy` (a round's training games), `id` (held out, of
the training distribution, the same every round) and `ood`. `python -m oel.describe_games` makes one by hand.
"""

import argparse
import os

from oel import arena_games, cli, textworld_games

FAMILIES = ["textworld", *arena_games.FAMILIES]  # the names --family takes (arena ones also with a board)
FAMILY_HELP = "textworld, or the paper's frozenlake or sokoban (a board in the name: frozenlake-4x4-h3, sokoban-7x7)"
# The sets, by one name in every stage and in loop.sh: -> (the family's generator preset, its training split)
SETS = {"extract": ("train", "extract"), "deploy": ("train", "deploy"), "id": ("eval", None), "ood": ("ood", None)}
TRAINING_SETS = ("extract", "deploy")
SET_HELP = "extract or deploy (a round's training games), id (held-out, the training distribution) or ood"
SPLITS = ("disjoint", "paper")
SPLIT_HELP = (
    "the paper's games: disjoint (held-out boards never in training) or paper (the authors' seeds as they are; "
    "held-out boards recur in training). TextWorld's sets are always disjoint"
)


def family_arg(text):
    """argparse type: a family this project plays (a board in an arena family's name is checked here too)."""
    if text == "textworld" or arena_games.FAMILY.match(text):
        return text
    raise argparse.ArgumentTypeError(f"unknown game family {text!r}; expected {', '.join(FAMILIES)}")


def is_arena(family):
    return family != "textworld"


def check_family(family, max_turns):
    """An InputError, before any model loads, for a family this cannot play or whose games none can win."""
    if not is_arena(family):
        return
    try:
        arena_games.check_family(family, max_turns)
    except ValueError as e:
        raise cli.InputError(str(e))


def play_defaults(family):
    """The turn limit and the log window a stage plays with unless told: for the paper's games the authors' (5
    turns, the whole log), for TextWorld the project's default run's (12 turns, the last 4)."""
    return dict(max_turns=arena_games.TURN_CAP, history=0) if is_arena(family) else dict(max_turns=12, history=4)


def fill_play_defaults(args):
    """Give `args.max_turns` and `args.history` the family's defaults where they were not given (None)."""
    for name, value in play_defaults(args.family).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def game_set(family, set_name, n, *, round_=0, games_dir="games", folder=None, game_split="disjoint", fewer_ok=False):
    """The game ids of a set (a name of SETS), each opened once and checked, so that a broken game (or a
    TextArena that would show the rules) fails before a model loads. fewer_ok: the paper's games, a family with
    fewer distinct boards than n gives them all."""
    preset, split = SETS[set_name]
    split = split or "extract"  # held-out sets have no training split
    try:
        if not is_arena(family):
            if game_split != "disjoint":
                raise ValueError("--game-split paper is the paper's seeds, for frozenlake and sokoban only")
            return textworld_games.game_paths(folder, games_dir, preset, n, round_, split)
        if folder:
            raise ValueError("--games FOLDER is for TextWorld's game files; frozenlake and sokoban games are seeds")
        games = arena_games.make_set(family, preset, n, round_, split, game_split, fewer_ok=fewer_ok)
        for game in games:
            arena_games.check_game(game)
        return games
    except (OSError, ValueError) as e:
        raise cli.InputError(str(e))


def open_episode(game):
    """A fresh episode of a game id: FAMILY/SEED for the paper's games, else a TextWorld game file."""
    family = game.partition("/")[0]
    try:
        return arena_games.Episode(game) if arena_games.FAMILY.match(family) else textworld_games.Episode(game)
    except ValueError as e:  # a damaged or unplayable game file: the user's input, named
        raise cli.InputError(str(e))


def family_of(game):
    family = game.partition("/")[0]
    return family if arena_games.FAMILY.match(family) else "textworld"


def name(game):
    """A game's short name, as records and reports show it: treasure-l1-s0, frozenlake-s468460046."""
    return game.replace("/", "-s") if family_of(game) != "textworld" else os.path.splitext(os.path.basename(game))[0]


def description(family):
    """What the extractor is told it played."""
    return arena_games.DESCRIPTION if is_arena(family) else textworld_games.DESCRIPTION
