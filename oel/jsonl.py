"""JSON Lines, the files the stages hand each other: read with errors that name the file and the line, tell
one stage's file from another's by its keys, and write atomically (a temp file, then rename: a file that exists
is whole)."""

import json
import os
import tempfile

from oel.cli import InputError


def read_jsonl(path, required=()):
    """Read a JSONL file; every line must be a JSON object holding the `required` keys."""
    return [record for _, record in read_jsonl_lines(path, required)]


def read_jsonl_lines(path, required=()):
    """[(line number, record)] of a JSONL file, for errors that name the line."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder; expected a JSON Lines file")
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    records = []
    with open(path, "rb") as f:
        if b"\0" in f.read(8192):  # a binary file (weights, an archive) has NUL bytes early: never read it whole
            raise InputError(f"{path}: a binary file, not text; expected JSON Lines")
        f.seek(0)
        for lineno, raw in enumerate(f, 1):
            try:  # a binary file (a model's weights, an archive) is named as such, not a UnicodeDecodeError
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path}:{lineno}: not UTF-8 text (a binary file?); expected JSON Lines")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one JSON object per line")
            if not isinstance(record, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in required if k not in record]
            if missing:
                raise InputError(f"{path}:{lineno}: record lacks key(s) {missing}; is this the right file?")
            records.append((lineno, record))
    return records


# what each stage writes, told apart by its keys, so that one stage's file given for another's is named
KINDS = {
    "trajectories": (("turns",), "collect.py trajectories (records with `turns`)"),
    "knowledge": (("knowledge_id", "knowledge", "in_pool"), "an extract.py knowledge pool (records with `in_pool`)"),
    "evaluation": ((), "an evaluate.py output (eval_*.jsonl: records with `kind`; held-out games are not trained on)"),
    None: ((), "a record of no known kind"),
}


def record_kind(record):
    if "kind" in record or "eval_set" in record:
        return "evaluation"
    if "turns" in record:  # collect's records carry knowledge_id (None) too
        return "trajectories"
    return "knowledge" if "in_pool" in record or "items" in record else None


def read_records(path, expected):
    """[(line number, record)] of a JSONL file whose every record is of the `expected` kind of KINDS and holds
    its keys; a file of another stage is named as such (a knowledge pool given as trajectories...)."""
    required, what = KINDS[expected]
    records = read_jsonl_lines(path)
    for n, r in records:
        if record_kind(r) != expected:
            raise InputError(f"{path}:{n}: this is {KINDS[record_kind(r)][1]}; expected {what}")
        missing = [k for k in required if k not in r]
        if missing:
            raise InputError(f"{path}:{n}: record lacks key(s) {missing}; expected {what}")
    return records


def write_jsonl(path, records):
    """Write records atomically: a temp file in the same folder, then rename (a file that exists is whole)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def append_jsonl(path, record):
    """Append one record (metrics logs); a crash can at worst lose the last line, never earlier ones."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_text(path, what="file"):
    """Read a whole text file with a clear error if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read {what} ({e})")
