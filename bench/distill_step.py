"""Benchmark: one distillation step (student + teacher forward, reverse KL, backward) on realistic
turn prompts, computed three ways in one run: chunked with the student's top-k, chunked over the full
vocabulary, and naively (full (B, T, V) logits for whole sequences). Prints time, tokens/s and peak
memory, and the ratios against the naive step. Each mode runs in a fresh process so that the peak
memory (CUDA peak allocated, or process peak RSS on a CPU) is its own.

    python bench/distill_step.py                        # default model, 8 prompts, on this machine
    python bench/distill_step.py --model Qwen/Qwen3-1.7B --batch 32

With --shape it instead builds a Qwen3 of one of generation.SHAPES with random weights (nothing is
downloaded: speed and memory do not depend on the weights) and runs whole distill.main steps on
synthetic token ids: sampling at a fixed length (random weights never emit EOS), the forward/backward,
the optimizer step. It prints training.plan_memory's plan next to the measured peak.

    python bench/distill_step.py --shape small --batch 4 --prompt-tokens 300 --knowledge-tokens 200 --new-tokens 64
    python bench/distill_step.py --shape qwen3-4b       # the paper setting: batch 32, 1024 new tokens, thinking on
    python bench/distill_step.py --shape qwen3-4b --plan-only
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import distill  # noqa: E402
from bench import generation  # noqa: E402
from oel import cli, experience, lm, textworld_games, training  # noqa: E402

KNOWLEDGE = "\n".join(
    f"- lesson {i}: go to rooms you have not seen yet before going back; take the goal object at once."
    for i in range(8)
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=lm.DEFAULT_MODEL, help="model to distil")
    p.add_argument("--device", type=cli.device_arg, default=None, help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--batch", type=cli.positive_int, default=None, help="prompts per step (default 8; --shape: 32)")
    p.add_argument("--response-tokens", type=cli.positive_int, default=24, help="response length per prompt")
    p.add_argument("--repeats", type=cli.positive_int, default=2, help="timed steps per mode (after one warm-up)")
    p.add_argument("--games-dir", default="games", help="game cache (eval preset) for realistic prompts")
    p.add_argument("--shape", choices=sorted(generation.SHAPES), default=None, help=generation.SHAPE_HELP)
    p.add_argument("--prompt-tokens", type=cli.positive_int, default=1500, help="(--shape) student prompt")
    p.add_argument("--knowledge-tokens", type=cli.positive_int, default=2048, help="(--shape) teacher's extra")
    p.add_argument("--pool", type=cli.positive_int, default=10, help="(--shape) knowledge entries the prompts draw")
    p.add_argument("--new-tokens", type=cli.positive_int, default=1024, help="(--shape) sampled tokens, fixed")
    p.add_argument("--steps", type=cli.positive_int, default=2, help="(--shape) whole steps, the first one warms up")
    p.add_argument("--optimizer", choices=["adamw", "adamw8bit"], default=None, help="(--shape) as distill.py's")
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="(--shape) as distill.py's",
    )
    p.add_argument("--micro-batch-tokens", type=cli.positive_int, default=4096, help="(--shape) as distill.py's")
    p.add_argument("--chunk", type=cli.positive_int, default=128, help="(--shape) as distill.py's")
    p.add_argument("--loss-topk", type=cli.nonneg_int, default=256, help="(--shape) as distill.py's")
    p.add_argument(
        "--capacity-gib",
        type=cli.float_range(0, lo_open=True),
        default=80 * 10**9 / 2**30,
        help="(--plan-only) GPU memory",
    )
    p.add_argument("--plan-only", action="store_true", help="(--shape) print the plan for CUDA bf16 and stop")
    p.add_argument(
        "--only", default=None, choices=["topk", "full", "naive"], help="(internal) run one mode and print JSON"
    )
    args = p.parse_args()
    if args.batch is None:
        args.batch = 32 if args.shape else 8
    return args


def batch_pairs(tokenizer, args):
    """Student/teacher sequences from the first turn of real games, with a fixed knowledge text."""
    paths = textworld_games.make_set(args.games_dir, "eval", args.batch)
    marker = lm.generation_marker(tokenizer)
    pairs = []
    for i, path in enumerate(paths):
        ep = textworld_games.Episode(path)
        messages = ep.turn_messages()
        response = [(7 * i + j) % 1000 + 100 for j in range(args.response_tokens - 1)] + [tokenizer.eos_token_id]
        s_text, t_text = (
            lm.chat_text(tokenizer, messages),
            lm.chat_text(tokenizer, experience.insert_knowledge(messages, KNOWLEDGE)),
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
    student, tokenizer = lm.load_model(args.model, args.device, dtype=torch.float32, quiet=True)
    device, _ = lm.pick_device(args.device)
    teacher = distill.make_teacher(student)  # computes exactly as the student, as in distill.main
    _, pairs = batch_pairs(tokenizer, args)
    n_tokens = sum(len(p["student_ids"]) + len(p["teacher_ids"]) for p in pairs)
    n_total = sum(len(p["response_ids"]) for p in pairs)
    loss_kw = dict(
        mode="on-policy",
        temperature=0.7,
        topk=256 if args.only == "topk" else 0,
        chunk=128,
        pad_id=tokenizer.pad_token_id,
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
                (distill.micro_batch_kl(student, teacher, group, **loss_kw)[0] / n_total).backward()
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
                peak_mb=training.peak_memory_mb(device),
                device=str(device),
            )
        )
    )


# ----------------------------------------------------------------------------- whole steps at a model shape


def shape_plan(config, n_params, args, weight_bytes, autocast):
    return training.plan_run(
        config, n_params, (args.prompt_tokens, args.prompt_tokens + args.knowledge_tokens), weight_bytes=weight_bytes,
        compute_bytes=2 if autocast else weight_bytes, batch_size=args.batch, new_tokens=args.new_tokens,
        optimizer=args.optimizer, checkpointing=args.gradient_checkpointing, micro_batch_tokens=args.micro_batch_tokens,
        chunk=args.chunk,
    )  # fmt: skip


def now(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time()


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_shape(args):
    """distill.main's set-up and steps on a random-weight model; prints the plan and the measured figures."""
    device, compute_dtype = lm.pick_device(args.device)
    cuda = device.type == "cuda"
    args.optimizer = args.optimizer or ("adamw8bit" if cuda or args.plan_only else "adamw")
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = cuda or args.plan_only
    if args.plan_only:  # the plan for a bf16 GPU, from the config alone
        config = generation.shape_config(args.shape)
        weight_bytes = 4 if args.optimizer == "adamw" else 2
        plan = shape_plan(config, training.count_params(config), args, weight_bytes, autocast=True)
        print(
            f"shape {args.shape} | batch {args.batch} | prompt {args.prompt_tokens} (+{args.knowledge_tokens} teacher)"
        )
        print(f"new tokens {args.new_tokens} | {args.optimizer} | checkpointing {args.gradient_checkpointing}")
        return print(training.format_plan(plan, args.capacity_gib * 2**30))
    torch.zeros(256, 256).softmax(-1).sum()  # load kernels before the baseline
    baseline = torch.cuda.memory_allocated(device) if cuda else rss_bytes()
    weights_dtype, _ = training.training_dtypes(args.device, args.optimizer)
    student = generation.build_model(args.shape, weights_dtype, device)
    teacher = distill.make_teacher(student)
    autocast = torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32)
    if args.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
    optimizer = training.make_optimizer(student.parameters(), args.optimizer, 1e-6, 0.01)
    n_params = sum(p.numel() for p in student.parameters())
    plan = shape_plan(student.config, n_params, args, weights_dtype.itemsize, compute_dtype != torch.float32)
    print(f"shape {args.shape} ({n_params / 1e6:.1f}M params) | {device} | weights {weights_dtype} | {args.optimizer}")
    print(
        f"batch {args.batch} | prompt {args.prompt_tokens} (+{args.knowledge_tokens} teacher) | new {args.new_tokens}"
    )
    print(training.format_plan(plan, training.device_capacity(device)), flush=True)
    loss_kw = dict(mode="on-policy", temperature=0.7, topk=args.loss_topk, chunk=args.chunk, pad_id=0)
    g = torch.Generator().manual_seed(0)
    for step in range(1, args.steps + 1):  # the optimizer's states exist from the first step on
        prompts = torch.randint(2, student.config.vocab_size, (args.batch, args.prompt_tokens), generator=g)
        pool = torch.randint(2, student.config.vocab_size, (args.pool, args.knowledge_tokens), generator=g)
        knowledge = pool[torch.arange(args.batch) % args.pool]  # each prompt after one of the pool's entries
        clock = [now(device)]
        student.eval()  # sampling at a fixed length: EOS is suppressed until new_tokens
        with autocast, torch.no_grad():
            out = student.generate(
                input_ids=prompts.to(device),
                attention_mask=torch.ones_like(prompts, device=device),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=True,
                temperature=0.7,
                top_k=0,
                top_p=1.0,
            )
        clock.append(now(device))
        responses = out[:, args.prompt_tokens :].tolist()
        pairs = [
            dict(
                student_ids=p.tolist() + r,
                teacher_ids=k.tolist() + p.tolist() + r,
                response_ids=r,
                student_start=args.prompt_tokens,
                teacher_start=args.prompt_tokens + args.knowledge_tokens,
                teacher_shared=args.knowledge_tokens,  # the knowledge comes first, as in the paper's games
            )
            for p, k, r in zip(prompts, knowledge, responses)
        ]
        student.train()
        n_total = sum(len(r) for r in responses)
        with autocast:
            distill.teacher_states(teacher, pairs, 0, args.micro_batch_tokens)  # each pool entry's prefix run once
            for group in distill.micro_batches(pairs, args.micro_batch_tokens):
                (distill.micro_batch_kl(student, teacher, group, **loss_kw)[0] / n_total).backward()
        clock.append(now(device))
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.append(now(device))
        sample_s, train_s, step_s = (b - a for a, b in zip(clock, clock[1:]))
        n_train = sum(len(p["student_ids"]) + len(p["teacher_ids"]) for p in pairs)
        print(
            f"step {step} | sampling {sample_s:.1f} s ({args.batch * args.new_tokens / sample_s:.0f} tokens/s) | "
            f"forward/backward {train_s:.1f} s ({n_train / train_s:.0f} tokens/s, student + teacher) | "
            f"optimizer {step_s:.2f} s"
        )
    if cuda:
        measured, what = torch.cuda.max_memory_allocated(device) - baseline, "CUDA peak allocated"
    else:  # ru_maxrss is the process's high-water mark in KiB
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
        what = "peak RSS growth over the process before the model"
    planned = training.planned_peak(plan)[0]
    print(f"memory | planned peak {planned / 2**20:.0f} MiB | measured {what} {measured / 2**20:.0f} MiB "
          f"| measured / planned {measured / planned:.3f}")  # fmt: skip
    print(json.dumps(dict(shape=args.shape, planned_bytes=planned, measured_bytes=measured, device=str(device))))


def main(args):
    if args.shape and not args.plan_only and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # glibc's dynamic threshold keeps freed blocks up to 32 MiB in the heap, so RSS would count dead
        # tensors; a fixed threshold returns every large block to the system and RSS follows live memory
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
    if args.shape:
        return run_shape(args)
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
