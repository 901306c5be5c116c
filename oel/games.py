"""The game families behind one seam: every stage plays, records and reads games through these functions, so
choosing a family (`--family`) is the only difference a stage sees.

- `textworld` (the default): TextWorld games made with tw-make, files on disk (oel/textworld_games.py).
- `frozenlake`, `sokoban` and their board variants (`frozenlake-4x4-h3`, `sokoban-7x7`): the paper's own games
  from TextArena, a game being a family and a seed (oel/arena_games.py).

A game is named by an id from which it can be replayed: a .z8 path, or FAMILY/SEED. Its episode has one
interface: `objective, intro, history, admissible, done, won, lost, score, max_score, step(command), close()`,
`turn_messages(history=, list_commands=, example=)` (the turn prompt without knowledge: play.py inserts it, as
distill.py does for the teacher) and `choose(response, match)` (the command sent, how it was read).

    python -m oel.games --family frozenlake --game-split paper --n 128   # a set: its boards, the solver, a random agent
    python -m oel.games --preset eval --n 20                             # TextWorld: make a set, count distinct games
"""

import argparse
import os
import random

from oel import arena_games, cli, textworld_games

FAMILIES = ["textworld", *arena_games.FAMILIES]  # the names --family takes (arena ones also with a board)
FAMILY_HELP = "textworld, or the paper's frozenlake or sokoban (a board in the name: frozenlake-4x4-h3, sokoban-7x7)"
PRESETS = ("train", "eval", "ood")  # training games; held-out games of the same distribution; out of distribution
TRAINING_SPLITS = ("extract", "deploy")
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


def game_set(family, preset, n, *, round_=0, split="extract", games_dir="games", folder=None, game_split="disjoint"):
    """The game ids of a set, each opened once and checked, so that a broken game (or a TextArena that would
    show the rules) fails before a model loads."""
    try:
        if not is_arena(family):
            if game_split != "disjoint":
                raise ValueError("--game-split paper is the paper's seeds, for frozenlake and sokoban only")
            return textworld_games.game_paths(folder, games_dir, preset, n, round_, split)
        if folder:
            raise ValueError("--games FOLDER is for TextWorld's game files; frozenlake and sokoban games are seeds")
        games = arena_games.make_set(family, preset, n, round_, split, game_split)
        for game in games:
            arena_games.check_game(game)
        return games
    except (OSError, ValueError) as e:
        raise cli.InputError(str(e))


def open_episode(game):
    """A fresh episode of a game id: FAMILY/SEED for the paper's games, else a TextWorld game file."""
    family = game.partition("/")[0]
    if arena_games.FAMILY.match(family):
        return arena_games.Episode(game)
    return textworld_games.Episode(game)


def family_of(game):
    family = game.partition("/")[0]
    return family if arena_games.FAMILY.match(family) else "textworld"


def name(game):
    """A game's short name, as records and reports show it: treasure-l1-s0, frozenlake-s468460046."""
    return game.replace("/", "-s") if family_of(game) != "textworld" else os.path.splitext(os.path.basename(game))[0]


def description(family):
    """What the extractor is told it played."""
    return arena_games.DESCRIPTION if is_arena(family) else textworld_games.DESCRIPTION


# ----------------------------------------------------------------------------- a set, by hand


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Make (or reuse) a game set and describe it.")
    p.add_argument("--family", default="textworld", help=f"{', '.join(FAMILIES)} (a board: frozenlake-4x4-h3)")
    p.add_argument("--preset", default="eval", choices=["train", "eval", "ood"], help="which set")
    p.add_argument("--n", type=cli.positive_int, default=20, help="number of games")
    p.add_argument("--round", type=cli.nonneg_int, default=1, help="training round (train preset only)")
    p.add_argument("--split", default="extract", choices=["extract", "deploy"], help="training split (train only)")
    p.add_argument("--games-dir", default="games", help="TextWorld's game cache; games go to GAMES_DIR/PRESET/")
    p.add_argument("--game-split", default="disjoint", choices=SPLITS, help="the paper's games: see arena_games")
    p.add_argument("--max-turns", type=cli.positive_int, default=arena_games.TURN_CAP, help="turn cap (the paper's: 5)")
    p.add_argument(
        "--training", default=None, help="the paper's games: ROUNDS,N_EXTRACT,N_DEPLOY training sets to compare with"
    )
    p.add_argument("--episodes", type=cli.positive_int, default=10, help="the paper's games: random agent's episodes")
    return p.parse_args(argv)


def describe_arena(games_, max_turns, episodes, training):
    """Boards, the share the solver wins within the cap (the ceiling of a pass rate), the solver and a random
    agent played through the harness, and how many of these games share a board with a training set."""
    from oel import play

    boards = {g: arena_games.Episode(g).board for g in games_}
    plans = {g: arena_games.solve(g, max_turns) for g in games_}
    solvable = [g for g in games_ if plans[g]]
    lines = [f"{len(games_)} games, {len(set(boards.values()))} distinct boards"]
    lines.append(
        f"solvable within {max_turns} moves: {len(solvable)}/{len(games_)} ({len(solvable) / len(games_):.1%})"
    )
    solver = lambda eps, _: [(plans[ep.game][len(ep.history) - 1], 0) for ep in eps]
    won, _ = play.play(solver, solvable, max_turns=max_turns, history=0, batch_size=64, quiet=True)
    lines.append(f"solver through the harness: won {sum(r['won'] for r in won)}/{len(solvable)} solvable")
    rng = random.Random(0)
    randomly = lambda eps, _: [(rng.choice(arena_games.MOVES[:4]), 0) for _ in eps]
    played, _ = play.play(
        randomly, games_, max_turns=max_turns, history=0, batch_size=64, episodes=episodes, quiet=True
    )
    lines.append(
        f"random agent ({episodes} episodes a game): pass rate {sum(r['won'] for r in played) / len(played):.3f}"
    )
    for family, rounds, n_extract, n_deploy, split in training:
        train = set()
        for r in range(1, rounds + 1):
            for part, n in (("extract", n_extract), ("deploy", n_deploy)):
                train |= {
                    arena_games.Episode(g).board for g in arena_games.make_set(family, "train", n, r, part, split)
                }
        shared = sum(boards[g] in train for g in games_)
        lines.append(
            f"training boards ({rounds} rounds): {len(train)}; held-out games sharing one: {shared}/{len(games_)}"
        )
    return "\n".join(lines)


def main(args):
    check_family(args.family, args.max_turns)
    games_ = game_set(
        args.family, args.preset, args.n, round_=args.round, split=args.split, games_dir=args.games_dir,
        game_split=args.game_split,
    )  # fmt: skip
    if not is_arena(args.family):
        return print(f"games | {args.preset} | {textworld_games.describe(games_)} | {args.games_dir}/{args.preset}")
    training = []
    if args.training:
        rounds, n_extract, n_deploy = map(int, args.training.split(","))
        training = [(args.family, rounds, n_extract, n_deploy, args.game_split)]
    print(f"games | {args.family} {args.preset} ({args.game_split}) |")
    print(describe_arena(games_, args.max_turns, args.episodes, training))


if __name__ == "__main__":
    cli.run_main(main, parse_args())
