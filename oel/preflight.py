"""loop.sh's knobs, checked before the first stage runs and before RUN/settings.json is written, by the stages
themselves: each stage's own argument parser reads the flags loop.sh will give it, the model names resolve,
and the knobs that only loop.sh reads (ROUNDS and the 0/1 switches) get the shared argument types. A bad value
ends the loop at once with one line; nothing is written, so the corrected rerun is not refused.

    python -m oel.preflight --run RUN --rounds 2 --model M --extractor policy --switch THINKING=0 \\
        -- collect.py FLAGS... -- extract.py FLAGS... -- distill.py FLAGS... -- evaluate.py FLAGS...

Run from the repository root (loop.sh is), where the stage scripts are importable.
"""

import argparse
import contextlib
import importlib
import io
import os
import re
import sys

from oel import cli


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="the run folder (may not exist yet)")
    p.add_argument("--rounds", type=cli.positive_int, required=True, help="ROUNDS")
    p.add_argument("--model", required=True, help="MODEL: the policy")
    p.add_argument("--extractor", default="policy", help="EXTRACTOR: 'policy' or another model")
    p.add_argument("--extraction-games", type=cli.positive_int, help="N_EXTRACT, for extract's chain plan")
    p.add_argument("--switch", action="append", default=[], help="NAME=VALUE of a 0/1 knob")
    return p.parse_args(argv)


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
    parsed = {}  # each stage's own parser on the flags loop.sh will give it
    for script, *flags in stages:
        stage = importlib.import_module(script.removesuffix(".py"))
        parsed[script] = parsed_or_one_line(lambda: stage.parse_args(flags), script)
    if args.extraction_games and "extract.py" in parsed:  # every chain needs trajectories of its own
        e = parsed["extract.py"]
        try:
            importlib.import_module("extract").chain_plan(args.extraction_games, e.chains, e.chain_data, e.steps)
        except cli.InputError as error:
            raise knob_error(f"N_EXTRACT={args.extraction_games}, CHAINS={e.chains}: {error}")
    from oel import lm

    for knob, name in (("MODEL", args.model), ("EXTRACTOR", args.extractor)):
        if not (knob == "EXTRACTOR" and name == "policy"):
            try:
                lm.check_model(name)
            except cli.InputError as e:
                raise knob_error(f"{knob}: {e}")


if __name__ == "__main__":
    cli.run_main(main, sys.argv[1:])
