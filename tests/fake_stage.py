"""A stand-in for the stages in loop.sh's run-folder tests: `python tests/fake_stage.py STAGE.py ARGS...`.

It does what matters to the run folder as the real stage does (runfolder.claim_outputs: the lock, the
arguments check), then, with FAKE_STAGE_SLOW naming the stage, writes a progress line to RUN/fake_writes.log every
0.1 s for FAKE_STAGE_SECONDS (like a metrics log), or until the file FAKE_STAGE_UNTIL names exists (a test that is
done with the running stage ends it so), and writes the stage's outputs atomically. Every start and end goes to
RUN/fake_stages.log with the pid, so a test can see two writers overlap.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from oel import cli, driver, runfolder


def parse(argv):
    """Every `--flag value` (or a bare `--flag`) into a namespace, like the stage's own parser would."""
    args, i = {}, 0
    while i < len(argv):
        key = argv[i].lstrip("-").replace("-", "_")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            args[key], i = argv[i + 1], i + 2
        else:
            args[key], i = True, i + 1
    return argparse.Namespace(**args)


def outputs(stage, args):
    if stage == "evaluate.py":
        if getattr(args, "report", None):
            return [os.path.join(args.report, "report.md")]
        suffix = f"_curve{args.knowledge_curve}" if hasattr(args, "knowledge_curve") else ""
        suffix = suffix or ("_incontext" if hasattr(args, "knowledge") else "")
        return [os.path.join(args.out_dir, f"eval_{name}{suffix}.jsonl") for name in args.sets.split(",")]
    return [args.out]


def log(run, line):
    with open(os.path.join(run, "fake_stages.log"), "a") as f:
        f.write(f"{time.time():.3f} {os.getpid()} {line}\n")


def append_record(path, record):  # a metrics log's line, as jsonl.append_jsonl writes it
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def write_whole(out, text):  # a temp file, then rename, as jsonl.write_jsonl: a file that exists is whole
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(out + ".tmp", out)


def main(stage, argv):
    args = parse(argv)
    outs = outputs(stage, args)
    run = runfolder.run_folder(outs[0])
    if not getattr(args, "report", None):
        runfolder.claim_outputs(outs, args)
        if all(os.path.exists(o) for o in outs):
            return
    log(run, f"start {stage} {' '.join(outs)}")
    if os.environ.get("FAKE_STAGE_SLOW") == stage:
        until = os.environ.get("FAKE_STAGE_UNTIL")
        for i in range(int(float(os.environ.get("FAKE_STAGE_SECONDS", "5")) * 10)):
            if until and os.path.exists(until):
                break
            append_record(os.path.join(run, "fake_writes.log"), dict(pid=os.getpid(), i=i, stage=stage))
            time.sleep(0.1)
    for out in outs:
        if stage == "distill.py":  # a model folder, with its arguments inside, as distill.py saves it
            tmp = out + ".tmp"
            os.makedirs(tmp, exist_ok=True)
            with open(os.path.join(tmp, "args.json"), "w") as f:
                json.dump(vars(args), f)
            os.replace(tmp, out)
        elif out.endswith("report.md"):
            with open(out, "w") as f:
                f.write("report\n")
        else:
            write_whole(out, json.dumps(dict(stage=stage, pid=os.getpid(), kind="summary")) + "\n")
    log(run, f"end {stage}")


if __name__ == "__main__":
    if sys.argv[1:3] == ["-m", "oel.preflight"]:  # loop.sh's knob check: the real one imports the real stages
        sys.exit(0)  # (torch, seconds a run); tests/test_preflight.py runs it
    if sys.argv[1:3] == ["-m", "oel.driver"]:  # loop.sh's run folder rules and its stage runner: the real ones
        cli.run_main(driver.main, sys.argv[3:])
        sys.exit(0)
    cli.run_main(lambda argv: main(argv[0], argv[1:]), sys.argv[1:])
