"""The paper's own games, FrozenLake and Sokoban from TextArena 0.7.4, played as the authors played them.

Facts from the authors' code (microsoft/LMOps, oel/) and TextArena itself; the prompt's wording is ours:
- FrozenLake: 3x3, 2 holes, start top-left, goal bottom-right (about 19 distinct boards, each shortest path 4
  moves). Sokoban: a 6x6 room with one box. One fresh env per game (a reused Sokoban env carries the last
  game's log), made from a seed: the same seed gives the same board in any process.
- The rules are hidden: the model is told it is 'P', to reach the goal in the fewest moves, one step a move,
  and the move format, never what 'H', 'G' or Sokoban's symbols mean. The env's legend is cut out by an exact
  match that fails loudly if this TextArena prints another text.
- At most 5 model turns a game (a turn that hits a wall counts); TextArena ends a game at the second invalid
  move in a row; a win is reward 1.0 (FrozenLake's partial credit is a loss).
- One user message a turn: the instruction, then everything the env has said since the reset (no earlier
  assistant turns). The move is the LAST of [up] [down] [left] [right] [w] [a] [s] [d] in the reply, reasoning
  included; a reply with none sends an invalid move.
- Seeds: held-out game i is 468460046 + 1000 i; extraction game k of round r is 468460046 + 500000 r +
  1000 (128 + k); deployment game k of round r is 505209463 + 10^7 (r - 1) + 1000 (128 + k) (the authors'
  first training step). `--game-split paper` plays these seeds as they are, so held-out boards recur in
  training (3x3 FrozenLake has 19 boards in all); `disjoint` (the default) splits the boards themselves: a
  fixed share of all boards is held out (by a hash of the board), held-out sets take the first seeds with
  distinct held-out boards, training sets skip every seed whose board is held out.

Every `reset(seed=...)` of TextArena reseeds Python's global `random` (FrozenLake draws its board from it), so
each reset here restores the global generator afterwards: no stage's sampling depends on which games it played.

    python -m oel.describe_games --family frozenlake --game-split paper --n 128  # boards, the solver, a random agent
"""

import copy
import hashlib
import random
import re
from collections import deque

FAMILIES = ("frozenlake", "sokoban")  # the paper's; each takes its board in the name (below)
# A family's name holds its board: frozenlake = frozenlake-3x3-h2 (the paper's), frozenlake-4x4-h3, ...;
# -random puts start and goal anywhere (the OOD set of FrozenLake); sokoban = sokoban-6x6 (one box), sokoban-7x7.
FAMILY = re.compile(r"(?P<game>frozenlake)(?P<random>-random)?(?:-(?P<size>\d+)x(?P=size)-h(?P<holes>\d+))?$|"
                    r"(?P<sokoban>sokoban)(?:-(?P<room>\d+)x(?P=room))?$")  # fmt: skip
TURN_CAP = 5  # the authors' limit of model turns a game
HELD_OUT_SHARE = 0.4  # `disjoint`: the share of all boards held out, chosen by a hash of the board
# What TextArena 0.7.4 says at a reset before the first board: the rules. Removed whole, or the game refuses.
LEGENDS = {
    "FrozenLake-v0-raw": "Welcome to Frozen Lake!\n\nYou are represented by 'P' on the grid.\nGrid symbols:\n  ' ' = "
    "Frozen surface (safe to walk on)\n  'H' = Hole (fall in and lose!)\n  'G' = Goal (reach this to win!)\n  'P' = "
    "Your current position\n\nAvailable actions: up, down, left, right (or w, a, s, d)\nType your action as: [up], "
    "[down], [left], [right] or [w], [a], [s], [d]\n\nObjective: Navigate from the start (top-left) to the goal "
    "(bottom-right) without falling into any holes!\n",
    "Sokoban-v0-raw": "You are solving the Sokoban puzzle. You are the player and you need to push all boxes to "
    "targets.\n        When you are right next to a box, you can push it by moving in the same direction.\n        "
    "You cannot push a box through a wall, and you cannot pull a box.\n        On the board, objects are "
    "represented as: \n        - The player (you) appears as 'P' \n        - Walls are represented with '#' \n      "
    "  - Boxes are marked as 'X' \n        - Empty goals are shown with a 'O'\n        - Boxes on goals are "
    "visualized with '√'\n        You can also use [w] for up, [a] for left, [s] for down, and [d] for right.\n    "
    "    ",
}
MOVES = ("[up]", "[down]", "[left]", "[right]", "[w]", "[a]", "[s]", "[d]")
NO_MOVE = "[no valid action]"  # what a reply naming no move sends (as the authors' loop): an invalid move
REFUSED = re.compile(r"attempted an invalid move\. Reason: (.*?) Please resubmit", re.S)  # TextArena's own words
INSTRUCTION = (
    "You are playing a game on a grid. You are the player, shown as 'P'. Reach the goal in as few moves as you "
    "can: each move takes you one step. Answer with one move in square brackets: [up], [down], [left] or [right] "
    "(or [w], [a], [s], [d])."
)
TURN_PROMPT = "{instruction}\n\nThe game so far:\n{log}\n\nYour move:"
DESCRIPTION = "grid game"  # what the extractor is told it played


# ----------------------------------------------------------------------------- one game


def env_spec(family):
    """(TextArena env id, its arguments) of a family name; ValueError for a name it does not parse. The
    unwrapped envs: their messages come as a list, and none carries a log over from an earlier game."""
    m = FAMILY.match(family)
    if not m:
        raise ValueError(
            f"{family}: not a game family (expected frozenlake, frozenlake-4x4-h3, frozenlake-random, sokoban, "
            "sokoban-7x7, ...)"
        )
    if m["sokoban"]:
        room = int(m["room"] or 6)
        return "Sokoban-v0-raw", dict(num_boxes=1, dim_room=(room, room))
    size, holes = int(m["size"] or 3), int(m["holes"] or 2)
    return "FrozenLake-v0-raw", dict(size=size, num_holes=holes, randomize_start_goal=bool(m["random"]))


def ood_family(family):
    """The out-of-distribution family of a training family: FrozenLake with start and goal anywhere; Sokoban
    in a room one wider."""
    env_id, kwargs = env_spec(family)
    if env_id.startswith("Sokoban"):
        return f"sokoban-{kwargs['dim_room'][0] + 1}x{kwargs['dim_room'][0] + 1}"
    return f"frozenlake-random-{kwargs['size']}x{kwargs['size']}-h{kwargs['num_holes']}"


def check_family(family, max_turns):
    """Refuse, before anything is played, a family with no board that can be won: too many holes to leave a
    path, or a shortest path longer than the turn cap (a 4x4 FrozenLake needs 6 moves, a 5x5 one 8)."""
    env_id, kwargs = env_spec(family)
    if env_id.startswith("FrozenLake"):
        size, holes = kwargs["size"], kwargs["num_holes"]
        if size < 2 or holes > size * size - (2 * size - 1):  # the shortest path takes 2 size - 1 cells
            raise ValueError(f"{family}: {holes} holes on a {size}x{size} board leave no path to the goal")
        if not kwargs["randomize_start_goal"] and 2 * (size - 1) > max_turns:
            raise ValueError(
                f"{family}: the shortest path takes {2 * (size - 1)} moves, more than the turn cap {max_turns}: "
                "no game could be won; raise --max-turns"
            )
    elif kwargs["dim_room"][0] < 4:
        raise ValueError(f"{family}: a room under 4x4 has no floor inside its walls")


def game_id(family, seed):
    return f"{family}/{seed}"


def parse_game_id(game):
    """(family, seed) of an id such as 'frozenlake/468460046'; ValueError for anything else."""
    family, _, seed = game.partition("/")
    env_spec(family)
    if not seed.isdigit():
        raise ValueError(f"{game}: not a game id (expected FAMILY/SEED, e.g. frozenlake/468460046)")
    return family, int(seed)


def make_env(family, seed):
    """A fresh env reset to the board of `seed`; Python's global random is left as it was found."""
    import textarena

    env_id, kwargs = env_spec(family)
    env = textarena.make(env_id, **kwargs)
    state = random.getstate()
    try:
        env.reset(num_players=1, seed=seed)
    finally:
        random.setstate(state)
    return env


def messages_of(env):
    """What the env has said since it was last asked, as text, the player's own move echoed by it left out."""
    _, observation = env.get_observation()
    return [text for sender, text, _ in observation if sender != 0]


class Episode:
    """One play of one FrozenLake or Sokoban game; the same interface as the TextWorld episode."""

    def __init__(self, game):
        self.family, self.seed = parse_game_id(game)
        self.path = self.game = game
        self.name = game.replace("/", "-s")
        self.env = make_env(self.family, self.seed)
        said = messages_of(self.env)
        legend = LEGENDS[env_spec(self.family)[0]]
        if not said or said[0] != legend:
            shown = repr(said[0][:120]) if said else "nothing"
            raise ValueError(
                f"{game}: the env's first message is not the legend this project removes (it began {shown}); "
                "another TextArena than 0.7.4 would show the model the rules: pip install textarena==0.7.4"
            )
        self.intro = "\n\n".join(said[1:])
        self.board = board_of(self.intro)
        self.objective = INSTRUCTION  # recorded as the goal a trajectory was played for (the extractor reads it)
        self.walkthrough, self.admissible = [], list(MOVES)
        self.score, self.max_score, self.won, self.lost, self.done, self.reason = 0, 1, False, False, False, ""
        self.refusal, self.ended = None, None  # the game's reason for refusing the last move; how the game ended
        self.history = [(None, self.intro)]

    def step(self, command):
        done, _ = self.env.step(command)
        reply = "\n\n".join(messages_of(self.env))
        refused = REFUSED.search(reply)  # the first invalid move is refused and allowed; the second ends the game
        self.refusal = " ".join(refused.group(1).split()) if refused else None
        if done:
            rewards, info = self.env.close()
            self.won = bool(rewards) and rewards.get(0) == 1  # partial credit (FrozenLake) is a loss
            self.reason = (info or {}).get(0, {}).get("reason", "")
            reply = "\n\n".join(filter(None, [reply, self.reason]))
            if self.reason.startswith("Invalid Move: "):
                self.refusal = self.reason.removeprefix("Invalid Move: ")
            self.ended = ending(self.won, self.reason)
        self.done, self.lost, self.score = bool(done), bool(done) and not self.won, int(self.won)
        self.history.append((command, reply))
        return reply

    def turn_messages(self, history=0, **_):
        """One user message: the instruction, then the game's log since the reset (the last `history` moves
        only, if > 0; the authors show it all)."""
        return [
            {
                "role": "user",
                "content": TURN_PROMPT.format(instruction=INSTRUCTION, log=render_log(self.history, history)),
            }
        ]

    def choose(self, response, match=None):
        """(answer, command, status, valid): the last move named anywhere in the reply, reasoning included, as
        the authors read it; none sends an invalid move."""
        answer = response.split("</think>")[-1].strip()
        found = re.findall("|".join(re.escape(m) for m in MOVES), response)
        if not found:
            return answer, NO_MOVE, "no move" if response.strip() else "empty", False
        return answer, found[-1], "ok", True

    def close(self):
        pass


def ending(won, reason):
    """How a finished game ended, in the words every family's records use."""
    if won:
        return "won"
    for words, ended in (("hole", "hole"), ("Invalid Move", "invalid moves"), ("turn limit", "turn limit")):
        if words in reason:
            return ended
    return "lost"


def render_log(history, max_turns=0):
    shown = history[-max_turns:] if max_turns else history
    lines = ["(earlier moves not shown)"] if len(shown) < len(history) else []
    for command, reply in shown:
        lines.append(reply if command is None else f"> {command}\n{reply}")
    return "\n\n".join(lines)


def board_of(text):
    """The board in an env message ('Current Board:' to the end of the grid): what makes two games the same."""
    match = re.search(r"Current Board:\n\n(.*?)\n\nAvailable", text, re.S)
    if not match:
        raise ValueError(f"no board in the env's message {text[:200]!r}")
    return match.group(1)


def check_game(game):
    """Refuse, before a model loads, a game that cannot be played as documented (the legend check included)."""
    Episode(game).close()


# ----------------------------------------------------------------------------- sets


def training_seed(split, round_, k):
    if split == "extract":
        return 468460046 + 500_000 * round_ + 1000 * (128 + k)
    return 505209463 + 10**7 * (round_ - 1) + 1000 * (128 + k)


def seeds(family, preset, round_=0, split="extract"):
    """The seeds a set draws from, in order (endless)."""
    k = 0
    while True:
        if preset == "eval":
            yield 468460046 + 1000 * k
        elif preset == "ood":  # another generator (random start and goal, a bigger room): its own range
            yield 900_000_000 + 1000 * k
        else:
            yield training_seed(split, round_, k)
        k += 1


def held_out(board):
    """Whether a board belongs to the held-out share (`disjoint` split): a fixed property of the board."""
    return int(hashlib.sha256(board.encode()).hexdigest()[:8], 16) / 16**8 < HELD_OUT_SHARE


def make_set(family, preset, n, round_=0, split="extract", game_split="disjoint", scan=2000, fewer_ok=False):
    """[game id] of a set. paper: the authors' seeds as they are. disjoint: held-out sets (eval, ood) are the
    first seeds with distinct held-out boards; training sets skip every seed whose board is held out. A family
    with fewer than n such boards is an error, or (fewer_ok) the set of all it has."""
    family = ood_family(family) if preset == "ood" else family
    chosen, boards, tried = [], set(), 0
    for seed in seeds(family, preset, round_, split):
        if len(chosen) == n:
            break
        tried += 1
        if tried > scan + 10 * n:
            if fewer_ok:
                break
            raise ValueError(
                f"{family}: only {len(chosen)} of {n} {preset} games found in {tried - 1} seeds "
                f"({len(boards)} distinct boards): too few distinct boards for a {game_split} split; ask for fewer"
            )
        if game_split == "paper":
            chosen.append(game_id(family, seed))
            continue
        board = board_of("\n\n".join(messages_of(make_env(family, seed))[1:]))
        if preset in ("eval", "ood"):
            if held_out(board) and board not in boards:
                boards.add(board)
                chosen.append(game_id(family, seed))
        elif not held_out(board):
            chosen.append(game_id(family, seed))
    return chosen


# ----------------------------------------------------------------------------- the solver: breadth-first search


def solve(game, cap=TURN_CAP):
    """The shortest list of moves that wins the game within `cap`, found by breadth-first search over the env
    itself (each node a copy of the env after some moves), or None. Moves that the env calls invalid are not
    tried: they change nothing but the error count."""
    start = make_env(*parse_game_id(game))
    messages_of(start)
    frontier, seen = deque([(start, [])]), set()
    while frontier:
        env, moves = frontier.popleft()
        if len(moves) == cap:
            continue
        for move in ("[up]", "[down]", "[left]", "[right]"):
            child = copy.deepcopy(env)
            done, _ = child.step(move)
            said = messages_of(child)
            if any("invalid move" in text for text in said):
                continue
            if done:
                rewards, _ = child.close()
                if rewards and rewards.get(0) == 1:
                    return moves + [move]
                continue
            state = "\n".join(said[-1:])
            if state not in seen:
                seen.add(state)
                frontier.append((child, moves + [move]))
    return None
