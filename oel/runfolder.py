"""The run folder: which run an output belongs to, one writer per folder, one set of settings per folder, and
outputs that remember the arguments that made them, each rule written once, here. Every stage's main starts
with `claim_outputs` and ends its file with `cli.run_main`; loop.sh reaches the rest through oel/driver.py.

loop.sh holds RUN/.lock (flock, on file descriptor 9, for the whole run: oel/driver.py) and exports its path in
OEL_RUN_LOCK; a stage run by hand takes the same lock itself. The lock file holds one line naming its holder (pid,
start time, command) for the message a refused writer prints.

No torch here: loop.sh's tests run stand-in stages (tests/fake_stage.py) on this module alone, in a blink.
"""

import atexit
import glob
import json
import os
import re
import sys
import tempfile
import time

from oel.cli import InputError

LOCK_ENV = "OEL_RUN_LOCK"  # lock files held by an ancestor (loop.sh), os.pathsep separated
LOCK_FD = 9  # the descriptor loop.sh holds RUN/.lock on, for the whole run
IGNORED_ARGS = (  # how a stage runs or where it writes, not what its output holds
    *("force", "device", "quiet", "print_every", "save_every", "metrics", "pad_id", "games_dir"),
    *("micro_batch_tokens", "chunk", "gradient_checkpointing", "out", "out_dir", "sets", "report"),
    *("check", "check_trajectories"),
)
FEEDS = ("all", "collect", "extract", "distill", "eval", "none")  # the knob table's column, stages in run order
ROUND_1_OUTPUTS = {  # what each stage writes in round 1 (later rounds follow the policy and are redone whole)
    "collect": ("extraction_trajectories.jsonl*", "deployment_trajectories.jsonl*"),
    "extract": ("knowledge.jsonl*",),
    "distill": ("model", "model_steps", "model.metrics.jsonl"),
}
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


def nearest_existing(path):
    """The nearest part of `path` that exists: what a makedirs starts from."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_run_path(run):
    """loop.sh's RUN is a folder, or can be made one: refused in one line, not by mkdir's own message."""
    if os.path.exists(run) and not os.path.isdir(run):
        raise InputError(f"RUN={run} is a file; expected a run folder")
    existing = nearest_existing(run)
    if not os.path.isdir(existing):
        raise InputError(f"RUN={run}: {existing} is a file; expected a folder to make the run folder in")
    if not writable(existing):
        raise InputError(f"RUN={run}: cannot write in {existing} (permission denied or a read-only filesystem)")


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
    others = lambda: [p for p in lock_holders(path) if p != os.getpid()] or "?"  # not the refused writer itself
    if not match:
        return f"held by pids {others()}"
    try:
        os.kill(int(match.group(1)), 0)
        return record
    except ProcessLookupError:
        return f"{record}; that process is gone, but a stage it started still holds the lock (pids {others()})"
    except PermissionError:  # alive, another user's
        return record


def try_lock(fd, folder):
    """Lock `folder`'s lock file, open on `fd`, without waiting; held by another writer: an InputError naming it."""
    import fcntl  # POSIX only: imported here so that importing this module (and oel.cli) works anywhere

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the OS drops it when the last holder of fd exits
    except BlockingIOError:
        record = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        path = os.path.join(os.path.realpath(folder), ".lock")
        raise InputError(
            f"{folder} is in use by another writer ({describe_holder(record, path)}); wait until it ends or stop "
            "it, or write to another run folder"
        )


def write_holder(fd, folder, record):
    """Name this process as the holder of the lock it took on `fd`. A line left there names a process that died
    without clearing it (the kernel released its lock then): taken over, and said so."""
    previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if previous:
        print(f"-- took over the lock of {folder} left by a process that is gone ({previous})", flush=True)
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)


def started():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def hold_run_lock(folder, command=None):
    """Take `folder`'s lock for the life of this process; return at once if an ancestor (loop.sh) holds it.
    A busy lock is an InputError naming its holder; a lock left by a dead process is taken over, and said so.
    The folders and the lock file made here go again at exit if nothing else was written in them: a stage that
    refuses its input leaves nothing behind."""
    made, up = [], os.path.abspath(folder)
    while not os.path.exists(up):
        made.append(up)
        up = os.path.dirname(up)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.path.realpath(folder), ".lock")
    if path in os.environ.get(LOCK_ENV, "").split(os.pathsep) or path in _held_locks:
        return
    new = not os.path.exists(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try_lock(fd, folder)
    except InputError:
        os.close(fd)
        raise
    atexit.register(remove_if_unused, path if new else None, made)  # runs after the holder line is cleared
    write_holder(fd, folder, f"pid {os.getpid()} | started {started()} | {command or ' '.join(sys.argv)}\n")
    _held_locks[path] = fd
    # children of this process (a test running a stage) write under this lock, like loop.sh's stages
    os.environ[LOCK_ENV] = os.pathsep.join(filter(None, [os.environ.get(LOCK_ENV), path]))
    atexit.register(os.ftruncate, fd, 0)  # a clean exit leaves no holder line behind


def remove_if_unused(lock, made):
    """At exit: the lock file this process created, if its folder holds nothing else, then the folders it made,
    deepest first, if empty; what was there before, or was written since, stays."""
    if lock and os.listdir(os.path.dirname(lock)) == [".lock"]:
        os.remove(lock)
    for folder in made:
        try:
            os.rmdir(folder)
        except OSError:  # not empty: the run wrote something
            break


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
        existing = nearest_existing(place)
        if not os.path.isdir(existing):
            raise InputError(f"{out}: {existing} is a file, not a folder; expected a folder to write {kind} in")
        if not writable(existing):
            raise InputError(f"{out}: cannot write in {existing} (permission denied or a read-only filesystem)")


def kept(out, force=False):
    """The resume rule, for loop.sh's runner and every stage alike: an output that exists is whole (each is
    written to a temporary name and renamed) and is kept, unless --force."""
    return os.path.exists(out) and not force


def claim_outputs(outputs, args, folders=False, stage="stage"):
    """The first line of a stage's main: check that every output can be written (`folders`: they are model
    folders), take the run folder's lock, and refuse to reuse (skip) an existing output that other arguments
    made. Returns the outputs still to make: an output that exists is kept, and said (the one place where a stage
    skips finished work, so that rerunning a command resumes it), unless --force. Each output's arguments are
    recorded beside it once it is written."""
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
    todo = [out for out in outputs if not kept(out, force)]
    for out in outputs:
        if out not in todo:
            print(f"{stage} | {out} exists, skipped (--force redoes it)", flush=True)
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
    return todo


# ----------------------------------------------------------------------------- one set of settings (loop.sh's knobs)


def parse_knobs(items):
    """loop.sh's knobs, NAME=VALUE:FEEDS each (FEEDS: the table's column, the first stage the value feeds), as
    {name: (value, feeds)}. A value may hold ':' and '=', a name and a stage never do."""
    knobs = {}
    for item in items:
        name, _, rest = item.partition("=")
        value, _, feeds = rest.rpartition(":")
        if not name or feeds not in FEEDS:
            raise InputError(f"knob {item!r}: expected NAME=VALUE:FEEDS, FEEDS one of {', '.join(FEEDS)}")
        knobs[name] = (value, feeds)
    return knobs


def changed_settings(run, knobs):
    """{"NAME: recorded -> now (redoes STAGE)": feeds} for the knobs whose value differs from RUN/settings.json's.
    A knob that feeds none (ROUNDS: more rounds continue the run) changes freely; one the file lacks is newer."""
    path = os.path.join(run, "settings.json")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        try:
            recorded = json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not JSON ({e}); it records the run's knobs: restore it, or use a new RUN")
    return {
        f"{k}: {recorded[k]} -> {v} (redoes {'everything' if feeds == 'all' else feeds})": feeds
        for k, (v, feeds) in sorted(knobs.items())
        if feeds != "none" and recorded.get(k) not in (None, "") and str(recorded[k]) != v
    }


def refuse_changed(run, knobs, new_settings):
    """The changed knobs, when NEW_SETTINGS=1 lets the run go on with them; else an InputError listing them."""
    changed = changed_settings(run, knobs)
    if changed and not new_settings:
        listed = "".join(f"\n  {change}" for change in changed)
        raise InputError(
            f"{run} was made with other settings ({os.path.join(run, 'settings.json')}):{listed}\nUse a new run "
            "folder (RUN=runs/other), or go on here with the new values: NEW_SETTINGS=1 with the same command "
            f"moves the affected outputs to {os.path.join(run, 'replaced')}/ and redoes them."
        )
    return changed


def stale_outputs(run, changed):
    """The outputs that the changed knobs make stale: from the first stage they feed on, in round 1; a new policy
    changes every later round whole; the evaluations follow the models and the evaluation knobs; the report."""
    feeds = set(changed.values())
    first = next((stage for stage in FEEDS[:4] if stage in feeds), None)  # all, collect, extract or distill
    stale = []
    for name in sorted(os.listdir(run)):
        match, folder = re.fullmatch(r"round_(\d+)", name), os.path.join(run, name)
        if not match or not os.path.isdir(folder):
            continue
        r = int(match.group(1))
        patterns = []
        if first == "all" or (first and r >= 2):
            patterns = ["*"]
        elif "eval" in feeds or (first and r > 0):
            patterns = ["eval_*"]
        if r == 1 and first and first != "all":
            patterns += [p for stage in FEEDS[FEEDS.index(first) : 4] for p in ROUND_1_OUTPUTS[stage]]
        stale += [os.path.join(folder, f) for p in patterns for f in sorted(glob.glob(p, root_dir=folder))]
    others = [os.path.join(run, f) for f in ("report.md", "report.png", "settings.json")]
    return stale + [f for f in others if os.path.exists(f)]


def set_aside(run, paths):
    """Move `paths` to RUN/replaced/TIME/ (nothing is deleted); returns that folder."""
    dest = base = os.path.join(run, "replaced", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    for n in range(2, 1000):  # two set-asides in one second get two folders
        if not os.path.exists(dest):
            break
        dest = f"{base}-{n}"
    for path in paths:
        target = os.path.join(dest, os.path.relpath(path, run))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(path, target)
    return dest


def write_settings(run, setting, knobs):
    """RUN/settings.json: the setting, then every knob, the ones that change freely (ROUNDS) last."""
    settings = {"SETTING": setting}
    settings |= {k: v for k, (v, feeds) in sorted(knobs.items()) if feeds != "none"}
    settings |= {k: v for k, (v, feeds) in sorted(knobs.items()) if feeds == "none"}
    path = os.path.join(run, "settings.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)
