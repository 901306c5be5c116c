"""loop.sh's knobs, checked before the first stage runs and before RUN/settings.json is written, by the stages
themselves: each stage is asked, with `--check` and the flags loop.sh will give it, whether its own parser and
checks take them (the stages run side by side, each in its own process; none loads a model), the model names
resolve, and the knobs that only loop.sh reads (ROUNDS and the 0/1 switches) get the shared argument types. A
bad value ends the loop at once with one line; nothing is written, so the corrected rerun is not refused.

    python -m oel.preflight --run RUN --rounds 2 --model M --extractor policy --switch THINKING=0 \\
        -- collect.py FLAGS... -- extract.py FLAGS... -- distill.py FLAGS... -- evaluate.py FLAGS...

Run from the repository root (loop.sh is), where the stage scripts are.
"""

import argparse
import contextlib
import io
import json
import os
import re
import runpy
import subprocess
import sys
import traceback

from oel import cli


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="the run folder (may not exist yet)")
    p.add_argument("--rounds", type=cli.positive_int, required=True, help="ROUNDS")
    p.add_argument("--model", required=True, help="MODEL: the policy")
    p.add_argument("--extractor", default="policy", help="EXTRACTOR: 'policy' or another model")
    p.add_argument("--extraction-games", type=cli.positive_int, help="N_EXTRACT, for extract's chain plan")
    p.add_argument("--switch", action="append", default=[], help="NAME=VALUE of a 0/1 knob")
    p.add_argument("--family", default=None, help="FAMILY: the inputs already in the run folder must be of it")
    p.add_argument("--knobs", default="", help="every knob's name (and the variables loop.sh reads), space separated")
    return p.parse_args(argv)


def distance(a, b):
    """Edit distance (insertions, deletions, substitutions) between two names."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        row, last = [i], row
        for j, y in enumerate(b, 1):
            row.append(min(last[j] + 1, row[j - 1] + 1, last[j - 1] + (x != y)))
    return row[-1]


def misspelt_knobs(environ, knobs):
    """[(variable, the knob it resembles)]: variables set in the environment one letter away from a knob's name
    (two for names of six letters or more) that are not knobs themselves: a typo loop.sh would ignore."""
    found = []
    for name in sorted(environ):
        if name in knobs or not name.isupper():
            continue
        close = [k for k in knobs if distance(name, k) <= (2 if min(len(k), len(name)) >= 6 else 1)]
        if close:
            found.append((name, min(close, key=lambda k: distance(name, k))))
    return found


def check_run_inputs(run, family, model):
    """The inputs already in the run folder must be of this run: its game family, and in round 1 its model (a
    later round's policy is the round before's model). The first record of each file tells."""
    if not os.path.isdir(run):
        return
    for folder in sorted(d for d in os.listdir(run) if re.fullmatch(r"round_\d+", d)):
        for name in ("extraction_trajectories.jsonl", "deployment_trajectories.jsonl", "knowledge.jsonl"):
            path = os.path.join(run, folder, name)
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                try:
                    first = json.loads(f.readline() or "{}")
                except json.JSONDecodeError:
                    continue  # the stage that reads it names the broken line
            theirs = first.get("family") or "textworld"
            if family and theirs != family:
                raise knob_error(f"FAMILY={family}: {path} holds {theirs} games; use another RUN, or NEW_SETTINGS=1")
            made_by = first.get("model")
            same = made_by == model or (
                os.path.exists(str(made_by)) and os.path.realpath(made_by) == os.path.realpath(model)
            )
            if folder == "round_1" and name != "knowledge.jsonl" and made_by and not same:
                raise knob_error(f"MODEL={model}: {path} was played by {made_by}; use another RUN, or NEW_SETTINGS=1")


def knob_error(message):
    return cli.InputError(f"{message} (a knob of loop.sh; nothing was run or written)")


def parsed_or_one_line(parse, who):
    """parse() (an argparse parse_args), or its error as one line naming `who`: argparse prints its usage and
    exits; the knob's value and what was expected are all a person needs."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parse()
    except SystemExit:
        said = [line.split(": error: ", 1)[1] for line in stderr.getvalue().splitlines() if ": error: " in line]
        raise knob_error(f"{who}: {said[-1] if said else 'refused its arguments'}")


def split(argv):
    """(head, [[stage, flags...], ...]): the argument list cut at each `--`."""
    parts = [[]]
    for a in argv:
        if a == "--":
            parts.append([])
        else:
            parts[-1].append(a)
    return parts[0], [p for p in parts[1:] if p]


def rounds_done(run):
    """The highest round of the run folder that holds anything (0 if none)."""
    if not os.path.isdir(run):
        return 0
    rounds = [int(m.group(1)) for d in os.listdir(run) if (m := re.fullmatch(r"round_(\d+)", d))]
    return max([r for r in rounds if r and os.listdir(os.path.join(run, f"round_{r}"))], default=0)


def run_check(argv):
    """`python STAGE.py --check FLAGS` as a program of its own: in a child forked from this process, which has
    imported torch already (five fresh interpreters importing it cost seconds on 2 cores), or, where there is no
    fork, a fresh interpreter. Returns (pid or process, the pipe its stderr goes to)."""
    if not hasattr(os, "fork"):
        process = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return process, process.stderr.fileno()
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    os.close(read)  # the child: the stage's own file run as __main__, as `python STAGE.py` would
    os.dup2(write, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # whatever they were bound to
    sys.argv, code = argv, 0
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:  # argparse's exit 2, or run_main's "error: ..."
        code = e.code if isinstance(e.code, int) else (print(e.code, file=sys.stderr) or 1) if e.code else 0
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)


def ask_stages(stages, extraction_games=None):
    """Ask every stage at once whether it takes the flags loop.sh will give it (`STAGE.py --check FLAGS`); the
    first refusal as one line naming the stage. extract.py is also told how many trajectories collect will write,
    for its chain plan."""
    from oel import lm  # noqa: F401 (torch, once, before the children are forked)

    running = []
    for script, *flags in stages:
        more = ["--check-trajectories", str(extraction_games)] if script == "extract.py" and extraction_games else []
        running.append((script, *run_check([script, "--check", *flags, *more])))
    refusals = []
    for script, child, pipe in running:
        with open(pipe, encoding="utf-8", errors="replace", closefd=isinstance(child, int)) as f:
            said = f.read()
        code = child.wait() if not isinstance(child, int) else os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        if code:
            lines = [line for line in said.strip().splitlines() if line.strip()]
            errors = [line.split("error: ", 1)[1] for line in lines if "error: " in line]
            refusals.append(f"{script}: {errors[-1] if errors else (lines or ['refused its arguments'])[-1]}")
    if refusals:
        raise knob_error(refusals[0])


def main(argv):
    head, stages = split(argv)
    try:
        args = parsed_or_one_line(lambda: parse_args(head), "loop.sh")
    except cli.InputError as e:  # its own flags are knobs: say which
        names = {"argument --rounds": "ROUNDS", "argument --extraction-games": "N_EXTRACT"}
        raise cli.InputError(re.sub("|".join(names), lambda m: names[m.group(0)], str(e).removeprefix("loop.sh: ")))
    for item in args.switch:
        name, _, value = item.partition("=")
        if value not in ("0", "1"):
            raise knob_error(f"{name}={value}: expected 0 or 1")
    done = rounds_done(args.run)
    if args.rounds < done:
        raise knob_error(
            f"ROUNDS={args.rounds}: {args.run} already holds rounds up to {done}; ask for at least {done}, or use "
            "another RUN"
        )
    for name, knob in misspelt_knobs(os.environ, set(args.knobs.split())):
        raise knob_error(f"{name} is not a knob; did you mean {knob}? (loop.sh would run without it)")
    if "NEW_SETTINGS=1" not in args.switch:  # with it, what the changed knobs affect is set aside, then redone
        check_run_inputs(args.run, args.family, args.model)
    ask_stages(stages, args.extraction_games)
    from oel import lm

    thinking = "THINKING=1" in args.switch
    for knob, name in (("MODEL", args.model), ("EXTRACTOR", args.extractor)):
        if not (knob == "EXTRACTOR" and name == "policy"):
            try:
                lm.check_model(name)
            except cli.InputError as e:
                raise knob_error(f"{knob}: {e}")
            if thinking and not lm.has_thinking_switch(lm.load_tokenizer(name)):
                raise knob_error(f"THINKING=1: {knob}={name}: its chat template has no thinking switch; use THINKING=0")


if __name__ == "__main__":
    cli.run_main(main, sys.argv[1:])
