"""Benchmark: consolidation on its own. How much of what one knowledge entry does in context ends up in the
weights once distill.py has consolidated it, measured on turn prompts the training never saw.

For an entry (a knowledge text) and a behaviour it should change (a share over replies, e.g. replies with a
bracketed command), on held-out turn prompts:
- before:  the policy θ without the entry;   teacher: θ with the entry in context (as distill's teacher sees it);
- after:   θ' (distill.py with the entry as the whole pool, on training turn prompts) without the entry;
- transfer ratio = (after - before) / (teacher - before), with a 95% bootstrap interval over prompts; undefined,
  and said so, when the entry changes nothing in context (the interval of teacher - before holds 0);
- the curve: the student's behaviour at every saved step, the teacher's level as a line (transfer.png);
- the cost (--cost): IFEval prompt-level strict and the held-out games' pass rate, before and after.

    python bench/transfer.py --entry rambling --out-dir runs/transfer/rambling          # a built-in entry
    python bench/transfer.py --knowledge "- Answer in French." --measure 'regex:\\b(le|la|les|aller)\\b' \\
        --out-dir runs/transfer/french --model MODEL                                     # your own entry
    python bench/transfer.py --entry rambling --out-dir runs/transfer/lr3e-5 --distill --lr=3e-5
    python bench/transfer.py --compare runs/transfer/r* --out-dir runs/transfer   # a table, and the curves drawn
    python bench/transfer.py --screen [ENTRY ...]       # built-in entries, before and in context only

Turn prompts come from TextWorld games played by the policy itself (collect.py): training prompts from
deployment games, held-out prompts from the held-out games (content-disjoint from training), made once under
--prompts-dir and reused. Everything after `--distill` goes to distill.py as it is (--lr, --steps, --loss-topk,
--mode, --teacher, ...): each run of this script is one point of a grid.
"""

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import collect  # noqa: E402
import distill  # noqa: E402
import evaluate  # noqa: E402
from oel import cli, experience, jsonl, lm, rollouts, stats  # noqa: E402

# name -> (knowledge text, behaviour measure): entries a small model might follow in context. Screened with the
# default model on TextWorld turn prompts (docs/results.md): only `rambling` (a long, repetitive entry like the
# ones it writes itself, which shortens its replies) changes what it does on all held-out prompts; `inventory` (a
# word it echoes) did on a third of them only.
RAMBLING = (
    "- The game teaches about the importance of clear commands and the consequences of failure. It emphasizes "
    "the importance of planning ahead and having a plan before starting a game.\n"
    "- The game teaches about the importance of being prepared and having a plan before a game.\n"
    "- The game teaches about the importance of clear commands and the consequences of failure. It emphasizes the "
    "need to have a clear plan before a game.\n"
    "- The game teaches about the importance of planning ahead and having a plan before a game."
)
ENTRIES = {
    "inventory": ("- inventory\n- inventory\n- inventory\n- inventory\n- inventory", r"regex:\binventory\b"),
    "rambling": (RAMBLING, "min-words:5"),
    "bracket": ("- Reply with the command inside square brackets, like [open door].", r"regex:\[[^\]]+\]"),
    "short": ("- Answer with at most two words.", "max-words:2"),
    "look": ("- Always begin your reply with the word: look", "starts:look"),
    "no-go": ("- Never use the word 'go'.", "absent:go"),
    "french": ("- Always answer in French.", r"regex:\b(le|la|les|une?|aller|prendre|ouvrir|nord|sud)\b"),
}


def measure_fn(spec):
    """A reply -> 0/1 function from 'regex:PATTERN' (a match anywhere, case-insensitive), 'max-words:N',
    'min-words:N', 'starts:WORD' (the reply's first word) or 'absent:WORD' (the word nowhere in the reply)."""
    kind, _, arg = spec.partition(":")
    words = lambda reply: re.findall(r"[a-z']+", reply.lower())
    if kind == "regex" and arg:
        pattern = re.compile(arg, re.I)
        return lambda reply: int(bool(pattern.search(reply)))
    if kind == "max-words" and arg.isdigit():
        return lambda reply: int(0 < len(words(reply)) <= int(arg))
    if kind == "min-words" and arg.isdigit():
        return lambda reply: int(len(words(reply)) >= int(arg))
    if kind == "starts" and arg:
        return lambda reply: int(words(reply)[:1] == [arg.lower()])
    if kind == "absent" and arg:
        return lambda reply: int(arg.lower() not in words(reply))
    raise argparse.ArgumentTypeError(
        f"{spec!r}: expected regex:PATTERN, max-words:N, min-words:N, starts:WORD or absent:WORD"
    )


def measure_words(spec):
    """A measure in words, for a figure's axis: 'min-words:5' -> 'replies of 5 words or more'."""
    kind, _, arg = spec.partition(":")
    return {
        "regex": f"replies matching /{arg}/", "max-words": f"replies of 1 to {arg} words",
        "min-words": f"replies of {arg} words or more", "starts": f"replies that begin with '{arg}'",
        "absent": f"replies without the word '{arg}'",
    }.get(kind, spec)  # fmt: skip


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    rest = argv[argv.index("--distill") + 1 :] if "--distill" in argv else []
    argv = argv[: argv.index("--distill")] if "--distill" in argv else argv
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--entry", choices=sorted(ENTRIES), help="a built-in entry and its measure (or --knowledge)")
    p.add_argument("--knowledge", help="your own entry: the knowledge text (with --measure)")
    p.add_argument("--measure", help="the behaviour: regex:PATTERN, max-words:N, min-words:N, starts:WORD, absent:WORD")
    p.add_argument("--model", default=cli.DEFAULT_MODEL, help="the policy θ (hub name, folder, or the built-in)")
    p.add_argument(
        "--out-dir", help="this run's folder: the model, its steps, transfer.json, transfer.png (--compare: the curves)"
    )
    p.add_argument("--prompts-dir", default="runs/transfer/prompts", help="turn prompts, made once and reused")
    p.add_argument("--n-train", type=cli.positive_int, default=24, help="deployment games giving training prompts")
    p.add_argument("--n-held-out", type=cli.positive_int, default=12, help="held-out games giving held-out prompts")
    p.add_argument("--held-out-prompts", type=cli.nonneg_int, default=0, help="evenly spaced held-out prompts (0: all)")
    p.add_argument("--samples", type=cli.positive_int, default=1, help="replies sampled per held-out prompt")
    p.add_argument("--max-new-tokens", type=cli.positive_int, default=24, help="reply cap (the default setting's)")
    p.add_argument("--save-every", type=cli.positive_int, default=10, help="distillation steps between curve points")
    p.add_argument("--cost", action="store_true", help="also IFEval and the held-out pass rate, before and after")
    p.add_argument("--ifeval-n", type=cli.positive_int, default=20, help="(--cost) IFEval prompts")
    p.add_argument("--n-games", type=cli.positive_int, default=12, help="(--cost) held-out games")
    p.add_argument("--seed", type=cli.nonneg_int, default=0, help="sampling and bootstrap seed")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="print the table of finished runs and exit")
    p.add_argument(
        "--screen",
        nargs="*",
        choices=sorted(ENTRIES),
        help="built-in entries' in-context effect (none: all), no training",
    )
    args = p.parse_args(argv)
    args.distill = rest
    if args.compare or args.screen is not None:
        return args
    if bool(args.entry) == bool(args.knowledge) or bool(args.knowledge) != bool(args.measure):
        p.error("give --entry NAME, or --knowledge TEXT with --measure SPEC")
    if not args.out_dir:
        p.error("--out-dir is required")
    args.knowledge, args.measure = ENTRIES[args.entry] if args.entry else (args.knowledge, args.measure)
    measure_fn(args.measure)  # a bad spec is refused here, before anything runs
    return args


# ----------------------------------------------------------------------------- the measurements


def replies(model, tokenizer, prompts, knowledge, samples, max_new_tokens, seed):
    """samples replies per prompt (temperature 0.7, full support: how the policy plays), with the knowledge
    inserted as distill's teacher sees it, or without: [[reply, ...] per prompt]."""
    texts = [lm.chat_text(tokenizer, experience.insert_knowledge(m, knowledge)) for _, m in prompts]
    torch.manual_seed(seed)  # the same noise for every condition: paired
    out = []
    for k in range(samples):
        for i in range(0, len(texts), 32):
            out += [r for r, _ in lm.generate(model, tokenizer, texts[i : i + 32], max_new_tokens, 0.7, 1.0, 0)]
    return [[out[k * len(texts) + i] for k in range(samples)] for i in range(len(texts))]


def behaviour(model, tokenizer, prompts, knowledge, args):
    """Per held-out prompt, the share of its sampled replies that show the behaviour."""
    follows = measure_fn(args.measure)
    sampled = replies(model, tokenizer, prompts, knowledge, args.samples, args.max_new_tokens, args.seed)
    return [sum(map(follows, rs)) / len(rs) for rs in sampled], sampled


def base_behaviour(model, tokenizer, prompts, knowledge, args):
    """behaviour() of the policy θ before training, its replies kept under --prompts-dir/replies: the same
    prompts, entry and sampling give the same replies, so the screen and every point of a grid share them."""
    key = [args.model, knowledge, [pid for pid, _ in prompts], args.samples, args.max_new_tokens, args.seed]
    path = os.path.join(args.prompts_dir, "replies", hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16])
    if os.path.exists(path + ".json"):
        with open(path + ".json") as f:
            sampled = json.load(f)
        follows = measure_fn(args.measure)
        return [sum(map(follows, rs)) / len(rs) for rs in sampled], sampled
    values, sampled = behaviour(model, tokenizer, prompts, knowledge, args)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(sampled, f)
    os.replace(path + ".tmp", path + ".json")
    return values, sampled


def transfer_ratio(before, teacher, after, resamples=2000, seed=0):
    """(after - before) / (teacher - before) over prompts, with a 95% bootstrap interval resampling prompts;
    the in-context effect (teacher - before) with its interval. The ratio is None when that interval holds 0:
    an entry that does nothing in context has nothing to transfer, and no ratio is divided by it."""
    n, rng = len(before), random.Random(seed)
    mean = lambda xs, idx: sum(xs[i] for i in idx) / len(idx)
    effect = lambda idx: mean(teacher, idx) - mean(before, idx)
    ratio = lambda idx: (mean(after, idx) - mean(before, idx)) / effect(idx) if effect(idx) else float("nan")
    draws = [[rng.randrange(n) for _ in range(n)] for _ in range(resamples)]
    pct = lambda xs: (sorted(xs)[int(0.025 * (len(xs) - 1))], sorted(xs)[int(0.975 * (len(xs) - 1))])
    effects = [effect(d) for d in draws]
    out = dict(effect=effect(range(n)), effect_ci=pct(effects), ratio=None, ratio_ci=None)
    if out["effect_ci"][0] <= 0 <= out["effect_ci"][1]:
        return out
    ratios = [r for r in (ratio(d) for d in draws) if r == r]
    out.update(ratio=ratio(range(n)), ratio_ci=pct(ratios))
    return out


# ----------------------------------------------------------------------------- the run


def turn_prompts(args):
    """(training prompts, held-out prompts): the turn prompts of deployment games and of held-out games that
    the policy played without knowledge, made once under --prompts-dir. The held-out games are made first:
    training games are made disjoint from the held-out sets that exist (oel/textworld_games.py)."""
    files = {}
    for name, set_name, n in (("held_out", "id", args.n_held_out), ("train", "deploy", args.n_train)):
        path = os.path.join(args.prompts_dir, f"{name}.jsonl")
        if not os.path.exists(path):
            argv = ["--model", args.model, "--set", set_name, "--n", str(n), "--out", path, "--quiet", "--round", "1"]
            argv += ["--max-turns", "12", "--history", "4", "--max-new-tokens", str(args.max_new_tokens)]
            collect.main(collect.parse_args(argv + ["--games-dir", os.path.join(args.prompts_dir, "games")]))
        files[name] = path
    held_out = rollouts.load_turn_prompts(files["held_out"], training=False)[0]  # measured on, never trained on
    if args.held_out_prompts and args.held_out_prompts < len(held_out):  # evenly spaced over the games
        held_out = [held_out[i * len(held_out) // args.held_out_prompts] for i in range(args.held_out_prompts)]
    return files, held_out


def cost(model_path, args, name):
    """IFEval prompt-level strict and the held-out pass rate of a model (evaluate.py; kept, so reruns reuse them)."""
    out = os.path.join(args.out_dir if name == "after" else args.prompts_dir, f"cost_{name}")
    argv = ["--model", model_path, "--sets", "id,ifeval", "--n", str(args.n_games), "--ifeval-n", str(args.ifeval_n)]
    argv += ["--out-dir", out, "--quiet", "--max-turns", "12", "--history", "4", "--max-new-tokens", "24"]
    argv += ["--games-dir", os.path.join(args.prompts_dir, "games")]
    evaluate.main(evaluate.parse_args(argv))
    last = lambda f: [r for r in jsonl.read_jsonl(os.path.join(out, f)) if r.get("kind") == "summary"][-1]
    return dict(ifeval=last("eval_ifeval.jsonl")["prompt_accuracy"], pass_rate=last("eval_id.jsonl")["pass_rate"])


def screen(args):
    """Each built-in entry on the held-out prompts: the behaviour without it and with it in context, the effect
    with its 95% interval over prompts. The entries whose interval leaves out 0 are worth distilling."""
    _, held_out = turn_prompts(args)
    model, tokenizer = lm.load_model(args.model, quiet=True)
    lines = ["| entry | behaviour | without | in context | effect [95%] | a reply in context |", "|---" * 6 + "|"]
    for name in args.screen or ENTRIES:
        knowledge, args.measure = ENTRIES[name]
        before, _ = base_behaviour(model, tokenizer, held_out, None, args)
        teacher, sample = base_behaviour(model, tokenizer, held_out, knowledge, args)
        effect = transfer_ratio(before, teacher, teacher, seed=args.seed)
        lines.append(
            f"| {name} | `{args.measure}` | {sum(before) / len(before):.2f} | {sum(teacher) / len(teacher):.2f} | "
            f"{effect['effect']:+.2f} [{effect['effect_ci'][0]:+.2f}, {effect['effect_ci'][1]:+.2f}] | "
            f"{sample[0][0][:60]!r} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(args):
    if args.compare:
        results = [json.load(open(os.path.join(d, "transfer.json"))) for d in args.compare]
        if args.out_dir:  # the runs' curves on one figure
            os.makedirs(args.out_dir, exist_ok=True)
            plot(results, os.path.join(args.out_dir, "transfer.png"))
        return print(compare(results))
    if args.screen is not None:
        return print(screen(args))
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.time()
    files, held_out = turn_prompts(args)
    model, tokenizer = lm.load_model(args.model, quiet=True)
    before, _ = base_behaviour(model, tokenizer, held_out, None, args)
    teacher, sample = base_behaviour(model, tokenizer, held_out, args.knowledge, args)
    # the entry as the whole pool, distilled on the training prompts with distill.py as it is
    pool = os.path.join(args.out_dir, "pool.jsonl")
    jsonl.write_jsonl(pool, [dict(knowledge_id="entry", knowledge=args.knowledge, in_pool=True, family="textworld")])
    out = os.path.join(args.out_dir, "model")
    argv = ["--model", args.model, "--trajectories", files["train"], "--knowledge", pool, "--out", out]
    argv += ["--save-every", str(args.save_every), "--print-every", "0", "--max-new-tokens", str(args.max_new_tokens)]
    distill.main(distill.parse_args(argv + args.distill))
    steps = sorted(int(d.split("_")[1]) for d in os.listdir(out + "_steps")) if os.path.isdir(out + "_steps") else []
    curve, per_step = [(0, sum(before) / len(before))], {0: before}  # per_step: each prompt's share, for intervals
    for step in steps:
        student, _ = lm.load_model(os.path.join(out + "_steps", f"step_{step}"), quiet=True)
        per_step[step] = behaviour(student, tokenizer, held_out, None, args)[0]
        curve.append((step, sum(per_step[step]) / len(held_out)))
    student, _ = lm.load_model(out, quiet=True)
    after, after_sample = behaviour(student, tokenizer, held_out, None, args)
    metrics = jsonl.read_jsonl(os.path.join(args.out_dir, "model.metrics.jsonl"))
    curve.append((metrics[-1]["step"], sum(after) / len(after)))
    per_step[metrics[-1]["step"]] = after
    result = dict(
        entry=args.entry or "own", knowledge=args.knowledge, measure=args.measure, model=args.model,
        distill=" ".join(args.distill) or "(defaults)", prompts=len(held_out), samples=args.samples,
        before=sum(before) / len(before), teacher=sum(teacher) / len(teacher), after=sum(after) / len(after),
        **transfer_ratio(before, teacher, after, seed=args.seed), curve=curve,
        kl=[metrics[0]["kl"], metrics[-1]["kl"]], example=dict(teacher=sample[0][0], after=after_sample[0][0]),
        per_prompt=dict(before=before, teacher=teacher, after=after),  # runs on the same prompts pair up
        per_step={str(s): v for s, v in per_step.items()},
    )  # fmt: skip
    if args.cost:
        result["cost_before"], result["cost_after"] = cost(args.model, args, "before"), cost(out, args, "after")
    result["seconds"] = round(time.time() - start)
    with open(os.path.join(args.out_dir, "transfer.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.join(args.out_dir, "transfer.png"))
    print(compare([result]))
    return result


def compare(results):
    """A markdown table: one row per run."""
    ci = lambda v: "-" if not v else "[{:+.2f}, {:+.2f}]".format(*v)
    lines = ["| entry | distill | before | teacher (in context) | after | transfer ratio | in-context effect | "
             "IFEval before → after | held-out pass before → after | s |", "|---" * 10 + "|"]  # fmt: skip
    for r in results:
        ratio = "undefined: no in-context effect" if r["ratio"] is None else f"{r['ratio']:.2f} {ci(r['ratio_ci'])}"
        cost_ = lambda k: f"{r['cost_before'][k]:.2f} → {r['cost_after'][k]:.2f}" if "cost_after" in r else "-"
        lines.append(
            f"| {r['entry']} | {r['distill']} | {r['before']:.2f} | {r['teacher']:.2f} | {r['after']:.2f} | {ratio} | "
            f"{r['effect']:+.2f} {ci(r['effect_ci'])} | {cost_('ifeval')} | {cost_('pass_rate')} | {r['seconds']} |"
        )
    return "\n".join(lines)


def share_ci(values, seed=0):
    """The mean of per-prompt shares and its 95% bootstrap interval over prompts."""
    return stats.ratio_ci(values, [1] * len(values), seed=seed)


def plot(results, path):
    """The students' behaviour over distillation steps (one series per run, its transfer ratio in the legend),
    each point with its 95% interval over prompts where the run kept per-prompt values; the teacher's level and
    the start as lines. Runs of one entry on the same prompts share those two levels; series are spread around
    each step so that equal values stay visible; the ticks are the steps that have data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure

    results = results if isinstance(results, list) else [results]
    first, steps = results[0], sorted({s for r in results for s, _ in r["curve"]})
    fig = matplotlib.figure.Figure(figsize=(6.0, 4.4 + 0.2 * len(results)), layout="constrained")
    ax = fig.subplots()
    width = 0.03 * (max(steps) - min(steps) or 1)  # runs spread around each step, apart at this figure's size
    for i, r in enumerate(results):
        dx = width * (i - (len(results) - 1) / 2)
        kept = r.get("per_step", {})
        points = [(s, *(share_ci(kept[str(s)])[1] if str(s) in kept else (y, y))) for s, y in r["curve"]]
        xs, ys = [s + dx for s, _ in r["curve"]], [y for _, y in r["curve"]]
        low = [max(y - lo, 0) for (_, lo, _), y in zip(points, ys)]
        high = [max(hi - y, 0) for (_, _, hi), y in zip(points, ys)]
        ratio = "undefined" if r["ratio"] is None else "{:.2f} [{:.2f}, {:.2f}]".format(r["ratio"], *r["ratio_ci"])
        name = "student, no knowledge in context" if len(results) == 1 else f"student: {r['distill']}"
        ax.errorbar(
            xs, ys, yerr=[low, high], marker="osD^v<>p"[i % 8], ls="-", color=f"C{(i + 2) % 10 if i else 0}",
            capsize=3, markeredgecolor="white", label=f"{name} (transfer ratio {ratio})",
        )  # fmt: skip
    for level, style, name in ((first["teacher"], "--", "teacher: the policy + the entry in context"),
                               (first["before"], ":", "the policy before, no knowledge")):  # fmt: skip
        ax.axhline(level, color="C1" if style == "--" else "grey", ls=style, label=name)
    ax.set_xticks(steps)
    ax.set_xlabel("distillation step")
    ax.set_ylabel(f"share of {measure_words(first['measure'])}")
    ax.set_ylim(-0.04, 1.04)
    ax.set_title(
        f"{first['entry']}: an in-context behaviour moved into the weights\n(n = {first['prompts']} held-out turn "
        "prompts; bars: 95% intervals over prompts)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.savefig(path, dpi=110)
    return fig


if __name__ == "__main__":
    cli.run_main(main, parse_args())
