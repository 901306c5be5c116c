"""Stage 4 of the OEL loop: how well does a policy play held-out games, with and without knowledge,
and does it keep its general instruction following?

Sets (`--sets`, comma separated, one model load for all of them):
- `id`: held-out games of the training distribution (preset `eval`, the same games every round);
- `ood`: harder settings and another game family (preset `ood`);
  both played exactly as collect.py plays (`collect.play`: same prompt, same command parsing),
  without knowledge unless `--knowledge` (one pool entry, placed where the distillation teacher sees
  it) or `--knowledge-curve C` (every snapshot of chain C, in order: the in-context curve);
- `ifeval`: IFEval prompt-level strict accuracy, offline (see ifeval.py), always in one documented setting, the
  Qwen3 authors' for IFEval: thinking off (whatever `--thinking` says; an answer cut inside `<think>` would be
  empty and fail, so a shorter reasoning alone would raise the score), sampling at temperature 0.7, top-p 0.8,
  top-k 20, seeded with `--seed`. The `--ifeval-*` flags change it; their values go into the summary.
Each set writes OUT_DIR/eval_SET.jsonl (eval_SET_incontext.jsonl with --knowledge,
eval_SET_curveC.jsonl with --knowledge-curve): per-game or per-prompt records, then one
`kind: "summary"` record per evaluation, with 95% intervals. An existing output is skipped unless
`--force`. `--report RUN` draws a run: RUN/report.md and RUN/report.png (the paper's Figure 1).

    python evaluate.py --model runs/demo/round_1/model --round 1 --sets id,ood,ifeval --out-dir runs/demo/round_1
    python evaluate.py --model smollm2-135m --round 1 --sets id --knowledge runs/demo/round_1/knowledge.jsonl --out-dir runs/demo/round_1
    python evaluate.py --report runs/demo

Simplified relative to the paper: TextWorld games instead of TextArena's; IFEval on an evenly spaced
subset of its prompts (`--ifeval-n`, 0 = all 541) with a response budget.
"""

import argparse
import glob
import math
import os
import random
import re
import time

import torch
from tqdm import tqdm

import collect
import common
import ifeval

PRESETS = {"id": "eval", "ood": "ood", "ifeval": None}  # set -> game preset (games.PRESETS)
IFEVAL_FLAGS = (
    "ifeval_n",
    "ifeval_max_new_tokens",
    "ifeval_thinking",
    "ifeval_temperature",
    "ifeval_top_p",
    "ifeval_top_k",
    "seed",
)  # the IFEval setting, recorded in its summary: the same every round
PLAY_FLAGS = (
    "max_turns",
    "history",
    "max_new_tokens",
    "list_commands",
    "match",
    "episodes",
    "batch_size",
    "thinking",
    "temperature",
    "top_p",
    "top_k",
    "quiet",
)  # passed on to collect.play


def set_list(text):
    """argparse type: 'id,ood,ifeval' -> ['id', 'ood', 'ifeval']."""
    sets = [s.strip() for s in text.split(",") if s.strip()]
    if not sets or any(s not in PRESETS for s in sets):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(PRESETS)}, got {text!r}")
    return list(dict.fromkeys(sets))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_model_args(p)
    p.add_argument(
        "--sets", "--set", type=set_list, default=["id"], help="what to evaluate: id, ood, ifeval (comma separated)"
    )
    p.add_argument(
        "--out-dir", default=".", help="folder for eval_SET[_incontext|_curveC].jsonl (e.g. runs/RUN/round_R)"
    )
    p.add_argument("--out", default=None, help="output file instead of the name in --out-dir (one set only)")
    p.add_argument("--force", action="store_true", help="redo an evaluation whose output exists")
    p.add_argument("--round", type=int, default=0, help="round recorded in every record (0 = the base model)")
    p.add_argument(
        "--run", default=None, help="run name recorded in every record (default: the folder holding round_R)"
    )
    p.add_argument("--quiet", action="store_true", help="no sample, no progress bars")
    g = p.add_argument_group("games (id, ood)")
    g.add_argument(
        "--n",
        type=common.positive_int,
        default=20,
        help="games in the held-out set (and in the OOD set unless --n-ood)",
    )
    g.add_argument("--n-ood", type=common.positive_int, default=None, help="games in the OOD set (default: --n)")
    g.add_argument("--games", default=None, help="play every finished game in this folder instead of the preset sets")
    g.add_argument(
        "--games-dir", default="games", help="cache folder for generated games (GAMES_DIR/eval, GAMES_DIR/ood)"
    )
    g.add_argument("--max-turns", type=common.positive_int, default=12, help="turn limit per game")
    g.add_argument("--history", type=int, default=4, help="turns of the log shown in the prompt (0 = all)")
    g.add_argument(
        "--max-new-tokens",
        type=common.positive_int,
        default=24,
        help="response cap per turn (raise it for thinking models)",
    )
    g.add_argument(
        "--list-commands", type=int, default=1, choices=[0, 1], help="1: list the admissible commands in the prompt"
    )
    g.add_argument("--match", default="closest", choices=["closest", "exact"], help="as in collect.py")
    g.add_argument("--episodes", type=common.positive_int, default=1, help="episodes per game")
    g.add_argument(
        "--batch-size", type=common.positive_int, default=32, help="most games (or IFEval prompts) in one generate call"
    )
    g.add_argument(
        "--knowledge", default=None, help="knowledge JSONL (extract.py) or text file: play with it in context"
    )
    g.add_argument("--knowledge-id", default=None, help="which knowledge record (default: the first pool entry)")
    g.add_argument(
        "--knowledge-curve",
        type=int,
        default=None,
        metavar="C",
        help="play with every snapshot of chain C (the in-context curve)",
    )
    g = p.add_argument_group("instruction following (ifeval)")
    g.add_argument("--ifeval-n", type=int, default=50, help="IFEval prompts, evenly spaced over the 541 (0 = all)")
    g.add_argument(
        "--ifeval-max-new-tokens",
        type=common.positive_int,
        default=256,
        help="response cap (raise it for thinking models)",
    )
    g.add_argument(
        "--ifeval-thinking",
        type=int,
        default=0,
        choices=[0, 1],
        help="1: IFEval with the thinking switch on; 0 (default, the Qwen3 authors' setting): off, whatever --thinking",
    )
    g.add_argument("--ifeval-temperature", type=float, default=0.7, help="IFEval sampling temperature (0 = greedy)")
    g.add_argument("--ifeval-top-p", type=float, default=0.8, help="IFEval nucleus sampling mass")
    g.add_argument("--ifeval-top-k", type=int, default=20, help="IFEval top-k sampling")
    g.add_argument(
        "--ifeval-file", default=None, help="prompts in IFEval's input_data.jsonl format (default: the packaged IFEval)"
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="RUN",
        help="write RUN/report.md and RUN/report.png from RUN/round_*/eval_*.jsonl, then exit",
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- statistics


def wilson(successes, n, z=1.96):
    """95% Wilson interval of a proportion: sound for small n and for rates near 0 or 1."""
    if n == 0:
        return (0.0, 0.0)
    p, d = successes / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_ci(values, bounds=(-math.inf, math.inf), z=1.96):
    """(mean, (low, high)): normal 95% interval of a mean, from the sample standard deviation, kept
    within the values' possible range (`bounds`)."""
    n = len(values)
    mean = sum(values) / max(n, 1)
    half = z * math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else 0.0
    return mean, (max(mean - half, bounds[0]), min(mean + half, bounds[1]))


def ratio_ci(numerators, denominators, resamples=2000, seed=0):
    """(sum(num) / sum(den), 95% percentile bootstrap over units): for per-turn means, whose turns
    are not independent (they cluster by game), so whole games are resampled."""
    n, rng = len(numerators), random.Random(seed)
    ratio = lambda idx: sum(numerators[i] for i in idx) / max(sum(denominators[i] for i in idx), 1)
    stats = sorted(ratio([rng.randrange(n) for _ in range(n)]) for _ in range(resamples)) if n else [0.0]
    return ratio(range(n)), (stats[int(0.025 * (len(stats) - 1))], stats[int(0.975 * (len(stats) - 1))])


def game_metrics(records):
    """Pass rate, score fraction, turns, response tokens per turn and per game, valid commands."""
    if not records:
        raise common.InputError("no game records to summarise")
    won, n = sum(bool(r["won"]) for r in records), len(records)
    tokens = [sum(t["response_tokens"] for t in r["turns"]) for r in records]
    m = dict(n=n, won=won, pass_rate=won / n, pass_rate_ci=wilson(won, n))
    m["score"], m["score_ci"] = mean_ci([r["score"] / max(r["max_score"], 1) for r in records], bounds=(0, 1))
    m["turns"], m["turns_ci"] = mean_ci([r["turns_used"] for r in records])
    m["tokens_per_turn"], m["tokens_per_turn_ci"] = ratio_ci(tokens, [len(r["turns"]) for r in records])
    m["tokens_per_game"], m["tokens_per_game_ci"] = mean_ci(tokens)
    m["valid"] = sum(t["valid"] for r in records for t in r["turns"]) / max(sum(len(r["turns"]) for r in records), 1)
    return m


def ifeval_metrics(records):
    """IFEval's four accuracies (prompt/instruction level, strict/loose) and response length."""
    if not records:
        raise common.InputError("no IFEval records to summarise")
    n, followed = len(records), sum(all(r["followed"]) for r in records)
    flat, flat_loose = [f for r in records for f in r["followed"]], [f for r in records for f in r["followed_loose"]]
    m = dict(
        n=n,
        prompt_accuracy=followed / n,
        prompt_accuracy_ci=wilson(followed, n),
        instruction_accuracy=sum(flat) / len(flat),
        prompt_accuracy_loose=sum(all(r["followed_loose"]) for r in records) / n,
        instruction_accuracy_loose=sum(flat_loose) / len(flat_loose),
        cut=sum(r["cut"] for r in records) / n,
    )
    m["tokens_per_response"], m["tokens_per_response_ci"] = mean_ci([r["response_tokens"] for r in records])
    return m


# ----------------------------------------------------------------------------- evaluations


def output_path(args, name):
    """Where one set's evaluation goes (the name the report and loop.sh expect)."""
    if args.out:
        return args.out
    suffix = (
        f"_curve{args.knowledge_curve}" if args.knowledge_curve is not None else "_incontext" if args.knowledge else ""
    )
    return os.path.join(args.out_dir, f"eval_{name}{suffix}.jsonl")


def knowledge_texts(args):
    """[(knowledge_id, text, step)] to play with: none, one pool entry, or every snapshot of one chain."""
    if args.knowledge_curve is not None:
        if not args.knowledge:
            raise common.InputError("--knowledge-curve needs --knowledge KNOWLEDGE.jsonl (extract.py's snapshots)")
        records = common.read_jsonl(args.knowledge, required=("knowledge_id", "knowledge", "chain", "step"))
        chain = sorted((r for r in records if r["chain"] == args.knowledge_curve), key=lambda r: r["step"])
        if not chain:
            raise common.InputError(f"{args.knowledge}: no snapshots of chain {args.knowledge_curve}")
        return [(r["knowledge_id"], r["knowledge"], r["step"]) for r in chain]
    return [collect.load_knowledge(args.knowledge, args.knowledge_id) + (None,)]


def play_set(model, tokenizer, paths, args, texts, name):
    """Play the games once per knowledge text (None = without); per-game records and one summary each."""
    play_args = collect.parse_args([])
    vars(play_args).update({k: getattr(args, k) for k in PLAY_FLAGS})
    agent = collect.model_agent(model, tokenizer, play_args)
    records, summaries = [], []
    for knowledge_id, knowledge, step in texts:
        random.seed(args.seed)
        torch.manual_seed(args.seed)  # the same sampling noise for every knowledge text
        try:
            played, _ = collect.play(agent, paths, play_args, knowledge, desc=f"eval {name} {knowledge_id or ''}")
        except ValueError as e:
            raise common.InputError(str(e))
        for r in played:
            r.update(kind="game", eval_set=name, knowledge_id=knowledge_id, knowledge=knowledge)
        records += played
        summaries.append(dict(knowledge_id=knowledge_id, step=step, **game_metrics(played)))
    return records, summaries


def ifeval_set(model, tokenizer, args, prompts):
    """Answer every prompt (batched, seeded) and check its instructions with IFEval's own checker."""
    chat = lambda p: common.chat_text(tokenizer, [{"role": "user", "content": p["prompt"]}], bool(args.ifeval_thinking))
    texts = [chat(p) for p in prompts]
    torch.manual_seed(args.seed)
    sampling = (args.ifeval_temperature, args.ifeval_top_p, args.ifeval_top_k)
    outputs = []
    for i in tqdm(range(0, len(texts), args.batch_size), desc="eval ifeval", disable=args.quiet, leave=False):
        outputs += common.generate(
            model, tokenizer, texts[i : i + args.batch_size], args.ifeval_max_new_tokens, *sampling
        )
    records = []
    for p, (response, n_tokens) in zip(prompts, outputs):
        answer = common.split_thinking(response)[1]  # the checker reads the answer, not the reasoning
        strict, loose = ifeval.check(p, answer)
        records.append(
            dict(
                kind="prompt",
                eval_set="ifeval",
                key=p["key"],
                prompt=p["prompt"],
                instruction_id_list=p["instruction_id_list"],
                kwargs=p["kwargs"],
                response=response,
                response_tokens=n_tokens,
                answer=answer,
                followed=strict,
                followed_loose=loose,
                cut=n_tokens >= args.ifeval_max_new_tokens,
            )
        )
    return records, [dict(knowledge_id=None, **ifeval_metrics(records))]


# ----------------------------------------------------------------------------- the report


def load_summaries(run):
    """{(round, eval name): [summary records]} from RUN/round_R/eval_NAME.jsonl."""
    found = {}
    for path in sorted(glob.glob(os.path.join(run, "round_*", "eval_*.jsonl"))):
        match = re.fullmatch(r"round_(\d+)", os.path.basename(os.path.dirname(path)))
        if not match:
            continue
        name = os.path.basename(path)[len("eval_") : -len(".jsonl")]
        summaries = [r for r in common.read_jsonl(path) if r.get("kind") == "summary"]
        need = (
            ("prompt_accuracy", "prompt_accuracy_ci")
            if name.startswith("ifeval")
            else ("pass_rate", "pass_rate_ci", "tokens_per_turn")
        )
        if not summaries or any(k not in s for s in summaries for k in need):
            raise common.InputError(
                f"{path}: expected a summary record (kind 'summary') with {', '.join(need)}; rerun the evaluation with --force"
            )
        found[(int(match.group(1)), name)] = summaries
    if not found:
        raise common.InputError(f"{run}: no evaluations found (expected {run}/round_R/eval_*.jsonl)")
    return found


def write_report(run):
    """RUN/report.md (one row per round) and RUN/report.png (pass rate, length, OOD per round)."""
    found = load_summaries(run)
    rounds = sorted({r for r, _ in found})
    get = lambda r, name, key: found[(r, name)][-1].get(key) if (r, name) in found else None
    cell = lambda r, name, key: (
        "-"
        if get(r, name, key) is None
        else f"{get(r, name, key):.2f}"
        + (" [{:.2f}, {:.2f}]".format(*get(r, name, key + "_ci")) if get(r, name, key + "_ci") else "")
    )
    columns = [
        ("pass rate (held-out)", "id", "pass_rate"),
        ("with knowledge in context", "id_incontext", "pass_rate"),
        ("score", "id", "score"),
        ("tokens/turn", "id", "tokens_per_turn"),
        ("tokens/turn in context", "id_incontext", "tokens_per_turn"),
        ("turns", "id", "turns"),
        ("OOD games pass rate", "ood", "pass_rate"),
        ("IFEval prompt-level strict", "ifeval", "prompt_accuracy"),
    ]
    lines = ["| round | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {r} | " + " | ".join(cell(r, name, key) for _, name, key in columns) + " |" for r in rounds]
    curves = sorted(k for k in found if "_curve" in k[1])
    if curves:
        lines += [
            "",
            "In-context curve (held-out pass rate with the snapshot after N trajectories):",
            "",
            "| round | set | knowledge | step | pass rate |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r} | {name} | {s['knowledge_id']} | {s.get('step')} | {s['pass_rate']:.2f} |"
            for r, name in curves
            for s in found[(r, name)]
        ]
    table = "\n".join(lines)
    header = (
        f"# {os.path.basename(os.path.abspath(run))}\n\nRound 0 is the base model, round r is θ_r after r rounds; 'in context' is the "
        "start-of-round policy θ_(r-1) playing with round r's knowledge (the distillation teacher). 95% intervals in brackets.\n\n"
    )
    with open(os.path.join(run, "report.md.tmp"), "w", encoding="utf-8") as f:
        f.write(header + table + "\n")
    os.replace(os.path.join(run, "report.md.tmp"), os.path.join(run, "report.md"))
    plot_report(found, rounds, curves, os.path.join(run, "report.png"))
    print(table)
    return table


def plot_report(found, rounds, curves, path):
    """The paper's Figure 1 for this run: pass rate, response length and OOD score per round, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (
            "pass rate",
            [
                ("id", "pass_rate", "held-out"),
                ("id_incontext", "pass_rate", "knowledge in context"),
                ("ood", "pass_rate", "OOD games"),
            ],
        ),
        (
            "response tokens per turn",
            [("id", "tokens_per_turn", "held-out"), ("id_incontext", "tokens_per_turn", "knowledge in context")],
        ),
        ("IFEval prompt-level strict accuracy", [("ifeval", "prompt_accuracy", "IFEval")]),
    ]
    fig, axes = plt.subplots(
        1, len(panels) + bool(curves), figsize=(4.4 * (len(panels) + bool(curves)), 3.6), squeeze=False
    )
    for ax, (title, series) in zip(axes[0], panels):
        for k, (name, key, label) in enumerate(series):
            points = [
                (r, found[(r, name)][-1])
                for r in rounds
                if (r, name) in found and found[(r, name)][-1].get(key) is not None
            ]
            if points:
                xs, ys = [r + 0.06 * k for r, _ in points], [s[key] for _, s in points]
                cis = [s.get(key + "_ci") or (s[key], s[key]) for _, s in points]
                errors = [
                    [max(y - lo, 0) for y, (lo, _) in zip(ys, cis)],
                    [max(hi - y, 0) for y, (_, hi) in zip(ys, cis)],
                ]
                ax.errorbar(xs, ys, yerr=errors, fmt="os^"[k] + "-", capsize=3, label=label)
        ax.set_title(title, fontsize=10), ax.set_xlabel("round"), ax.set_xticks(rounds), ax.legend(fontsize=8)
        if "tokens" not in title:
            ax.set_ylim(-0.03, 1.03)  # rates: the whole scale, so small changes look small
    for r, name in curves:
        steps = found[(r, name)]
        axes[0][-1].plot([s.get("step") or 0 for s in steps], [s["pass_rate"] for s in steps], "o-", label=f"round {r}")
        (
            axes[0][-1].set_title("in-context curve", fontsize=10),
            axes[0][-1].set_xlabel("trajectories read"),
            axes[0][-1].legend(fontsize=8),
        )
    fig.tight_layout()
    fig.savefig(path[:-4] + ".tmp.png", dpi=110)
    os.replace(path[:-4] + ".tmp.png", path)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main(args):
    if args.report:
        return write_report(args.report)
    if args.out and len(args.sets) > 1:
        raise common.InputError("--out names one file: use --out-dir with several --sets")
    if (args.knowledge or args.knowledge_curve is not None) and "ifeval" in args.sets:
        raise common.InputError("--knowledge is for the game sets (id, ood), not ifeval")
    todo = []
    for name in args.sets:
        if os.path.exists(output_path(args, name)) and not args.force:
            print(f"evaluate | {output_path(args, name)} exists, skipped (--force redoes it)")
        else:
            todo.append(name)
    if not todo:
        return []
    # every input is checked before the model loads
    paths = {
        name: collect.game_paths(
            args.games, args.games_dir, PRESETS[name], (args.n_ood or args.n) if name == "ood" else args.n
        )
        for name in todo
        if name != "ifeval"
    }
    texts = knowledge_texts(args) if paths else None
    prompts = ifeval.load_prompts(args.ifeval_n, args.ifeval_file) if "ifeval" in todo else None
    model, tokenizer = common.load_model(args.model, args.device, quiet=args.quiet)
    all_summaries = []
    for name in todo:
        out, start = output_path(args, name), time.time()
        if name == "ifeval":
            records, summaries = ifeval_set(model, tokenizer, args, prompts)
            settings = {k: getattr(args, k) for k in IFEVAL_FLAGS}
        else:
            records, summaries = play_set(model, tokenizer, paths[name], args, texts, name)
            settings = {k: getattr(args, k) for k in PLAY_FLAGS + ("seed",) if k != "quiet"}
        run = args.run or common.run_name(out)
        for r in records:
            r.update(run=run, round=args.round, model=args.model)
        for s in summaries:
            s.update(
                kind="summary",
                eval_set=name,
                run=run,
                round=args.round,
                model=args.model,
                seconds=round(time.time() - start, 1),
                settings=settings,
            )
        common.write_jsonl(out, records + summaries)
        if not args.quiet:
            show_sample(records[0])
        for s in summaries:
            print(summary_line(s) + f" | {s['seconds']:.0f} s | {out}")
        all_summaries += summaries
    return all_summaries


def show_sample(record):
    """One game as a person reads it, or one IFEval prompt with its answer and verdicts."""
    if record["kind"] == "game":
        return collect.show_trajectory(record)
    print(
        f"--- sample: IFEval prompt {record['key']} ---\n{record['prompt']}\n[model] {record['response'][:800]}\n"
        f"followed (strict): {dict(zip(record['instruction_id_list'], record['followed']))}\n---"
    )


def summary_line(s):
    ci = lambda key: "[{:.2f}, {:.2f}]".format(*s[key + "_ci"])
    if s["eval_set"] == "ifeval":
        return (
            f"evaluate ifeval | round {s['round']} | prompts {s['n']} | prompt-level strict {s['prompt_accuracy']:.2f} {ci('prompt_accuracy')} | "
            f"instruction-level {s['instruction_accuracy']:.2f} | loose {s['prompt_accuracy_loose']:.2f} | tokens {s['tokens_per_response']:.0f} | cut {s['cut']:.2f}"
        )
    return (
        f"evaluate {s['eval_set']} | round {s['round']} | knowledge {s['knowledge_id']} | games {s['n']} | pass {s['pass_rate']:.2f} {ci('pass_rate')} | "
        f"score {s['score']:.2f} | turns {s['turns']:.1f} | tokens/turn {s['tokens_per_turn']:.1f} {ci('tokens_per_turn')} | valid {s['valid']:.2f}"
    )


if __name__ == "__main__":
    common.run_main(main, parse_args())
