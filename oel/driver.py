"""What loop.sh asks of Python, so that each run-folder rule is written once (in oel/runfolder.py) and loop.sh
stays a list of stages:

    python -m oel.driver check RUN --setting S --new-settings 0|1 NAME=VALUE:FEEDS...   # refuse, write nothing
    python -m oel.driver start RUN --setting S --new-settings 0|1 --driver PID NAME=VALUE:FEEDS...
    python -m oel.driver stage NAME OUTPUT COMMAND...   # one stage: skipped if OUTPUT exists, stopped with loop.sh

loop.sh opens RUN/.lock on file descriptor 9 and `start` takes the lock (flock) there: a flock belongs to the open
file, not to the process, so it stays held by loop.sh's descriptor after `start` exits, and by every stage, which
inherits it; a stage orphaned by a killed driver keeps the folder locked until it exits. loop.sh exports the
lock's path in OEL_RUN_LOCK.

No torch here: loop.sh's tests run stand-in stages (tests/fake_stage.py) on this module alone, in a blink.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

from oel import runfolder
from oel.cli import InputError, run_main
from oel.runfolder import LOCK_FD

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def check(run, knobs, new_settings):
    """loop.sh's `check`, before it writes anything: refuse a RUN that is no folder, a lock another writer holds
    (tried and let go at once, on the lock file only if there is one) and changed knobs without NEW_SETTINGS=1.
    A refused start leaves nothing behind."""
    runfolder.check_run_path(run)
    lock = os.path.join(run, ".lock")
    if os.path.isfile(lock):
        fd = os.open(lock, os.O_RDONLY)
        try:
            runfolder.try_lock(fd, run)
        finally:
            os.close(fd)
    runfolder.refuse_changed(run, knobs, new_settings)


def start(run, setting, knobs, new_settings, driver):
    """loop.sh's `start`, once it opened RUN/.lock on LOCK_FD: take the lock there, so that the driver holds it
    for the whole run and its stages inherit it; check again under it (a writer may have come since `check`);
    then the holder line, the run's header, NEW_SETTINGS=1's set-aside, and RUN/settings.json."""
    if not is_open(LOCK_FD):
        raise InputError(f"start: descriptor {LOCK_FD} is not open; loop.sh opens {run}/.lock on it first")
    runfolder.try_lock(LOCK_FD, run)
    changed = runfolder.refuse_changed(run, knobs, new_settings)
    now = runfolder.started()
    values = lambda free: " ".join(f"{k}={v}" for k, (v, feeds) in sorted(knobs.items()) if (feeds == "none") == free)
    print(f"== loop.sh {now} | SETTING={setting} RUN={run} {values(True)} {values(False)}", flush=True)
    runfolder.write_holder(LOCK_FD, run, f"pid {driver} | started {now} | loop.sh SETTING={setting} RUN={run}\n")
    if changed:
        print("".join(f"-- changed: {change}\n" for change in changed), end="")
        dest = runfolder.set_aside(run, runfolder.stale_outputs(run, changed))
        print(f"-- NEW_SETTINGS=1: moved what the changed knobs affect to {dest}; it is redone")
    if not os.path.isfile(os.path.join(run, "settings.json")):
        print(f"-- settings written to {os.path.join(run, 'settings.json')}")
    runfolder.write_settings(run, setting, knobs)


def is_open(fd):
    try:
        return os.fstat(fd) is not None
    except OSError:
        return False


def stop_group(stage, grace=10):
    """SIGTERM to the stage's process group (the stage and its own children), SIGKILL to what is left after
    `grace` seconds."""
    try:
        os.killpg(stage.pid, signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline:
            stage.poll()  # reaped, the stage stops counting as a member of its group
            os.killpg(stage.pid, 0)  # ProcessLookupError: the whole group is gone
            time.sleep(0.1)
        os.killpg(stage.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    stage.wait()


class Stopped(Exception):
    """The driver stopped: a signal arrived while the stage ran (args[0]: its number)."""


def run_stage(name, out, command):
    """loop.sh's `stage NAME OUTPUT COMMAND...`: run COMMAND unless OUTPUT exists, log it and its wall time;
    returns its exit status. The stage runs in its own process group and session, out of reach of the terminal's
    signals, so that it stops when the driver stops it: SIGTERM to this process (loop.sh's trap sends it), or
    SIGINT or SIGHUP, end the stage's group. A signal ignored when this process starts stays ignored, the stage's
    too: nohup's SIGHUP, and bash's SIGINT for a background job (Ctrl-C reaches loop.sh, which sends SIGTERM)."""
    if out and runfolder.kept(out):  # the stage would skip itself; not even started
        print(f"-- {name}: {out} exists, skipped", flush=True)
        return 0
    print(f"-- {name}: {' '.join(command)}", flush=True)
    t0, stage, asked = time.time(), None, []

    def stop(signum, _frame):
        if stage is None:  # still starting: stopped as soon as it runs
            return asked.append(signum)
        for sig in STOP_SIGNALS:  # one stop, however many signals come (Ctrl-C: the group's, and loop.sh's)
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)  # out of stage.wait(), which must not be re-entered from here

    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, stop)
    lock = [LOCK_FD] if is_open(LOCK_FD) else []
    try:
        stage = subprocess.Popen(command, start_new_session=True, pass_fds=lock)
    except OSError as e:
        print(f"-- {name}: cannot run {command[0]}: {e.strerror}", flush=True)
        return 127
    try:
        for fd in lock:  # the stage holds the run's lock now, not this process: a refused writer names the stage
            os.close(fd)
        if asked:
            stop(asked[0], None)
        status = stage.wait()
    except Stopped as e:
        print(f"-- {name}: stopping the running stage (pid {stage.pid})", flush=True)
        stop_group(stage)
        return 128 + e.args[0]
    status = 128 - status if status < 0 else status  # killed by signal N: 128 + N, as a shell says it
    if status:
        print(f"-- {name}: failed (exit status {status})", flush=True)
        return status
    print(f"-- {name}: done in {time.time() - t0:.0f} s", flush=True)
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m oel.runfolder", description="loop.sh's run folder rules")
    p.add_argument("command", choices=["check", "start"], help="check: refuse, writing nothing; start: take the lock")
    p.add_argument("run", help="the run folder, RUN")
    p.add_argument("knobs", nargs="+", help="NAME=VALUE:FEEDS, each knob of loop.sh's table")
    p.add_argument("--setting", required=True, help="SETTING, recorded with the knobs")
    p.add_argument("--new-settings", choices=["0", "1"], default="0", help="1: go on with changed knobs")
    p.add_argument("--driver", type=int, default=os.getppid(), help="start: loop.sh's pid, the lock's holder")
    return p.parse_args(argv)


def main(argv):
    if argv[:1] == ["stage"] and len(argv) >= 4:
        sys.exit(run_stage(argv[1], argv[2], argv[3:]))
    args = parse_args(argv)
    knobs, new_settings = runfolder.parse_knobs(args.knobs), args.new_settings == "1"
    if args.command == "check":
        check(args.run, knobs, new_settings)
    else:
        start(args.run, args.setting, knobs, new_settings, args.driver)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
