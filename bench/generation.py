"""Benchmark: rollout generation speed of `lm.generate_ids` at the real model shapes, with nothing downloaded.

A Qwen3 architecture (SHAPES below, from the public config numbers) with random weights generates a fixed
number of tokens (EOS held back: random weights say nothing useful, and speed and memory do not depend on
the weights) for the turn prompts of a recorded trajectories JSONL (no TextWorld needed) or synthetic
prompts of a given length, at several batch sizes and KV-cache modes:

    python bench/generation.py --shape tiny --batch-sizes 1,8 --prompt-tokens 128 --threads 1  # on a CPU
    python bench/generation.py --shape qwen3-1.7b --batch-sizes 1,32,128 \\
        --trajectories runs/demo/round_1/deployment_trajectories.jsonl

Prints per (mode, batch): generated tokens/s, prefill time, decode step time, decode tokens/s, the ratio of
the memory-bandwidth roofline step time to the measured one (a decode step reads every weight once; "+kv"
also counts reading the KV cache), and peak memory. A batch of B prompts is what one lock-step turn of B
games costs, so batch 1 against batch B is the old lock-step against one-game-at-a-time comparison.
"""

import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from oel import cli, jsonl, lm  # noqa: E402

MODES = lm.GENERATE_MODES
BANDWIDTH_GBS = {"H200": 4800, "H100 PCIe": 2000, "H100": 3350, "A100": 2000}  # HBM, GB/s (vendor figures)

# The Qwen3 architectures that both benchmarks (this one and bench/distill_step.py) build with random weights:
# speed and memory do not depend on the weights. The real sizes are the public config.json numbers of
# Qwen/Qwen3-0.6B, -1.7B and -4B.
SHAPES = {  # layers, hidden, intermediate, query heads, key/value heads, head dim
    "tiny": (2, 128, 384, 4, 2, 32),  # seconds on a CPU
    "small": (8, 512, 1536, 8, 4, 64),  # 42M params: distill's memory plan checked against a CPU run (README)
    "qwen3-0.6b": (28, 1024, 3072, 16, 8, 128),
    "qwen3-1.7b": (28, 2048, 6144, 16, 8, 128),
    "qwen3-4b": (36, 2560, 9728, 32, 8, 128),
}
QWEN3_COMMON = dict(  # the same in all three real sizes
    vocab_size=151936,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    max_position_embeddings=40960,
    bos_token_id=151643,
    eos_token_id=[151645, 151643],  # <|im_end|>, <|endoftext|>
    pad_token_id=151643,
)
# "small" keeps the 32,000-token vocabulary its memory figures were measured with (151,936 would make it
# 103M params, most of them embedding), so Qwen3's special token ids would be past its last row
OTHER_VOCAB = {"small": dict(vocab_size=32000, bos_token_id=None, eos_token_id=1, pad_token_id=0)}
SHAPE_HELP = "Qwen3 architecture, random weights (tiny: 2 layers, seconds on a CPU; small: 42M; or a real size)"


def csv_of(kind, choices=None):
    """argparse type: a comma-separated list of `kind` values (from `choices` if given)."""

    def parse(text):
        values = [kind(v) for v in text.split(",") if v.strip()]
        if not values or (choices and any(v not in choices for v in values)):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {choices or kind.__name__}")
        return values

    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help=SHAPE_HELP)
    p.add_argument("--model", default=None, help="benchmark this real model instead of --shape (hub name or folder)")
    p.add_argument("--tokenizer", default=lm.DEFAULT_MODEL, help="tokenizer for the prompts (with --shape)")
    p.add_argument("--device", type=cli.device_arg, default=None, help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 on a GPU, fp32 else")
    p.add_argument("--trajectories", default=None, help="recorded trajectories JSONL: its turn prompts are used")
    p.add_argument(
        "--prompt-tokens", type=cli.positive_int, default=256, help="synthetic prompt length (no --trajectories)"
    )
    p.add_argument("--new-tokens", type=cli.positive_int, default=32, help="tokens generated per prompt (fixed)")
    p.add_argument(
        "--batch-sizes", type=csv_of(cli.positive_int), default=[1, 32, 128], help="comma-separated batch sizes"
    )
    p.add_argument(
        "--modes",
        type=csv_of(str, list(MODES)),
        default=list(MODES),
        help=f"comma-separated KV-cache modes {list(MODES)}",
    )
    p.add_argument(
        "--bandwidth",
        type=cli.float_range(0, None, lo_open=True),
        default=None,
        help="memory bandwidth in GB/s for the roofline (default: by GPU name, or measured on a CPU)",
    )
    p.add_argument("--threads", type=cli.positive_int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--repeats", type=cli.positive_int, default=1, help="timed runs per point (the best is kept)")
    return p.parse_args(argv)


def shape_config(shape):
    """The Qwen3Config of one of SHAPES; enough for the memory plan, which needs no weights."""
    from transformers import Qwen3Config

    if shape not in SHAPES:
        raise cli.InputError(f"unknown shape {shape!r}; expected one of {sorted(SHAPES)}")
    layers, hidden, intermediate, heads, kv_heads, head_dim = SHAPES[shape]
    return Qwen3Config(
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        **{**QWEN3_COMMON, **OTHER_VOCAB.get(shape, {})},
    )


def build_model(shape, dtype=torch.float32, device="cpu", seed=0):
    """A Qwen3 of one of SHAPES with random weights, made directly on `device` in `dtype` (nothing downloaded,
    and no fp32 copy first). Random weights rarely sample EOS; fix the generated length anyway (min_new_tokens)."""
    from transformers import Qwen3ForCausalLM

    config = shape_config(shape)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3ForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def turn_messages(path):
    """The turn prompts (chat messages) of a trajectories JSONL from collect.py."""
    records = jsonl.read_jsonl(path, required=("turns",))
    prompts = [t["messages"] for r in records for t in r["turns"] if t.get("messages")]
    if not prompts:
        raise cli.InputError(f"{path}: no turn prompts (expected trajectories from collect.py with `turns`)")
    return prompts


def synthetic_prompt(tokenizer, n):
    """A prompt of exactly n tokens (one word repeated)."""
    for word in (" the", " go", " a", "a"):
        text = word * n
        if len(tokenizer(text, add_special_tokens=False).input_ids) == n:
            return text
    raise cli.InputError("cannot make a synthetic prompt of exact length with this tokenizer; pass --trajectories")


def weight_bytes(model):
    """Bytes a decode step reads from the weights: every parameter once (a tied embedding is read as the
    output layer; an untied input embedding only a row per sequence, left out)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights listed once
    embedding = model.get_input_embeddings().weight
    if model.get_output_embeddings().weight is not embedding:
        total -= embedding.numel() * embedding.element_size()
    return total


def kv_bytes_per_token(model, dtype):
    """Bytes of keys and values one token keeps in the KV cache, all layers."""
    c = model.config.get_text_config()
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return c.num_hidden_layers * 2 * c.num_key_value_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def bandwidth(device, given):
    """(GB/s, where the figure comes from)."""
    if given:
        return given, "--bandwidth"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, gbs in BANDWIDTH_GBS.items():
            if key in name:
                return gbs, f"{name} spec"
        return None, f"{name}: unknown, pass --bandwidth"
    x = torch.ones(2**27, device=device)  # 512 MiB read, best of 5
    best = min(timed(device, lambda: x.sum())[0] for _ in range(5))
    return x.numel() * 4 / best / 1e9, "measured: read of 512 MiB"


def timed(device, fn):
    """(seconds, result) of fn(), the device synchronized on both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif os.path.exists("/proc/self/clear_refs"):  # Linux: "5" resets the process's peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_memory_mib(device):
    """Peak since reset_peak_memory: allocated GPU memory, or the process's resident memory on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # never reset (macOS: bytes)


def measure(model, tokenizer, prompts, new_tokens, mode, repeats):
    """Seconds of a 1-token call (the prefill) and of a new_tokens call, best of `repeats` after one
    warm-up each (compilation is not timed); checks every response has exactly new_tokens tokens."""
    cache, compile = MODES[mode]
    device = model.device

    def run(n):
        return lm.generate_ids(
            model, tokenizer, prompts, n, temperature=1.0, cache=cache, compile=compile, min_new_tokens=n
        )

    seconds = {}
    for n in (1, new_tokens):
        run(n)  # warm-up
        reset_peak_memory(device)
        best, out = min((timed(device, lambda: run(n)) for _ in range(repeats)), key=lambda r: r[0])
        if [len(r) for r in out] != [n] * len(prompts):
            raise RuntimeError(f"{mode}: expected {n} tokens for every prompt, got {sorted({len(r) for r in out})}")
        seconds[n] = best
    return seconds[1], seconds[new_tokens], peak_memory_mib(device)


def main(args):
    device, auto_dtype = lm.pick_device(args.device)
    if args.threads:  # on a loaded CPU, fewer threads than cores can be much faster (no waiting on a descheduled one)
        torch.set_num_threads(args.threads)
    dtype = {"auto": auto_dtype, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    if args.new_tokens < 2:
        raise cli.InputError("--new-tokens must be >= 2 (a decode step is timed as the difference to 1 token)")
    messages = turn_messages(args.trajectories) if args.trajectories else None  # checked before anything loads
    tokenizer = lm.load_tokenizer(args.model or args.tokenizer)
    vocab = None if args.model else shape_config(args.shape).vocab_size
    if vocab and len(tokenizer) > vocab:  # its ids past the embedding's last row would fail mid-run
        raise cli.InputError(
            f"--shape {args.shape} has {vocab} token ids, the tokenizer {len(tokenizer)}: pick a Qwen3-sized shape"
        )
    if messages:
        prompts, source = [lm.chat_text(tokenizer, m) for m in messages], args.trajectories
    else:
        prompts, source = [synthetic_prompt(tokenizer, args.prompt_tokens)], "synthetic"
    if args.model:
        model, name = lm.load_model(args.model, device, dtype, quiet=True)[0], args.model
    else:
        model, name = build_model(args.shape, dtype, device), f"{args.shape} (random weights)"
    gbs, gbs_source = bandwidth(device, args.bandwidth)
    weights = weight_bytes(model)
    kv_token = kv_bytes_per_token(model, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{name} | {n_params / 1e6:.0f}M params, {weights / 2**30:.2f} GiB read per step | {device}"
        f" {torch.cuda.get_device_name(device) if device.type == 'cuda' else ''} {dtype} | threads"
        f" {torch.get_num_threads()} | bandwidth {gbs and f'{gbs:.0f} GB/s'} ({gbs_source}) | prompts {source}"
        f" | new tokens {args.new_tokens}"
    )
    print(
        f"{'mode':>15} {'batch':>5} {'prompt':>6} | {'gen tok/s':>9} {'prefill s':>9} {'step ms':>8}"
        f" {'decode tok/s':>12} | {'roofline':>8} {'+kv':>6} | {'peak MiB':>8}"
    )
    for mode in args.modes:
        for b in args.batch_sizes:
            batch = [prompts[i % len(prompts)] for i in range(b)]
            prompt_len = sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in batch) / b
            prefill, total, peak = measure(model, tokenizer, batch, args.new_tokens, mode, args.repeats)
            step = (total - prefill) / (args.new_tokens - 1)  # one decode step, the prefill taken out
            if step <= 0:
                print(f"{mode:>15} {b:>5} | decode time below the timing noise: raise --new-tokens or --repeats")
                continue
            roof, roof_kv = "n/a", "n/a"
            if gbs:  # the roofline step: bytes read / bandwidth; ratio = roofline time / measured time
                context = prompt_len + args.new_tokens / 2  # mean tokens in the cache over the decode steps
                roof = f"{weights / (gbs * 1e9) / step:.3g}"
                roof_kv = f"{(weights + b * context * kv_token) / (gbs * 1e9) / step:.3g}"
            print(
                f"{mode:>15} {b:>5} {prompt_len:>6.0f} | {b * args.new_tokens / total:>9.1f} {prefill:>9.3f}"
                f" {step * 1e3:>8.1f} {b / step:>12.1f} | {roof:>8} {roof_kv:>6} | {peak:>8.0f}",
                flush=True,
            )


if __name__ == "__main__":
    cli.run_main(main, parse_args())
