"""The run folder: which run an output belongs to, one writer per folder, and outputs that remember the
arguments that made them. Every stage's main starts with `claim_outputs` and ends its file with `cli.run_main`.

loop.sh holds the run folder's lock (flock on RUN/.lock, file descriptor 9) for the whole run and exports its
path in OEL_RUN_LOCK; its stages inherit the descriptor, so a stage orphaned by a killed driver keeps the
folder locked until it exits. A stage run by hand takes the same lock itself. The lock file holds one line
naming its holder (pid, start time, command) for the message a refused writer prints.

No torch here: loop.sh's tests run stand-in stages (tests/fake_stage.py) on this module alone, in a blink.
"""

import atexit
import json
import os
import re
import sys
import tempfile
import time

from oel.cli import InputError

LOCK_ENV = "OEL_RUN_LOCK"  # lock files held by an ancestor (loop.sh), os.pathsep separated
IGNORED_ARGS = (  # how a stage runs or where it writes, not what its output holds
    *("force", "device", "quiet", "print_every", "save_every", "metrics", "pad_id", "games_dir"),
    *("micro_batch_tokens", "chunk", "gradient_checkpointing", "out", "out_dir", "sets", "report"),
)
_held_locks = {}  # lock path -> open descriptor, held until this process exits


# ----------------------------------------------------------------------------- where a run is


def run_folder(out):
    """The folder a run's lock lives in: the one holding the output's round_R folder, else the output's own folder."""
    own = folder = os.path.dirname(os.path.abspath(out))
    while folder != os.path.dirname(folder):  # up to the filesystem root
        if re.fullmatch(r"round_\d+", os.path.basename(folder)):
            return os.path.dirname(folder)
        folder = os.path.dirname(folder)
    return own


def run_name(out):
    """The run an output belongs to, as records name it: runs/demo/round_1/x -> demo; with no round folder, the
    output's own folder."""
    return os.path.basename(run_folder(out))


# ----------------------------------------------------------------------------- one writer


def lock_holders(path):
    """Pids of the processes that have the lock file open (Linux /proc; empty elsewhere)."""

    def target(link):
        try:
            return os.readlink(link)
        except OSError:  # closed since it was listed (a busy process opens and closes files all the time)
            return None

    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or not ours to look at
            continue
        if any(target(f"/proc/{pid}/fd/{fd}") == path for fd in fds):
            pids.append(int(pid))
    return pids


def describe_holder(record, path):
    """A lock file's holder line, and whether that process still lives (else: which stage holds the lock)."""
    match = re.match(r"pid (\d+)", record)
    if not match:
        return f"held by pids {lock_holders(path) or '?'}"
    try:
        os.kill(int(match.group(1)), 0)
        return record
    except ProcessLookupError:
        others = [p for p in lock_holders(path) if p != os.getpid()]
        return f"{record}; that process is gone, but a stage it started still holds the lock (pids {others or '?'})"
    except PermissionError:  # alive, another user's
        return record


def hold_run_lock(folder, command=None):
    """Take `folder`'s lock for the life of this process; return at once if an ancestor (loop.sh) holds it.
    A busy lock is an InputError naming its holder; a lock left by a dead process is taken over, and said so."""
    import fcntl  # POSIX only: imported here so that importing this module (and oel.cli) works anywhere

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.path.realpath(folder), ".lock")
    if path in os.environ.get(LOCK_ENV, "").split(os.pathsep) or path in _held_locks:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the OS drops it when the last holder of fd exits
    except BlockingIOError:
        record = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.close(fd)
        raise InputError(
            f"{folder} is in use by another writer ({describe_holder(record, path)}); wait until it ends or stop "
            "it, or write to another run folder"
        )
    previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if previous:  # its holder died without clearing it: the kernel already released the lock
        print(f"{folder}: took over the lock left by a process that is gone ({previous})", flush=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = f"pid {os.getpid()} | started {started} | {command or ' '.join(sys.argv)}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    _held_locks[path] = fd
    # children of this process (a test running a stage) write under this lock, like loop.sh's stages
    os.environ[LOCK_ENV] = os.pathsep.join(filter(None, [os.environ.get(LOCK_ENV), path]))
    atexit.register(os.ftruncate, fd, 0)  # a clean exit leaves no holder line behind


# ----------------------------------------------------------------------------- outputs remember their arguments


def args_path(out):
    """Where an output's arguments are recorded: OUT/args.json for a folder (a model), else OUT.args.json."""
    return os.path.join(out, "args.json") if os.path.isdir(out) else out + ".args.json"


def changed_args(recorded, args):
    """[(name, recorded, now)] for the arguments both know that differ; paths compare by where they point."""
    same = lambda a, b: (
        a == b
        or (
            isinstance(a, str)
            and isinstance(b, str)
            and os.path.exists(a)
            and os.path.realpath(a) == os.path.realpath(b)
        )
    )
    return [
        (k, recorded[k], v)
        for k, v in sorted(args.items())
        if k in recorded and k not in IGNORED_ARGS and not same(recorded[k], v)
    ]


def writable(folder):
    """Whether a file can be created in `folder` (tried, not read off the permission bits: root ignores those,
    a read-only filesystem does not)."""
    try:
        fd, path = tempfile.mkstemp(dir=folder, prefix=".oel-write-check-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(path)
    return True


def check_output(out, folder=False):
    """Refuse an output that could not be written, before anything is: a file where the output folder (a model)
    should go or a folder where the output file should, a file where a folder on its path should be, a folder
    this process cannot write in (the run folder's too: its lock goes there)."""
    kind = "a model folder" if folder else "a file"
    if os.path.isdir(out) != folder and os.path.exists(out):
        raise InputError(f"{out}: exists and is {'a file' if folder else 'a folder'}; expected {kind} to write")
    for place in dict.fromkeys([os.path.dirname(os.path.abspath(out)), run_folder(out)]):
        existing = place
        while not os.path.exists(existing):  # the nearest part of the path that exists: what a makedirs starts from
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise InputError(f"{out}: {existing} is a file, not a folder; expected a folder to write {kind} in")
        if not writable(existing):
            raise InputError(f"{out}: cannot write in {existing} (permission denied or a read-only filesystem)")


def claim_outputs(outputs, args, folders=False):
    """The first line of a stage's main: check that every output can be written (`folders`: they are model
    folders), take the run folder's lock, and refuse to reuse (skip) an existing output that other arguments
    made. Each output's arguments are recorded beside it once it is written."""
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    for out in outputs:
        check_output(out, folders)
    hold_run_lock(run_folder(outputs[0]))
    now = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    force = getattr(args, "force", False)
    for out in outputs:
        if os.path.exists(out) and os.path.isfile(args_path(out)) and not force:
            with open(args_path(out)) as f:
                changed = changed_args(json.load(f), now)
            if changed:
                listed = "; ".join(f"--{k.replace('_', '-')} {old!r} -> {new!r}" for k, old, new in changed)
                redo = "use --force to redo it" if hasattr(args, "force") else "delete it to redo it"
                raise InputError(
                    f"{out} exists and was made with other arguments ({listed}); {redo} with the new "
                    "arguments, or write to another output"
                )
    stat = lambda out: (lambda s: (s.st_ino, s.st_mtime_ns, s.st_size))(os.stat(out)) if os.path.isfile(out) else None
    before = {out: stat(out) for out in outputs}

    def record():  # at exit: an output this process wrote (replaced or changed since the start) gets its arguments
        for out in outputs:
            if stat(out) not in (None, before[out]):
                tmp = args_path(out) + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({k: v for k, v in now.items() if k not in IGNORED_ARGS}, f, indent=1)
                os.replace(tmp, args_path(out))

    atexit.register(record)
