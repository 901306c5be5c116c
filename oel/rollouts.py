"""collect.py's trajectories as the later stages read them back: each record checked for its kind and shape
before a model loads (extract reads the turns, distill the turn prompts), and the one game family of a file.
Each error names the file, the line and what was expected.
"""

from oel import cli, jsonl

TURN_KEYS = ("turn", "response", "command", "reply")  # what the extractor reads of each turn
HELD_OUT = ("id", "ood")  # sets whose games measure the policy: never extracted from, never trained on


def check_training_sets(records, path):
    """Refuse trajectories of a held-out set (each record names the set it came from, collect.py --set): what
    extract and distill learn from must never be what evaluate measures."""
    for lineno, r in records:
        if r.get("set") in HELD_OUT:
            raise cli.InputError(
                f"{path}:{lineno}: trajectories of the held-out set {r['set']!r} (collect.py --set {r['set']}); "
                "extract and distill learn only from training games: collect them with --set extract or --set deploy"
            )


def family_of(records, path, kind):
    """The one game family of a file's records (`family`; files from before it was recorded: TextWorld)."""
    families = {r.get("family") or "textworld" for _, r in records}
    if len(families) > 1:
        raise cli.InputError(f"{path}: {kind} of several game families {sorted(families)}; expected one")
    return families.pop() if families else "textworld"


def load_trajectories(path):
    """collect.py's trajectories, each checked for its kind (a knowledge file or an evaluate.py output is
    not one) and its shape, before any model loads."""
    numbered = jsonl.read_records(path, "trajectories")  # a knowledge pool or an evaluation is named as such
    expected = "expected collect.py trajectories (RUN/round_R/extraction_trajectories.jsonl), one episode per line"
    for lineno, r in numbered:
        where = f"{path}:{lineno}"
        if "feedback" not in r:
            raise cli.InputError(f"{where}: record lacks key(s) ['feedback']; {expected}")
        turns_ok = isinstance(r["turns"], list) and all(
            isinstance(t, dict) and all(k in t for k in TURN_KEYS) for t in r["turns"]
        )
        if not turns_ok or not isinstance(r["feedback"], str):
            raise cli.InputError(
                f"{where}: expected 'turns' as a list of turns with keys {list(TURN_KEYS)} and 'feedback' as text"
            )
    if not numbered:
        raise cli.InputError(f"{path}: no trajectories ({expected})")
    check_training_sets(numbered, path)
    family_of(numbered, path, "trajectories")
    return [r for _, r in numbered]


def load_turn_prompts(path, training=True):
    """Every turn prompt (chat messages) of every trajectory: ([(where it came from, messages)], game family).
    training=False: prompts only measured on (bench/transfer.py's held-out prompts), so a held-out set is let in."""
    prompts, records = [], jsonl.read_records(path, "trajectories")
    if training:
        check_training_sets(records, path)
    for n, r in records:
        if not isinstance(r["turns"], list):
            raise cli.InputError(f"{path}:{n}: `turns` is not a list of turns")
        for t in r["turns"]:
            messages = t.get("messages") if isinstance(t, dict) else None
            ok = isinstance(messages, list) and messages
            ok = ok and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages)
            if not ok:
                raise cli.InputError(f"{path}:{n}: a turn without `messages` (a list of {{role, content}})")
            prompts.append((f"{r.get('game')}#{r.get('episode')}:{t.get('turn')}", messages))
    if not prompts:
        raise cli.InputError(f"{path}: no turn prompts (expected trajectories from collect.py with turns)")
    return prompts, family_of(records, path, "trajectories")
