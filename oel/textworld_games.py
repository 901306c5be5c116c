"""TextWorld, the default game family: game sets, one playable game, its turn prompt and how a command is read
(the play loop is oel/play.py's; the seam every family shares is oel/games.py).

Game sets are made with TextWorld's `tw-make` from a family, a difficulty and a seed, in parallel, and
cached under a folder (an existing game is reused; a half-written one never is). Each set draws its
seeds from its own range, level by level:

    eval   seeds      0 ..   499_999   (fixed across rounds)
    ood    seeds 500_000 ..   999_999   (fixed across rounds)
    train  seeds 1_000_000 + 10_000 * round + (0 for extraction games | 5_000 for deployment games) + i

Different seeds can still make the same game (treasure hunter 1 has a few dozen), so sets are also
made disjoint by content: a held-out set (eval, ood) is the first games of its range with distinct
walkthroughs, and a training set skips every game whose walkthrough wins a held-out game already made
in the same cache (replayed in TextWorld, see `make_set`).

Make a set by hand:  python -m oel.describe_games --set id --n 20 --games-dir games
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor

from oel import cli, jsonl, lm

# ----------------------------------------------------------------------------- game sets

# family -> (tw-make challenge, options given a difficulty level)
FAMILIES = {
    "coin": ("tw-coin_collector", lambda level: ["--level", str(level)]),
    "treasure": ("tw-treasure_hunter", lambda level: ["--level", str(level)]),
    "simple": (
        "tw-simple",
        lambda level: ["--rewards", ["dense", "balanced", "sparse"][level - 1], "--goal", "detailed"],
    ),
    "cooking": ("tw-cooking", lambda level: ["--recipe", str(level), "--take", str(level), "--go", "1", "--open"]),
}
# preset -> list of (family, level), cycled over the games of a set. Treasure hunter levels come in
# identical pairs (1=2, 3=4, ...: TextWorld rounds the quest length), so only odd levels are used.
# Coin collector is left out: too few distinct games (at most 4 at level 2, 12 at level 3) for a held-out
# set disjoint from training. Its goal spells out the path ("venture north. And then, retrieve the coin"),
# but so does treasure hunter's from level 3 ("First stop, travel north. And then, pick up the knife"):
# the skill both test is following the goal turn by turn without walking back and forth.
PRESETS = {
    "train": [("treasure", 1), ("treasure", 3), ("treasure", 5)],
    "eval": [("treasure", 1), ("treasure", 3), ("treasure", 5)],
    "ood": [("treasure", 7), ("treasure", 11), ("cooking", 1)],
}
SEED_RANGES = {"eval": (0, 500_000), "ood": (500_000, 1_000_000), "train": (1_000_000, 10**9)}
SPLIT_OFFSET = {"extract": 0, "deploy": 5_000}
HELD_OUT = ("eval", "ood")  # the sets no training game may solve
SOLVES_HELD_OUT = ".solves-held-out"  # beside a training game whose walkthrough wins the held-out games listed in it
SCAN = 4  # seeds a level may try per game it must give (+ 8), before it is called too poor in distinct games


def seed_range(preset, round_=0, split="extract"):
    """(first, end) of the seeds a set draws from, in order. Training seeds move with the round and split
    (5000 seeds each) and never reach the held-out ones."""
    if preset not in SEED_RANGES:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(SEED_RANGES)}")
    low, high = SEED_RANGES[preset]
    if preset == "train":
        low += 10_000 * round_ + SPLIT_OFFSET[split]
        high = low + 5_000
    return low, high


def walkthrough(path):
    """A game's winning command list, as TextWorld wrote it in the game's .json (no game is started).
    Two games with the same walkthrough are the same game to a player who remembers solutions, so
    the walkthrough is what makes a game distinct."""
    json_path = path[:-3] + ".json"
    try:
        with open(json_path, encoding="utf-8") as f:
            commands = json.load(f)["metadata"]["walkthrough"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{json_path}: no walkthrough in the game's .json ({type(e).__name__}: {e})") from e
    if not commands or not all(isinstance(c, str) for c in commands):
        raise ValueError(f"{json_path}: expected metadata.walkthrough to be a list of commands, got {commands!r}")
    return tuple(commands)


def start(path, infos):
    """textworld.start, without jericho's notice that it cannot track the score of a game it does not know:
    TextWorld tracks it itself (the infos asked for), so the notice is noise in every stage's output."""
    import textworld

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Game .* is not fully supported")
        return textworld.start(path, request_infos=infos)


def solved_by(walkthroughs, paths):
    """[(walkthrough, path)] for every walkthrough that wins the game at `path` when typed from the start:
    exactly what "a held-out game is solvable by a training game's walkthrough" means (one game can be
    won by another's longer or different walkthrough, not only by an identical one)."""
    import textworld

    found, walkthroughs = [], sorted(set(walkthroughs))
    for path in paths:
        env = start(path, textworld.EnvInfos(won=True))
        try:
            for commands in walkthroughs:
                state = env.reset()
                for command in commands:
                    state, _, done = env.step(command)
                    if done:
                        break
                if state.won:
                    found.append((commands, path))
        finally:
            env.close()
    return found


def make_set(games_dir, preset, n, round_=0, split="extract", jobs=None):
    """The n game paths of a set, made (or reused) under games_dir/preset; game i has level mix[i % len(mix)].

    A held-out set is the first distinct games of its seed range, level by level (a game whose
    walkthrough the set already has is skipped): it never repeats a game, the same n gives the same
    games, and a bigger n extends a smaller one. A training set skips every game whose walkthrough
    wins a game in games_dir/eval or games_dir/ood (and marks it, NAME.solves-held-out); a held-out set
    refuses to exist beside a training game whose walkthrough wins one of its games (made before the
    held-out set grew).
    """
    if preset == "train" and n > 5_000:
        raise ValueError("at most 5000 training games per split and round")
    mix, (low, high) = PRESETS[preset], seed_range(preset, round_, split)
    folder = os.path.join(games_dir, preset)
    want = [len(range(k, n, len(mix))) for k in range(len(mix))]  # games per (family, level)
    held_out = [] if preset in HELD_OUT else [p for s in HELD_OUT for p in list_games(f"{games_dir}/{s}", True)]
    chosen, tried, seen = [[] for _ in mix], [0] * len(mix), set()
    while True:
        batch = []  # one parallel tw-make batch: what every level still lacks
        for k, (family, level) in enumerate(mix):
            need = want[k] - len(chosen[k])
            if need and tried[k] + need > min(SCAN * want[k] + 8, high - low):
                why = (
                    "repeats of earlier games" if preset in HELD_OUT else "games whose walkthrough wins a held-out game"
                )
                raise ValueError(
                    f"{family}-l{level}: only {len(chosen[k])} of {want[k]} games found in seeds {low}.."
                    f"{low + tried[k] - 1} (the rest were {why}): too few distinct games at this level; take it"
                    f" out of PRESETS[{preset!r}] in oel/games.py, or ask for fewer games"
                )
            seeds = range(low + tried[k], low + tried[k] + need)
            batch += [(k, (f"{family}-l{level}-s{s}", family, level, s)) for s in seeds]
            tried[k] += need
        if not batch:
            break
        paths = make_games(folder, [spec for _, spec in batch], jobs)
        unmarked = [p for p in paths if not os.path.exists(p[:-3] + SOLVES_HELD_OUT)]
        for w, won in solved_by([walkthrough(p) for p in unmarked], held_out):
            for p in unmarked:  # marked, so it is never trained on nor replayed again
                if walkthrough(p) == w:
                    with open(p[:-3] + SOLVES_HELD_OUT, "a", encoding="utf-8") as f:
                        f.write(won + "\n")
        for (k, _), path in zip(batch, paths):
            w = walkthrough(path)
            if w not in seen and not os.path.exists(path[:-3] + SOLVES_HELD_OUT):
                chosen[k].append(path)
                if preset in HELD_OUT:  # training sets may repeat a game; held-out sets never
                    seen.add(w)
    paths = [chosen[i % len(mix)][i // len(mix)] for i in range(n)]
    if preset in HELD_OUT:
        check_against_training(games_dir, folder, paths)
    return paths


def check_against_training(games_dir, folder, paths):
    """Refuse held-out games that a training game's walkthrough wins. Training sets are checked against
    every held-out game when they are made, so only held-out games new since the last check (listed in
    folder/.checked) are replayed here, against every training game in the cache that is not marked
    as solving a held-out game (those are never trained on)."""
    stamp = os.path.join(folder, ".checked")
    done = set(jsonl.read_text(stamp, "check list").split()) if os.path.isfile(stamp) else set()
    new = [p for p in paths if os.path.basename(p) not in done]
    train = [p for p in list_games(f"{games_dir}/train", True) if not os.path.exists(p[:-3] + SOLVES_HELD_OUT)]
    trained = {walkthrough(p): p for p in train}
    clash = solved_by(trained, new) if new else []
    if clash:
        pairs = "; ".join(f"{trained[w]}'s walkthrough wins {p}" for w, p in clash[:5])
        raise ValueError(
            f"{len(clash)} held-out game(s) of {folder} can be won by a training game's walkthrough ({pairs}): "
            f"the training games in {games_dir}/train were made before this held-out set grew; remove them "
            "(and the runs trained on them) or ask for fewer held-out games"
        )
    if new:  # written whole, then renamed: a stamp that exists is a finished one
        with open(stamp + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(sorted(done | {os.path.basename(p) for p in new})) + "\n")
        os.replace(stamp + ".tmp", stamp)


def tw_make():
    """TextWorld's `tw-make`: the one installed beside the running python (a virtual environment's python
    called directly, not activated, has it there and not on PATH), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "tw-make")
    found = beside if os.access(beside, os.X_OK) else shutil.which("tw-make")
    if not found:
        raise cli.InputError(
            f"TextWorld's tw-make is neither beside {sys.executable} nor on PATH: pip install textworld"
        )
    return found


def make_game(folder, name, family, level, seed):
    """Make one game as folder/name.z8 (+ .json) unless it exists; built in a temp folder, then moved."""
    path = os.path.join(folder, name + ".z8")
    if os.path.isfile(path) and os.path.isfile(path[:-3] + ".json"):
        return path
    challenge, options = FAMILIES[family]
    with tempfile.TemporaryDirectory(dir=folder, prefix=".make-") as tmp:
        cmd = [
            tw_make(),
            challenge,
            *options(level),
            "--seed",
            str(seed),
            "--output",
            os.path.join(tmp, name + ".z8"),
            "--silent",
            "-f",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"tw-make failed for {name}: {' '.join(cmd)}\n{done.stderr[-2000:]}")
        for ext in (".ni", ".z8", ".json"):  # .json last: together with .z8 it marks a finished game
            if os.path.exists(os.path.join(tmp, name + ext)):
                shutil.move(os.path.join(tmp, name + ext), os.path.join(folder, name + ext))
    return path


def make_games(folder, specs, jobs=None):
    """Make (or reuse) every game of a set in parallel; returns the game paths in spec order."""
    os.makedirs(folder, exist_ok=True)
    with ThreadPoolExecutor(jobs or os.cpu_count()) as pool:  # each worker waits on its own tw-make process
        return list(pool.map(lambda s: make_game(folder, *s), specs))


def list_games(folder, missing_ok=False):
    """The finished games in a folder (both .z8 and .json present), sorted, with a clear error if none
    (or [] if `missing_ok`)."""
    if missing_ok and not os.path.isdir(folder):
        return []
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such game folder (--games takes a folder of finished TextWorld games)")
    games = sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.endswith(".z8") and os.path.isfile(os.path.join(folder, f[:-3] + ".json"))
    )
    if not games and not missing_ok:
        raise FileNotFoundError(f"{folder}: no finished games (expected NAME.z8 with NAME.json beside it)")
    return games


# ----------------------------------------------------------------------------- the turn prompt and reading a command

DESCRIPTION = "text adventure game"  # what the extractor is told it played
SYSTEM_PROMPT = (
    "You are playing a text adventure game. Each turn you read what happened and type the next "
    "command, a short verb phrase such as: go north, take key, open door, unlock door with key. "
    "Reply with one command and nothing else."
)
# One example exchange before the real turn: the small default model copies its form (a bare command).
EXAMPLE_TURN = (
    "Goal: Find the lamp in the attic.\n\n"
    "Game:\n-= Hallway =-\nYou are in a hallway. A ladder leads up.\n\n"
    "Commands you can use: examine ladder, go up, inventory, look\n\n"
    "Your command:"
)
EXAMPLE_ANSWER = "go up"
TURN_PROMPT = "Goal: {objective}\n\nGame:\n{log}\n\n{commands}Your command:"


def render_log(history, max_turns):
    """The running log: the last `max_turns` (command, reply) pairs, oldest dropped first."""
    shown = history[-max_turns:] if max_turns else history
    lines = ["(earlier turns not shown)"] if len(shown) < len(history) else []
    for command, reply in shown:
        lines.append(reply if command is None else f"> {command}\n{reply}")
    return "\n\n".join(lines)


def render_turn(objective, history, admissible=None, max_turns=8, example=True):
    """The chat messages of one turn, without knowledge (experience.insert_knowledge puts it in, as distill.py does
    for the teacher): a system message, one example exchange, then the goal, the log of the last `max_turns`
    commands and replies, and the admissible commands if given."""
    commands = f"Commands you can use: {', '.join(admissible)}\n\n" if admissible else ""
    user = TURN_PROMPT.format(
        objective=objective or "(not stated)", log=render_log(history, max_turns), commands=commands
    )
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    if example:
        messages += [{"role": "user", "content": EXAMPLE_TURN}, {"role": "assistant", "content": EXAMPLE_ANSWER}]
    messages.append({"role": "user", "content": user})
    return messages


SEPARATORS = re.compile(r"\s*(?:;|\n|,|\. | and then | then )\s*")


def parse_command(answer):
    """(command, status) from the model's final answer (after any </think>).

    The last `[...]` wins if there is one, else the first non-empty line. Only one command is ever
    sent: "open door then go east" (or "open door, go east") sends "open door" with status 'multi'
    (TextWorld would run both).
    status: 'ok', 'multi', or 'empty' (nothing usable; command is ''; choose_command tells 'no move' from it).
    """
    brackets = re.findall(r"\[([^\[\]]+)\]", answer)
    text = brackets[-1] if brackets else answer.strip()
    text = re.sub(r"^(?:your )?(?:next )?command\s*:\s*", "", text.strip(), flags=re.I)
    parts = [p for p in (re.sub(r"[^a-z0-9' -]", " ", p.lower()) for p in SEPARATORS.split(text)) if p.strip()]
    if not parts:
        return "", "empty"
    command = " ".join(parts[0].split())
    return command, ("multi" if len(parts) > 1 else "ok")


def closest_command(command, admissible):
    """The admissible command sharing the most words with `command` (ties: shorter, then first);
    None if no word is shared. Used only when the commands are listed in the prompt."""
    words = set(command.split())
    best, best_key = None, (0, 0)
    for candidate in admissible:
        shared = len(words & set(candidate.split()))
        key = (shared, -len(candidate.split()))
        if shared and key > best_key:
            best, best_key = candidate, key
    return best


def choose_command(response, admissible, match):
    """(answer, command sent, status, valid) for one response. Never raises."""
    _, answer = lm.split_thinking(response)
    typed, status = parse_command(answer)
    if status == "empty" and response.strip():  # a reply with words in it, none a command
        status = "no move"
    valid = typed in admissible
    command = typed
    if typed and not valid and match == "closest":
        command = closest_command(typed, admissible) or typed
        status = "closest" if command != typed else status
    return answer, command, status, valid


def describe(paths):
    """'N games, D distinct (family-lL: d/n, ...)': distinct = different walkthroughs."""
    levels = {}
    for path in paths:
        levels.setdefault(os.path.basename(path).split("-s")[0], []).append(walkthrough(path))
    per_level = ", ".join(f"{name}: {len(set(ws))}/{len(ws)}" for name, ws in levels.items())
    return f"{len(paths)} games, {len({walkthrough(p) for p in paths})} distinct ({per_level})"


# ----------------------------------------------------------------------------- one episode


def clean(text):
    """Game text without TextWorld's ASCII-art banner, the '>' prompt and the status bar."""
    lines = text.replace("\r", "").split("\n")
    lines = [
        line
        for line in lines
        if "$$" not in line
        and not re.fullmatch(r"[\s_|\\/]*[_|\\/][\s_|\\/]*", line)
        and "Would you like to RESTART" not in line
    ]
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[-1].lstrip().startswith(">"):  # the prompt line carries the status bar
        lines.pop()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in lines)).strip()


def check_story_file(path):
    """Refuse a file that is not a whole z-machine story: TextWorld's interpreter would end the whole
    process on it (\"Fatal error: Story file read error\") instead of raising."""
    with open(path, "rb") as f:
        data = f.read()
    version = data[0] if data else 0
    scale = {1: 2, 2: 2, 3: 2, 4: 4, 5: 4, 6: 8, 7: 8, 8: 8}.get(version)
    declared = int.from_bytes(data[0x1A:0x1C], "big") * scale if scale and len(data) >= 64 else 0
    if not scale or len(data) < 64 or not 64 <= declared <= len(data):
        raise ValueError(
            f"{path}: not a playable TextWorld game (not a complete z-machine story file); remake it with "
            "`python -m oel.describe_games`"
        )


# What the z-machine interpreter prints when the story file is damaged past its header; the game then
# answers every command with it, so it is an error, never a reply.
INTERPRETER_ERRORS = ("Emulator halted", "This is normally fatal", "Fatal error")


def interpreter_check(path, text):
    """Raise, naming the game, if `text` (the game's raw output) is an interpreter error or empty."""
    if not text.strip() or any(e in text for e in INTERPRETER_ERRORS):
        printed = repr(text.strip()[:200]) if text.strip() else "nothing"
        raise ValueError(
            f"{path}: the z-machine interpreter failed on this game (it printed {printed}); "
            "the file is damaged: delete it and remake it with `python -m oel.describe_games`"
        )


class Episode:
    """One play of one game file; `step` never raises on a strange command, only on a damaged game."""

    def __init__(self, path):
        import textworld

        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: game file not found")
        check_story_file(path)
        infos = textworld.EnvInfos(
            admissible_commands=True,
            policy_commands=True,
            objective=True,
            max_score=True,
            won=True,
            lost=True,
            score=True,
            feedback=True,
        )
        try:
            self.env = start(path, infos)
            state = self.env.reset()
        except Exception as e:  # a corrupt file fails inside TextWorld with a message naming nothing
            raise ValueError(f"{path}: not a playable TextWorld game ({type(e).__name__}: {e})") from e
        interpreter_check(path, state.feedback or "")
        self.path, self.game, self.objective = path, path, clean(state.objective or "")
        self.intro, self.walkthrough = clean(state.feedback), list(state.policy_commands or [])
        if self.objective and self.objective in self.intro:  # the intro repeats the goal: keep it once
            self.intro = self.intro.replace(self.objective, "", 1).strip()
        self.admissible, self.max_score = list(state.admissible_commands or []), state.max_score or 1
        self.score, self.won, self.lost, self.done = 0, False, False, False
        self.refusal, self.ended = None, None  # TextWorld answers every command; how the game ended
        self.history = [(None, self.intro)]  # (command, game reply); the first reply is the intro

    def step(self, command):
        state, score, done = self.env.step(command)
        interpreter_check(self.path, state.feedback or "(no reply)")
        reply = clean(state.feedback) or "(no reply)"
        self.history.append((command, reply))
        self.score, self.won, self.lost, self.done = score, bool(state.won), bool(state.lost), bool(done)
        self.ended = "won" if self.won else "lost" if self.done else None
        self.admissible = list(state.admissible_commands or [])
        return reply

    def turn_messages(self, history=8, list_commands=True, example=True):
        """This turn's chat messages, without knowledge (the caller inserts it, as distill.py does)."""
        return render_turn(self.objective, self.history, self.admissible if list_commands else None, history, example)

    def choose(self, response, match="closest"):
        """(answer, command sent, status, valid): see choose_command."""
        return choose_command(response, self.admissible, match)

    def close(self):
        self.env.close()


def check_game(path):
    """Refuse a game that is not whole before any model loads: a complete story file whose own
    walkthrough wins it (a damaged body shows up here as an interpreter error)."""
    episode = Episode(path)
    try:
        for command in episode.walkthrough:
            if not episode.done:
                episode.step(command)
        if not episode.won:
            raise ValueError(f"{path}: its own walkthrough {episode.walkthrough} does not win it; remake the game")
    finally:
        episode.close()


def game_paths(folder, games_dir, preset, n, round_=0, split="extract"):
    """Every finished game in `folder`, or the preset's set made (or reused) under games_dir; each
    checked, so that a broken game fails before a model is loaded."""
    try:
        if folder:
            paths = list_games(folder)
        else:
            paths = make_set(games_dir, preset, n, round_, split)
        for path in paths:
            check_game(path)
    except (OSError, ValueError) as e:
        raise cli.InputError(str(e))
    return paths
