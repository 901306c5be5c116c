"""Benchmark: one distillation step (student + teacher forward, reverse KL, backward) on realistic
turn prompts, computed three ways in one run: chunked with the student's top-k, chunked over the full
vocabulary, and naively (full (B, T, V) logits for whole sequences). Prints time, tokens/s and peak
memory, and the ratios against the naive step. Each mode runs in a fresh process so that the peak
memory (CUDA peak allocated, or process peak RSS on a CPU) is its own.

    python bench_distill.py                        # default model, 8 prompts, on this machine
    python bench_distill.py --model Qwen/Qwen3-1.7B --batch 32
"""

import argparse
import json
import subprocess
import sys
import time

import torch

import common
import distill
import games

KNOWLEDGE = "\n".join(
    f"- lesson {i}: go to rooms you have not seen yet before going back; take the goal object at once."
    for i in range(8)
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=common.DEFAULT_MODEL, help="model to distil")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--batch", type=int, default=8, help="prompts per step")
    p.add_argument("--response-tokens", type=int, default=24, help="response length per prompt")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per mode (after one warm-up)")
    p.add_argument("--games-dir", default="games", help="game cache (eval preset) for realistic prompts")
    p.add_argument(
        "--only", default=None, choices=["topk", "full", "naive"], help="(internal) run one mode and print JSON"
    )
    return p.parse_args()


def batch_pairs(tokenizer, args):
    """Student/teacher sequences from the first turn of real games, with a fixed knowledge text."""
    paths = games.make_set(args.games_dir, "eval", args.batch)
    marker = distill.generation_marker(tokenizer)
    pairs = []
    for i, path in enumerate(paths):
        ep = games.Episode(path)
        messages = games.render_turn(ep.objective, ep.history, ep.admissible)
        response = [(7 * i + j) % 1000 + 100 for j in range(args.response_tokens - 1)] + [tokenizer.eos_token_id]
        s_text, t_text = (
            common.chat_text(tokenizer, messages),
            common.chat_text(tokenizer, games.insert_knowledge(messages, KNOWLEDGE)),
        )
        s_ids, t_ids = (
            tokenizer(s_text, add_special_tokens=False).input_ids,
            tokenizer(t_text, add_special_tokens=False).input_ids,
        )
        pairs.append(
            dict(
                student_ids=s_ids + response,
                teacher_ids=t_ids + response,
                response_ids=response,
                student_start=len(s_ids),
                teacher_start=len(t_ids),
            )
        )
        ep.close()
    return marker, pairs


def padded(sequences, pad_id, device):
    width = max(len(x) for x in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(sequences):
        ids[i, : len(x)], mask[i, : len(x)] = torch.tensor(x), 1
    return ids.to(device), mask.to(device)


def naive_step(student, teacher, pairs, pad_id, temperature=0.7):
    """The textbook way: (B, T, V) logits for the whole padded batch, then slice the responses."""
    n_total = sum(len(p["response_ids"]) for p in pairs)
    s_logits = student(*padded([p["student_ids"] for p in pairs], pad_id, student.device)).logits  # (B, T, V)
    with torch.no_grad():
        t_logits = teacher(*padded([p["teacher_ids"] for p in pairs], pad_id, student.device)).logits  # (B, T', V)
    s = torch.cat(
        [
            s_logits[i, p["student_start"] - 1 : p["student_start"] - 1 + len(p["response_ids"])]
            for i, p in enumerate(pairs)
        ]
    )
    t = torch.cat(
        [
            t_logits[i, p["teacher_start"] - 1 : p["teacher_start"] - 1 + len(p["response_ids"])]
            for i, p in enumerate(pairs)
        ]
    )
    loss = distill.reverse_kl(s, t, temperature, 0)[0].sum() / n_total
    loss.backward()
    return loss.item()


def run_mode(args):
    student, tokenizer = common.load_model(args.model, args.device, dtype=torch.float32, quiet=True)
    device, compute_dtype = common.pick_device(args.device)
    teacher, _ = common.load_model(args.model, args.device, dtype=compute_dtype, quiet=True)
    teacher.requires_grad_(False)
    _, pairs = batch_pairs(tokenizer, args)
    n_tokens = sum(len(p["student_ids"]) + len(p["teacher_ids"]) for p in pairs)
    n_total = sum(len(p["response_ids"]) for p in pairs)
    opts = argparse.Namespace(
        temperature=0.7, topk=256 if args.only == "topk" else 0, chunk=128, pad_id=tokenizer.pad_token_id
    )
    times = []
    for i in range(args.repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.time()
        if args.only == "naive":
            naive_step(student, teacher, pairs, tokenizer.pad_token_id)
        else:
            for group in distill.micro_batches(pairs, 4096):
                distill.micro_batch_loss(student, teacher, group, n_total, opts)
        student.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.time() - t0)
    seconds = sum(times) / len(times)
    print(
        json.dumps(
            dict(
                mode=args.only,
                seconds=seconds,
                tokens_per_s=n_tokens / seconds,
                tokens=n_tokens,
                peak_mb=distill.peak_memory_mb(device),
                device=str(device),
            )
        )
    )


def main(args):
    if args.only:
        return run_mode(args)
    rows = {}
    for mode in ("topk", "full", "naive"):
        cmd = [
            sys.executable,
            __file__,
            "--only",
            mode,
            "--model",
            args.model,
            "--batch",
            str(args.batch),
            "--response-tokens",
            str(args.response_tokens),
            "--repeats",
            str(args.repeats),
            "--games-dir",
            args.games_dir,
        ] + (["--device", args.device] if args.device else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"mode {mode} failed:\n{out.stderr[-3000:]}")
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    naive = rows["naive"]
    print(
        f"model {args.model} | device {naive['device']} | threads {torch.get_num_threads()} | batch {args.batch} | "
        f"tokens/step {naive['tokens']} (student + teacher) | response {args.response_tokens}"
    )
    print(f"{'mode':>22} | {'step s':>7} | {'tokens/s':>8} | {'peak MB':>8} | speed vs naive | memory vs naive")
    names = {"topk": "chunked, top-256", "full": "chunked, full vocab", "naive": "naive, full logits"}
    for mode, r in rows.items():
        print(
            f"{names[mode]:>22} | {r['seconds']:7.2f} | {r['tokens_per_s']:8.0f} | {r['peak_mb']:8.0f} | "
            f"{naive['seconds'] / r['seconds']:13.2f}x | {r['peak_mb'] / naive['peak_mb']:14.2f}x"
        )


if __name__ == "__main__":
    main(parse_args())
