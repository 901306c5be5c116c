"""Stage 4 of the OEL loop: how well does a policy play, with and without knowledge, and did it keep
its general abilities?

Sets: `id` (held-out games of the training distribution, fixed across rounds), `ood` (harder
settings and another family), both played exactly as collect.py plays (no knowledge unless
`--knowledge`), and `ifeval` (instruction following, the paper's OOD axis; see ifeval.py). Writes
per-game (per-prompt) records and one summary record with 95% intervals. `--report RUN` turns a whole
run folder into a markdown table and a plot (the paper's Figure 1: pass rate and response length per
round, with the in-context numbers and the OOD scores beside them).

    python evaluate.py --model runs/demo/round_1/model --round 1 --set id --out runs/demo/round_1/eval_id.jsonl
    python evaluate.py --report runs/demo

Simplified relative to the paper: TextWorld games instead of FrozenLake/Sokoban; an IFEval-style
prompt set written for this project instead of IFEval itself (which needs the hub).
"""
import argparse
import glob
import math
import os
import time

import torch

import collect
import common
import ifeval


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_model_args(p)
    p.add_argument("--set", default="id", choices=["id", "ood", "ifeval"], help="what to evaluate")
    p.add_argument("--out", default=None, help="output JSONL (per game or prompt + a summary record); skipped if it exists")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--round", type=int, default=0, help="round of the policy being evaluated (0 = base model)")
    p.add_argument("--n", type=common.positive_int, default=20, help="games in the set")
    p.add_argument("--games", default=None, help="play every finished game in this folder instead of the preset set")
    p.add_argument("--games-dir", default="games", help="cache folder for generated games")
    p.add_argument("--max-turns", type=common.positive_int, default=12, help="turn limit per game")
    p.add_argument("--history", type=int, default=4, help="turns of the log shown in the prompt")
    p.add_argument("--max-new-tokens", type=common.positive_int, default=24, help="response cap per turn")
    p.add_argument("--list-commands", type=int, default=1, choices=[0, 1], help="1: list the admissible commands in the prompt")
    p.add_argument("--match", default="closest", choices=["closest", "exact"], help="as in collect.py")
    p.add_argument("--episodes", type=common.positive_int, default=1, help="episodes per game")
    p.add_argument("--knowledge", default=None, help="knowledge JSONL or text: play with it in context")
    p.add_argument("--knowledge-id", default=None, help="which knowledge record (default: the first pool entry)")
    p.add_argument("--knowledge-curve", type=int, default=None, help="evaluate every snapshot of this chain (the in-context curve)")
    p.add_argument("--ifeval-n", type=int, default=0, help="instruction-following prompts (0 = all)")
    p.add_argument("--ifeval-max-new-tokens", type=common.positive_int, default=160, help="response cap for instruction following")
    p.add_argument("--report", default=None, metavar="RUN", help="write RUN/report.md and RUN/report.png from a run folder, then exit")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- statistics


def wilson(successes, n, z=1.96):
    """95% Wilson interval of a proportion: sound for small n and for rates near 0 or 1."""
    if n == 0:
        return (0.0, 0.0)
    p, d = successes / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values, z=1.96):
    """(mean, (low, high)): a normal 95% interval of the mean, with the sample standard deviation."""
    n = len(values)
    if n == 0:
        return 0.0, (0.0, 0.0)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, (mean - z * sd / math.sqrt(n), mean + z * sd / math.sqrt(n))


def game_metrics(records):
    """Pass rate, score fraction, turns and response tokens (per turn, per game) with 95% intervals."""
    if not records:
        raise common.InputError("no game records to summarise")
    n, won = len(records), sum(bool(r["won"]) for r in records)
    turns = [t for r in records for t in r["turns"]]
    m = dict(n=n, pass_rate=won / n, pass_rate_ci=wilson(won, n))
    m["score"], m["score_ci"] = mean_interval([r["score"] / max(r["max_score"], 1) for r in records])
    m["turns"], m["turns_ci"] = mean_interval([r["turns_used"] for r in records])
    m["tokens_per_turn"] = sum(t["response_tokens"] for t in turns) / max(len(turns), 1)
    m["tokens_per_game"], m["tokens_per_game_ci"] = mean_interval([sum(t["response_tokens"] for t in r["turns"]) for r in records])
    m["valid"] = sum(t["valid"] for t in turns) / max(len(turns), 1)
    return m


def ifeval_metrics(records):
    """Prompt-level strict accuracy (all instructions followed) and instruction-level accuracy."""
    n = len(records)
    followed = sum(all(r["followed"]) for r in records)
    flat = [f for r in records for f in r["followed"]]
    return dict(n=n, prompt_accuracy=followed / max(n, 1), prompt_accuracy_ci=wilson(followed, n),
                instruction_accuracy=sum(flat) / max(len(flat), 1),
                tokens_per_response=sum(r["response_tokens"] for r in records) / max(n, 1))


# ----------------------------------------------------------------------------- evaluations


def play_set(model, tokenizer, paths, args, knowledge_list):
    """Play the set once per knowledge text (None = without); returns per-game records and summaries."""
    play_args = collect.parse_args(["--quiet", "--max-turns", str(args.max_turns), "--history", str(args.history), "--max-new-tokens",
                                    str(args.max_new_tokens), "--list-commands", str(args.list_commands), "--match", args.match,
                                    "--episodes", str(args.episodes), "--temperature", str(args.temperature), "--top-p", str(args.top_p),
                                    "--top-k", str(args.top_k)] + (["--thinking"] if args.thinking else []))
    agent = collect.model_agent(model, tokenizer, play_args)
    records, summaries = [], []
    for knowledge_id, knowledge in knowledge_list:
        torch.manual_seed(args.seed)  # the same sampling noise for every snapshot
        try:
            played, _ = collect.play(agent, paths, play_args, knowledge, desc=f"eval {args.set} {knowledge_id or ''}")
        except ValueError as e:
            raise common.InputError(str(e))
        for r in played:
            r.update(kind="game", eval_set=args.set, knowledge_id=knowledge_id, knowledge=knowledge)
        records += played
        summaries.append(dict(knowledge_id=knowledge_id, **game_metrics(played)))
    return records, summaries


def ifeval_set(model, tokenizer, args):
    """Answer each prompt greedily (or seeded) in one batch and check its instructions."""
    prompts = ifeval.PROMPTS[:args.ifeval_n or None]
    texts = [common.chat_text(tokenizer, [{"role": "user", "content": p}], args.thinking) for p, _ in prompts]
    torch.manual_seed(args.seed)
    outputs = common.generate(model, tokenizer, texts, args.ifeval_max_new_tokens, args.temperature, args.top_p, args.top_k)
    records = []
    for i, ((prompt, instructions), (response, n)) in enumerate(zip(prompts, outputs)):
        answer = common.split_thinking(response)[1]
        records.append(dict(kind="prompt", eval_set="ifeval", key=i, prompt=prompt, instructions=[k for k, _ in instructions],
                            response=response, response_tokens=n, followed=ifeval.check(answer, instructions)))
    return records, [dict(knowledge_id=None, **ifeval_metrics(records))]


def knowledge_texts(args):
    """[(knowledge_id, text)] to play with: none, one pool entry, or every snapshot of one chain."""
    if args.knowledge_curve is not None:
        snapshots = [r for r in common.read_jsonl(args.knowledge, required=("knowledge_id", "knowledge", "chain", "step")) if r["chain"] == args.knowledge_curve]
        if not snapshots:
            raise common.InputError(f"{args.knowledge}: no snapshots of chain {args.knowledge_curve}")
        return [(r["knowledge_id"], r["knowledge"]) for r in sorted(snapshots, key=lambda r: r["step"])]
    if args.knowledge:
        return [collect.load_knowledge(args.knowledge, args.knowledge_id)]
    return [(None, None)]


# ----------------------------------------------------------------------------- the report


def load_summaries(run):
    """{(round, eval name): [summary records]} from RUN/round_*/eval_*.jsonl."""
    found = {}
    for path in sorted(glob.glob(os.path.join(run, "round_*", "eval_*.jsonl"))):
        name = os.path.basename(path)[len("eval_"):-len(".jsonl")]
        for s in common.read_jsonl(path):
            if s.get("kind") == "summary":
                found.setdefault((s["round"], name), []).append(s)
    if not found:
        raise common.InputError(f"{run}: no evaluation summaries (expected {run}/round_R/eval_*.jsonl)")
    return found


def write_report(run):
    """RUN/report.md (a table per round) and RUN/report.png (pass rate, length, OOD per round)."""
    found = load_summaries(run)
    rounds = sorted({r for r, _ in found})
    get = lambda r, name, key: found[(r, name)][-1][key] if (r, name) in found else None
    fmt = lambda v, ci=None: "-" if v is None else (f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
    lines = ["| round | pass rate (held-out) | with knowledge in context | tokens/turn | turns | OOD games pass rate | instruction following |",
             "|---|---|---|---|---|---|---|"]
    for r in rounds:
        lines.append(f"| {r} | {fmt(get(r, 'id', 'pass_rate'), get(r, 'id', 'pass_rate_ci'))} | {fmt(get(r, 'id_incontext', 'pass_rate'))} | "
                     f"{fmt(get(r, 'id', 'tokens_per_turn'))} | {fmt(get(r, 'id', 'turns'))} | {fmt(get(r, 'ood', 'pass_rate'))} | "
                     f"{fmt(get(r, 'ifeval', 'prompt_accuracy'))} |")
    table = "\n".join(lines)
    with open(os.path.join(run, "report.md.tmp"), "w") as f:
        f.write(f"# {os.path.basename(os.path.abspath(run))}\n\nRound 0 is the base model; round r is θ_r after r rounds. "
                "'With knowledge in context' is θ_(r-1) playing with round r's knowledge (the teacher).\n\n" + table + "\n")
    os.replace(os.path.join(run, "report.md.tmp"), os.path.join(run, "report.md"))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    series = [(axes[0], "id", "pass_rate", "held-out pass rate", "o-"), (axes[0], "id_incontext", "pass_rate", "with knowledge in context", "s--"),
              (axes[0], "ood", "pass_rate", "OOD games pass rate", "^:"), (axes[1], "id", "tokens_per_turn", "response tokens / turn", "o-"),
              (axes[2], "ifeval", "prompt_accuracy", "instruction following", "o-")]
    for ax, name, key, label, style in series:
        xs = [r for r in rounds if get(r, name, key) is not None]
        ax.plot(xs, [get(r, name, key) for r in xs], style, label=label)
    for ax, title in zip(axes, ("pass rate", "response length", "OOD: instruction following")):
        ax.set_title(title), ax.set_xlabel("round"), ax.set_xticks(rounds), ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(run, "report.tmp.png"), dpi=110)
    os.replace(os.path.join(run, "report.tmp.png"), os.path.join(run, "report.png"))
    print(table)
    return table


# ----------------------------------------------------------------------------- main


def main(args):
    if args.report:
        return write_report(args.report)
    out = args.out or f"eval_{args.set}.jsonl"
    if os.path.exists(out) and not args.force:
        print(f"evaluate | {out} exists, skipped (use --force to redo)")
        return None
    if args.set != "ifeval":  # games and knowledge are checked before a model is loaded
        paths = collect.game_paths(args.games, args.games_dir, "eval" if args.set == "id" else "ood", args.n)
        knowledge_list = knowledge_texts(args)
    start = time.time()
    model, tokenizer = common.load_model(args.model, args.device)
    if args.set == "ifeval":
        records, summaries = ifeval_set(model, tokenizer, args)
    else:
        records, summaries = play_set(model, tokenizer, paths, args, knowledge_list)
    seconds = time.time() - start
    for s in summaries:
        s.update(kind="summary", eval_set=args.set, round=args.round, model=args.model, seconds=seconds)
    for r in records:
        r.update(round=args.round, model=args.model)
    common.write_jsonl(out, records + summaries)
    for s in summaries:
        if args.set == "ifeval":
            print(f"evaluate ifeval | round {args.round} | prompts {s['n']} | prompt-level accuracy {s['prompt_accuracy']:.2f} "
                  f"[{s['prompt_accuracy_ci'][0]:.2f}, {s['prompt_accuracy_ci'][1]:.2f}] | instruction-level {s['instruction_accuracy']:.2f} | {seconds:.0f} s")
        else:
            print(f"evaluate {args.set} | round {args.round} | knowledge {s['knowledge_id']} | games {s['n']} | pass {s['pass_rate']:.2f} "
                  f"[{s['pass_rate_ci'][0]:.2f}, {s['pass_rate_ci'][1]:.2f}] | score {s['score']:.2f} | turns {s['turns']:.1f} | "
                  f"tokens/turn {s['tokens_per_turn']:.1f} | valid {s['valid']:.2f} | {seconds:.0f} s")
    return summaries


if __name__ == "__main__":
    common.run_main(main, parse_args())
