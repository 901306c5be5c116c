"""Benchmark: the teacher's forward in distill.py with each shared prefix run once (oel/prefix.py) against every
sequence run whole (OEL_SHARE_PREFIX=0), side by side in one run.

1. The teacher's forward alone (distill.teacher_states) on a random-weight Qwen3 shape: a batch of turn prompts of
   --prompt-tokens, each after one of --pool knowledge entries of each length in --knowledge-tokens, and a
   response of --new-tokens. Prints seconds and peak memory of both paths and their ratios.
2. --turns T.jsonl: sampling, a lock-step batch of --batch turn prompts (the same turn of different games, from
   collect.py's trajectories) with the default model (or --model), --new-tokens 24 as collect.py samples: the
   head every prompt begins with (system message, example exchange) run once, against the plain batch.
3. --count-turns T.jsonl ...: counted, not built: of the prompt tokens of collect.py's trajectories, how many the
   batch head already shares, and how many more a per-game cache kept across turns would skip (turn t's prompt
   begins with turn t-1's up to where the log changes, or the history window slides).
4. --step: whole distill.py runs (--steps steps, the default model unless --model) on real trajectories and a
   knowledge pool, with and without sharing; prints the seconds per step of each, from its metrics.

    python bench/prefix.py                                  # tiny Qwen3 shape on this machine
    python bench/prefix.py --shape qwen3-4b --batch 64 --pool 10 --new-tokens 1024   # on a GPU
    python bench/prefix.py --turns runs/transfer/prompts/held_out.jsonl --batch 16 --new-tokens 24
    python bench/prefix.py --count-turns runs/demo/round_1/deployment_trajectories.jsonl
    python bench/prefix.py --step --trajectories T.jsonl --knowledge K.jsonl

Random weights: the time of a forward does not depend on them. Peak memory is CUDA's peak allocated on a GPU;
on a CPU the growth of the process's resident memory (sampled every 2 ms) over its level before the call.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import distill  # noqa: E402
from bench import generation  # noqa: E402
from oel import cli, jsonl, lm, prefix  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(generation.SHAPES), default="tiny", help=generation.SHAPE_HELP)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument(
        "--knowledge-tokens",
        type=generation.csv_of(int),
        default=[256, 2048, 8192],
        help="knowledge lengths, one row each",
    )
    p.add_argument("--prompt-tokens", type=cli.positive_int, default=1000, help="the turn prompt after the knowledge")
    p.add_argument("--new-tokens", type=cli.positive_int, default=64, help="the response scored")
    p.add_argument("--batch", type=cli.positive_int, default=16, help="sequences in the batch")
    p.add_argument("--pool", type=cli.positive_int, default=2, help="knowledge entries the batch draws from")
    p.add_argument("--budget", type=cli.positive_int, default=4096, help="tokens a forward runs (--micro-batch-tokens)")
    p.add_argument("--repeats", type=cli.positive_int, default=2, help="timed calls of each path, after a warm-up")
    p.add_argument("--plan", action="store_true", help="the FLOP model's speed-ups of every shape; nothing runs")
    p.add_argument("--turns", default=None, help="trajectories JSONL: time sampling a lock-step batch of its turns")
    p.add_argument("--count-turns", nargs="+", default=None, help="trajectories JSONL files: the cross-turn count")
    p.add_argument("--step", action="store_true", help="whole distill.py runs instead (needs the two files below)")
    p.add_argument("--model", default=None, help="(--turns, --step) the model (default: the embedded default model)")
    p.add_argument("--trajectories", default=None, help="(--step) deployment trajectories")
    p.add_argument("--knowledge", default=None, help="(--step) a knowledge pool")
    p.add_argument("--steps", type=cli.positive_int, default=3, help="(--step) distillation steps a run")
    return p.parse_args(argv)


class Peak:
    """Peak memory over a block: CUDA's peak allocated, or the resident set's growth sampled by a thread."""

    def __init__(self, device):
        self.device, self.peak, self.stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = self.peak = rss()
            self.thread = threading.Thread(target=self.sample, daemon=True)
            self.thread.start()
        return self

    def sample(self):
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.bytes = max(self.peak, rss()) - self.base


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def teacher_pairs(vocab, args, knowledge_tokens, g):
    """Pairs as distill.build_pair makes them: knowledge entry i % pool, then a prompt and a response of its own."""
    entries = [torch.randint(2, vocab, (knowledge_tokens,), generator=g).tolist() for _ in range(args.pool)]
    pairs = []
    for i in range(args.batch):
        prompt = torch.randint(2, vocab, (args.prompt_tokens,), generator=g).tolist()
        response = torch.randint(2, vocab, (args.new_tokens,), generator=g).tolist()
        teacher = entries[i % args.pool] + prompt
        pairs.append(
            dict(teacher_ids=teacher + response, teacher_start=len(teacher), teacher_shared=knowledge_tokens,
                 response_ids=response)
        )  # fmt: skip
    return pairs


def modeled(config, args, knowledge_tokens):
    """The speed-up prefix.flops predicts for this batch: the whole sequences' FLOPs over the shared path's
    (1 where the sharing rule runs them whole)."""
    suffix = [args.prompt_tokens + args.new_tokens] * (args.batch // args.pool)
    whole, shared = prefix.flops(config, knowledge_tokens, suffix)
    return whole / shared if shared < whole else 1.0


def plan(args):
    """--plan: the modeled speed-ups of every shape, nothing run."""
    for shape in sorted(generation.SHAPES):
        config = generation.shape_config(shape)
        ratios = ", ".join(f"{k}: {modeled(config, args, k):.2f}x" for k in args.knowledge_tokens)
        print(f"{shape:<11} | batch {args.batch} over {args.pool} entries, prompt {args.prompt_tokens} + "
              f"{args.new_tokens} | modeled teacher speed-up at knowledge {ratios}")  # fmt: skip


def time_teacher(model, pairs, share, args, device):
    os.environ["OEL_SHARE_PREFIX"] = "1" if share else "0"
    seconds, peaks = [], []
    for i in range(args.repeats + 1):  # the first call warms up
        with Peak(device) as peak:
            t0 = time.perf_counter()
            distill.teacher_states(model, pairs, 0, args.budget)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - t0
        for p in pairs:
            del p["teacher_hidden"]
        if i:
            seconds.append(elapsed)
            peaks.append(peak.bytes)
    return min(seconds), max(peaks)


def run_forward(args):
    device, _ = lm.pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = generation.build_model(args.shape, dtype, device).requires_grad_(False)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} cores"
    print(
        f"teacher forward | shape {args.shape} | {device} ({machine}) | {dtype} | batch {args.batch} over {args.pool} "
        "pool entries | "
        f"prompt {args.prompt_tokens} + response {args.new_tokens} tokens | budget {args.budget} tokens"
    )
    assert prefix.supports(model, 0), "sharing does not reproduce the plain forward on this shape"
    g, rows = torch.Generator().manual_seed(0), []
    print("knowledge | whole: s, peak MiB | shared: s, peak MiB | speed-up (FLOPs modeled) | memory shared / whole")
    for k in args.knowledge_tokens:
        pairs = teacher_pairs(model.config.vocab_size, args, k, g)
        whole = time_teacher(model, pairs, False, args, device)
        shared = time_teacher(model, pairs, True, args, device)
        row = dict(knowledge_tokens=k, whole_s=whole[0], whole_peak_mib=whole[1] / 2**20, shared_s=shared[0],
                   shared_peak_mib=shared[1] / 2**20, speedup=whole[0] / shared[0])  # fmt: skip
        row["memory_ratio"] = shared[1] / whole[1] if whole[1] > 0 else None
        row["modeled"] = modeled(model.config, args, k)
        rows.append(row)
        ratio = "-" if row["memory_ratio"] is None else f"{row['memory_ratio']:.2f}"
        print(
            f"{k:>9} | {whole[0]:8.2f} s {whole[1] / 2**20:8.0f} | {shared[0]:8.2f} s {shared[1] / 2**20:8.0f} | "
            f"{row['speedup']:5.2f}x ({row['modeled']:.2f}x) | {ratio}",
            flush=True,
        )
    print(json.dumps(dict(shape=args.shape, device=str(device), batch=args.batch, pool=args.pool, rows=rows)))
    return rows


def run_steps(args):
    """Whole distill.py runs, sharing on and off, one after the other; seconds per step from each run's metrics
    (the first step left out: it warms up)."""
    if not (args.trajectories and args.knowledge):
        raise cli.InputError("--step needs --trajectories and --knowledge")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for share in ("0", "1", "0", "1"):  # alternated, so that a drift of the machine hits both
            out = os.path.join(tmp, f"model_{share}_{len(results.get(share, []))}")
            command = [sys.executable, "distill.py", "--trajectories", args.trajectories, "--knowledge", args.knowledge,
                       "--out", out, "--steps", str(args.steps), "--print-every", "0", "--save-every", "0"]  # fmt: skip
            if args.model:
                command += ["--model", args.model]
            subprocess.run(command, check=True, env=dict(os.environ, OEL_SHARE_PREFIX=share), capture_output=True)
            seconds = [r["seconds"] for r in jsonl.read_jsonl(out + ".metrics.jsonl")][1:]
            results.setdefault(share, []).append(sum(seconds) / len(seconds))
    whole, shared = min(results["0"]), min(results["1"])
    print(f"distill step | whole {whole:.2f} s | shared {shared:.2f} s | speed-up {whole / shared:.2f}x")
    return whole, shared


def lockstep_prompts(path, batch, tokenizer):
    """`batch` turn prompts as one lock-step turn sees them: turn k of every game that reached it, k = 2, 3, ..."""
    records = jsonl.read_jsonl(path, required=("turns",))
    prompts, k = [], 1
    while len(prompts) < batch and any(len(r["turns"]) > k for r in records):
        prompts += [lm.chat_text(tokenizer, r["turns"][k]["messages"]) for r in records if len(r["turns"]) > k]
        k += 1
    if len(prompts) < batch:
        raise cli.InputError(f"{path}: {len(prompts)} turn prompts after the first turns, --batch {batch} asked")
    return prompts[:batch]


def count_turns(args):
    """Per file: prompt tokens; those the lock-step head shares (every prompt's common head, run once a batch:
    counted as skipped for all prompts of a turn but one); and those a per-game cache across turns would skip on
    top (the tokens turn t's prompt shares with turn t-1's, past the head)."""
    tokenizer = lm.load_tokenizer(args.model or lm.DEFAULT_MODEL)
    rows = []
    for path in args.count_turns:
        records = jsonl.read_jsonl(path, required=("turns",))
        games = [[tokenizer(lm.chat_text(tokenizer, t["messages"]), add_special_tokens=False).input_ids
                  for t in r["turns"]] for r in records]  # fmt: skip
        every = [p for g in games for p in g]
        total = sum(map(len, every))
        by_turn = {}
        for g in games:
            for t, ids in enumerate(g):
                by_turn.setdefault(t, []).append(ids)
        head = sum(
            (len(b) - 1) * min(prefix.common_length(b[0], x) for x in b[1:]) for b in by_turn.values() if len(b) > 1
        )
        head_len = min(prefix.common_length(every[0], x) for x in every[1:])
        across = sum(max(prefix.common_length(a, b) - head_len, 0) for g in games for a, b in zip(g, g[1:]))
        row = dict(file=path, games=len(games), prompts=len(every), tokens=total, head=head, across_turns=across)
        rows.append(row)
        print(f"{path} | {len(games)} games, {len(every)} prompts, {total} prompt tokens ({total / len(every):.0f} a "
              f"prompt) | the lock-step head shares {head / total:.0%} | a cache across turns would skip "
              f"{across / total:.0%} more")  # fmt: skip
    return rows


def run_turns(args):
    """Sampling one lock-step batch, the head shared and not, alternated; the best of --repeats each. The same
    seed draws the same tokens on both paths (tests/test_prefix.py), so both generate the same lengths."""
    device, _ = lm.pick_device(args.device)
    model, tokenizer = lm.load_model(args.model or lm.DEFAULT_MODEL, device, quiet=True)
    prompts = lockstep_prompts(args.turns, args.batch, tokenizer)
    ids = tokenizer(prompts, add_special_tokens=False).input_ids
    head = min(prefix.common_length(ids[0], x) for x in ids[1:])
    total = sum(map(len, ids))
    print(f"lock-step turns | {args.batch} prompts, {total} tokens, a head of {head} shared "
          f"({head * (args.batch - 1) / total:.0%} of the prompt tokens run once instead of {args.batch} times) | "
          f"{args.new_tokens} new tokens | {device}")  # fmt: skip
    seconds, drawn = {"0": [], "1": []}, {}
    for i in range(2 * (args.repeats + 1)):
        share = "01"[i % 2]
        os.environ["OEL_SHARE_PREFIX"] = share
        torch.manual_seed(0)
        t0 = time.perf_counter()
        drawn[share] = lm.generate_ids(model, tokenizer, prompts, args.new_tokens, 0.7, 1.0, 0)
        if i >= 2:  # the first pair warms up
            seconds[share].append(time.perf_counter() - t0)
    whole, shared = min(seconds["0"]), min(seconds["1"])
    same = "the same tokens" if drawn["0"] == drawn["1"] else "DIFFERENT tokens"
    print(f"lock-step turns | whole {whole:.2f} s | shared {shared:.2f} s | speed-up {whole / shared:.2f}x | {same}")
    return whole, shared


def main(args):
    if args.plan:
        return plan(args)
    if args.turns:
        return run_turns(args)
    if args.count_turns:
        return count_turns(args)
    if not args.step and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # glibc keeps freed blocks below its dynamic threshold in the heap, so resident memory would count dead
        # tensors; a fixed threshold hands every large block back, and resident memory follows live memory
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
    return run_steps(args) if args.step else run_forward(args)


if __name__ == "__main__":
    cli.run_main(main, parse_args())
