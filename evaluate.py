"""Stage 4 of the OEL loop: how well does a policy play held-out games, with and without knowledge,
and does it keep its general instruction following?

Sets (`--sets`, comma separated, one model load for all of them):
- `id`: held-out games of the training distribution (the same games every round);
- `ood`: harder settings and another game family;
  both played exactly as collect.py plays (`play.play`: same prompt, same command parsing),
  without knowledge unless `--knowledge` (the knowledge pool, placed where the distillation teacher sees it;
  each game draws one entry, seeded by its name, as the teacher draws one per prompt; `--knowledge-id` plays
  one entry) or `--knowledge-curve C` (every snapshot of chain C, in order: the in-context curve);
- `ifeval`: IFEval prompt-level strict accuracy, offline (see oel/ifeval.py), always in one documented setting, the
  Qwen3 authors' for IFEval: thinking off (whatever `--thinking` says; an answer cut inside `<think>` would be
  empty and fail, so a shorter reasoning alone would raise the score), sampling at temperature 0.7, top-p 0.8,
  top-k 20, seeded with `--seed`. The `--ifeval-*` flags change it; their values go into the summary.
Each set writes OUT_DIR/eval_SET.jsonl (eval_SET_incontext.jsonl with --knowledge,
eval_SET_curveC.jsonl with --knowledge-curve): per-game or per-prompt records, then one
`kind: "summary"` record per evaluation, with 95% intervals (oel/report.py's statistics). An existing output is
skipped unless `--force`. `--report RUN` hands over to oel/report.py, which draws a run: RUN/report.md and
RUN/report.png (the paper's Figure 1), with the paired change of the held-out pass rate from round 0 and from
the in-context run; `--report RUN1 RUN2 ...` puts runs side by side (OUT_DIR/compare.md and compare.png, the
shape of the paper's Table 2).

    python evaluate.py --model runs/demo/round_1/model --round 1 --sets id,ood,ifeval --out-dir runs/demo/round_1
    python evaluate.py --model smollm2-135m --round 1 --sets id --knowledge runs/demo/round_1/knowledge.jsonl \\
        --out-dir runs/demo/round_1
    python evaluate.py --report runs/demo
    python evaluate.py --report runs/a runs/b --out-dir runs

Episodes per game (`--episodes`, default 1). Over G games of E episodes the pass rate has variance σ_b²/G +
σ_w²/(G·E): σ_b² = Var(p_g), how much games differ; σ_w² = mean p_g(1-p_g), the sampling noise within a game.
Measured (SmolLM2-135M on the 20 held-out games x 2 episodes, 12 turns, CPU, 1791 s): pass rate 0.25, σ_b²
0.095, σ_w² 0.100. Standard error of the pass rate: 0.099 at 20 x 1, 0.085 at 20 x 2, 0.070 at 40 x 1; of a
paired round-to-round difference with no change: 0.100, 0.071, 0.071. Episodes shrink only the within-game term;
another game (same cost as an episode) shrinks both, so it is never worse. So the default is 1 and precision is
bought with games (`--n`, loop.sh's N_EVAL); `--episodes` is for a set that cannot grow (`--games FOLDER`).
Intervals and paired tests resample whole games, so they stay right with several episodes (episodes of one game
are not independent).

Simplified relative to the paper: TextWorld games instead of TextArena's; IFEval on an evenly spaced
subset of its prompts (`--ifeval-n`, 0 = all 541) with a response budget.
"""

import argparse
import collections
import os
import random
import time

import torch
from tqdm import tqdm

from oel import cli, experience, games, ifeval, jsonl, lm, play, report, rollouts, runfolder, stats

SETS = ("id", "ood", "ifeval")  # the held-out game sets (games.SETS) and IFEval's prompts
EPISODES = 1  # episodes per held-out game: more games beat more episodes at the same cost (docstring)
# the IFEval setting, recorded in its summary: the same every round
IFEVAL_FLAGS = (
    "ifeval_n ifeval_max_new_tokens ifeval_thinking ifeval_temperature ifeval_top_p ifeval_top_k seed".split()
)
SAMPLING = "thinking max_new_tokens temperature top_p top_k".split()  # play.model_agent's
PLAY_FLAGS = "max_turns history list_commands match episodes batch_size quiet".split()  # play.play's


def set_list(text):
    """argparse type: 'id,ood,ifeval' -> ['id', 'ood', 'ifeval']."""
    sets = [s.strip() for s in text.split(",") if s.strip()]
    if not sets or any(s not in SETS for s in sets):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(SETS)}, got {text!r}")
    return list(dict.fromkeys(sets))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_model_args(p)
    positive, nonneg, number = cli.positive_int, cli.nonneg_int, cli.float_range
    p.add_argument("--sets", "--set", type=set_list, default=["id"], help="id, ood, ifeval (comma separated)")
    p.add_argument("--out-dir", default=".", help="folder for eval_SET[_incontext|_curveC].jsonl (runs/RUN/round_R)")
    p.add_argument("--out", default=None, help="output file instead of the name in --out-dir (one set only)")
    p.add_argument("--force", action="store_true", help="redo an evaluation whose output exists")
    p.add_argument("--round", type=nonneg, default=0, help="round recorded in every record (0 = the base model)")
    p.add_argument("--run", default=None, help="run name in every record (default: the folder holding round_R)")
    p.add_argument("--quiet", action="store_true", help="no sample, no progress bars")
    p.add_argument("--report", nargs="+", metavar="RUN", help="write the report of RUN (several: compare them), exit")
    g = p.add_argument_group("games (id, ood)")
    g.add_argument("--family", type=games.family_arg, default="textworld", help=games.FAMILY_HELP)
    g.add_argument("--game-split", default="disjoint", choices=games.SPLITS, help=games.SPLIT_HELP)
    g.add_argument("--n", type=positive, default=20, help="games in the held-out set (and OOD set unless --n-ood)")
    g.add_argument("--n-ood", type=positive, default=None, help="games in the OOD set (default: --n)")
    g.add_argument("--games", default=None, help="TextWorld: every finished game in this folder, not the sets")
    g.add_argument("--games-dir", default="games", help="cache of generated games (GAMES_DIR/eval, GAMES_DIR/ood)")
    g.add_argument("--episodes", type=positive, default=EPISODES, help="episodes per game (see the docstring)")
    g.add_argument("--max-turns", type=positive, help="turn limit (default: 5 for the paper's games, else 12)")
    g.add_argument("--history", type=nonneg, help="turns of the log shown (0 = all; default: the paper's 0, else 4)")
    g.add_argument("--max-new-tokens", type=positive, default=24, help="response cap per turn (more for thinking)")
    g.add_argument("--list-commands", type=int, default=1, choices=[0, 1], help="1: list the admissible commands")
    g.add_argument("--match", default="closest", choices=["closest", "exact"], help="as in collect.py")
    g.add_argument("--batch-size", type=positive, default=32, help="most games (or IFEval prompts) in one generate")
    g.add_argument("--knowledge", default=None, help="knowledge JSONL (extract.py) or text file: play with it")
    g.add_argument("--knowledge-id", default=None, help="play with this knowledge record only (default: the pool)")
    g.add_argument("--knowledge-curve", type=nonneg, metavar="C", help="play every snapshot of chain C, in order")
    g = p.add_argument_group("instruction following (ifeval), the same setting every round")
    g.add_argument("--ifeval-n", type=nonneg, default=50, help="prompts, evenly spaced over the 541 (0 = all)")
    g.add_argument("--ifeval-max-new-tokens", type=positive, default=256, help="response cap (more for thinking)")
    g.add_argument("--ifeval-thinking", type=int, default=0, choices=[0, 1], help="1: thinking on (default off)")
    g.add_argument("--ifeval-temperature", type=number(0), default=0.7, help="sampling temperature (0 = greedy)")
    g.add_argument("--ifeval-top-p", type=number(0, 1, lo_open=True), default=0.8, help="nucleus mass")
    g.add_argument("--ifeval-top-k", type=nonneg, default=20, help="top-k sampling (0 = off)")
    g.add_argument("--ifeval-file", default=None, help="prompts in IFEval's input_data.jsonl format (default: IFEval)")
    cli.renamed(p, "--preset", "--sets (--preset eval is --sets id)")
    return games.fill_play_defaults(p.parse_args(argv))


# ----------------------------------------------------------------------------- metrics
# each evaluation's summary record; the intervals themselves are oel/stats.py's, which the report reuses


def by_game(records):
    """{game: [records]} in first-seen order: the clusters that the intervals resample."""
    games_ = {}
    for r in records:
        games_.setdefault(r["game"], []).append(r)
    return games_


def game_metrics(records):
    """Pass rate, score fraction, turns, response tokens per turn and per game, valid commands; the
    intervals resample whole games (Wilson's for the pass rate when every game has one episode)."""
    if not records:
        raise cli.InputError("no game records to summarise")
    games_ = list(by_game(records).values())
    per_game = lambda f: [sum(f(r) for r in rs) for rs in games_]
    episodes, turns = per_game(lambda r: 1), per_game(lambda r: len(r["turns"]))
    tokens = per_game(lambda r: sum(t["response_tokens"] for t in r["turns"]))
    won, n = sum(bool(r["won"]) for r in records), len(records)
    m = dict(n=n, games=len(games_), won=won, pass_rate=won / n)
    m["pass_rate_ci"] = (
        stats.wilson(won, n) if n == len(games_) else stats.ratio_ci(per_game(lambda r: r["won"]), episodes)[1]
    )
    m["score"], m["score_ci"] = stats.ratio_ci(per_game(lambda r: r["score"] / max(r["max_score"], 1)), episodes)
    m["turns"], m["turns_ci"] = stats.ratio_ci(per_game(lambda r: r["turns_used"]), episodes)
    m["tokens_per_turn"], m["tokens_per_turn_ci"] = stats.ratio_ci(tokens, turns)
    m["tokens_per_game"], m["tokens_per_game_ci"] = stats.ratio_ci(tokens, episodes)
    m["valid"] = sum(per_game(lambda r: sum(t["valid"] for t in r["turns"]))) / max(sum(turns), 1)
    return m


def ifeval_metrics(records):
    """IFEval's four accuracies (prompt/instruction level, strict/loose) and response length."""
    if not records:
        raise cli.InputError("no IFEval records to summarise")
    n, followed = len(records), sum(all(r["followed"]) for r in records)
    flat, flat_loose = [f for r in records for f in r["followed"]], [f for r in records for f in r["followed_loose"]]
    m = dict(
        n=n,
        prompt_accuracy=followed / n,
        prompt_accuracy_ci=stats.wilson(followed, n),
        instruction_accuracy=sum(flat) / len(flat),
        prompt_accuracy_loose=sum(all(r["followed_loose"]) for r in records) / n,
        instruction_accuracy_loose=sum(flat_loose) / len(flat_loose),
        cut=sum(r["cut"] for r in records) / n,
    )
    m["tokens_per_response"], m["tokens_per_response_ci"] = stats.ratio_ci(
        [r["response_tokens"] for r in records], [1] * n
    )
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


def knowledge_plans(args):
    """[(knowledge_id, step, entries)], one evaluation each: entries are the (knowledge_id, text) a game
    may play with. Without --knowledge: no knowledge. With a JSONL: the whole pool, one entry drawn per
    game as the teacher draws one per prompt (--knowledge-id: that entry only). --knowledge-curve C:
    every snapshot of chain C, in order, one evaluation each."""
    if args.knowledge is None:
        if args.knowledge_curve is not None:
            raise cli.InputError("--knowledge-curve needs --knowledge KNOWLEDGE.jsonl (extract.py's snapshots)")
        return [(None, None, [(None, None)])]
    if not args.knowledge.endswith(".jsonl"):
        if args.knowledge_curve is not None:
            raise cli.InputError(
                f"{args.knowledge}: --knowledge-curve needs a knowledge JSONL (extract.py's snapshots)"
            )
        return [
            (os.path.basename(args.knowledge), None, [experience.load_knowledge(args.knowledge, args.knowledge_id)])
        ]
    records = jsonl.read_jsonl(args.knowledge, required=("knowledge_id", "knowledge"))
    family = rollouts.family_of([(0, r) for r in records], args.knowledge, "knowledge")
    experience.check_family(args.knowledge, family, args.family, f"--family {args.family}")
    if args.knowledge_curve is not None:
        chain = [r for r in records if r.get("chain") == args.knowledge_curve and isinstance(r.get("step"), int)]
        if not chain:
            raise cli.InputError(f"{args.knowledge}: no snapshots of chain {args.knowledge_curve} (chain, step)")
        chain.sort(key=lambda r: r["step"])
        # a chain's knowledge starts empty: an empty snapshot (step 0, or nothing parsed yet) plays without any
        entry = lambda r: (
            experience.load_knowledge(args.knowledge, r["knowledge_id"])
            if experience.has_text(r.get("knowledge"))
            else (r["knowledge_id"], None)
        )
        return [(r["knowledge_id"], r["step"], [entry(r)]) for r in chain]
    if args.knowledge_id is not None:
        return [(args.knowledge_id, None, [experience.load_knowledge(args.knowledge, args.knowledge_id)])]
    in_pool = [r for r in records if r.get("in_pool")]
    empty = [r["knowledge_id"] for r in in_pool if not experience.has_text(r.get("knowledge"))]
    if in_pool and len(empty) == len(in_pool):
        raise cli.InputError(f"{args.knowledge}: every pool entry is empty ({', '.join(empty[:5])})")
    if empty:  # as distill.py does: a chain that wrote nothing is no teacher's context
        print(f"evaluate | {args.knowledge}: dropped {len(empty)} of {len(in_pool)} empty pool entries: {empty[:5]}")
    ids = [r["knowledge_id"] for r in in_pool if experience.has_text(r.get("knowledge"))] or [
        experience.load_knowledge(args.knowledge)[0]
    ]
    pool = [experience.load_knowledge(args.knowledge, i) for i in dict.fromkeys(ids)]  # each checked: a text, not empty
    return [("pool" if len(pool) > 1 else pool[0][0], None, pool)]


def draw(entries, game, seed):
    """The pool entry a game plays with: drawn from the game's name and the seed, so a game gets the
    same entry every round and the draw does not depend on which other games are played."""
    return entries[random.Random(f"{seed}:{game}").randrange(len(entries))]


def play_set(model, tokenizer, game_ids, args, plans, name):
    """Play the games once per plan; per-episode records and one summary each."""
    agent = play.model_agent(model, tokenizer, **{k: getattr(args, k) for k in SAMPLING})
    options = {k: getattr(args, k) for k in PLAY_FLAGS}
    records, summaries = [], []
    for knowledge_id, step, entries in plans:
        groups = collections.defaultdict(list)  # entry -> its games: one lock-step play per entry
        for game in game_ids:
            groups[draw(entries, games.name(game), args.seed)].append(game)
        random.seed(args.seed)
        torch.manual_seed(args.seed)  # the same sampling noise for every plan
        played = []
        for (entry_id, text), group in groups.items():
            part, _ = play.play(agent, group, **options, knowledge=text, desc=f"eval {name} {entry_id or ''}")
            played += [dict(r, kind="game", eval_set=name, knowledge_id=entry_id, knowledge=text) for r in part]
        order = {game: i for i, game in enumerate(game_ids)}
        played.sort(key=lambda r: (order[r["game_id"]], r["episode"]))
        records += played
        summaries.append(dict(knowledge_id=knowledge_id, step=step, **game_metrics(played)))
        turns = [t for r in played for t in r["turns"]]  # replies that used every token allowed: cut, or just fit
        summaries[-1]["cut"] = sum(t["response_tokens"] >= args.max_new_tokens for t in turns) / max(len(turns), 1)
        if len(entries) > 1:  # the spread over the pool: [won, episodes] per entry
            won = {e: [r["won"] for r in played if r["knowledge_id"] == e] for e, _ in groups}
            summaries[-1]["won_by_knowledge"] = {e: [sum(w), len(w)] for e, w in won.items()}
    return records, summaries


def ifeval_set(model, tokenizer, args, prompts):
    """Answer every prompt (batched, seeded) and check its instructions with IFEval's own checker."""
    thinking, sampling = bool(args.ifeval_thinking), (args.ifeval_temperature, args.ifeval_top_p, args.ifeval_top_k)
    texts = [lm.chat_text(tokenizer, [{"role": "user", "content": p["prompt"]}], thinking) for p in prompts]
    torch.manual_seed(args.seed)
    outputs = []
    for i in tqdm(range(0, len(texts), args.batch_size), desc="eval ifeval", disable=args.quiet, leave=False):
        outputs += lm.generate(model, tokenizer, texts[i : i + args.batch_size], args.ifeval_max_new_tokens, *sampling)
    records = []
    for p, (response, n_tokens) in zip(prompts, outputs):
        answer = lm.split_thinking(response)[1]  # the checker reads the answer, not the reasoning
        strict, loose = ifeval.check(p, answer)
        record = dict(
            kind="prompt", eval_set="ifeval", **{k: p[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")}
        )
        record.update(response=response, response_tokens=n_tokens, answer=answer, followed=strict, followed_loose=loose)
        records.append(dict(record, cut=n_tokens >= args.ifeval_max_new_tokens))
    return records, [dict(knowledge_id=None, **ifeval_metrics(records))]


# ----------------------------------------------------------------------------- main


def check(args):
    """What the arguments alone can refuse (also `--check`, loop.sh's start-up check)."""
    if args.out and len(args.sets) > 1:
        raise cli.InputError("--out names one file: use --out-dir with several --sets")
    if (args.knowledge or args.knowledge_curve is not None) and "ifeval" in args.sets:
        raise cli.InputError("--knowledge is for the game sets (id, ood), not ifeval")
    if set(args.sets) - {"ifeval"}:
        games.check_family(args.family, args.max_turns)


def main(args):
    if args.report:
        return report.write_report(args.report, args.out_dir)
    check(args)
    lm.check_model(args.model)
    todo = runfolder.claim_outputs([output_path(args, name) for name in args.sets], args, stage="evaluate")
    todo = [name for name in args.sets if output_path(args, name) in todo]  # one writer; what exists is kept
    if not todo:
        return []
    # 1. what is evaluated, every input checked before the model loads: the held-out games (the same every
    # round), the OOD games, the knowledge each game plays with (none, the pool, one entry or a chain's
    # snapshots), IFEval's prompts
    n = lambda name: (args.n_ood or args.n) if name == "ood" else args.n
    paths = {
        name: games.game_set(
            args.family, name, n(name), games_dir=args.games_dir, folder=args.games, game_split=args.game_split
        )
        for name in todo
        if name != "ifeval"
    }
    plans = knowledge_plans(args) if paths else None
    prompts = ifeval.load_prompts(args.ifeval_n, args.ifeval_file) if "ifeval" in todo else None
    if prompts is not None and len(prompts) < args.ifeval_n:
        raise cli.InputError(f"--ifeval-n {args.ifeval_n}: the prompt file has {len(prompts)} prompts (0 = all)")
    # 2. one model load for every set: play the games (pass rate, turns, tokens per turn) or answer IFEval's
    # prompts (prompt-level strict accuracy), then one file per set: per-game records and the summaries
    model, tokenizer = lm.load_model(args.model, args.device, quiet=args.quiet)
    all_summaries = []
    for name in todo:
        out, start = output_path(args, name), time.time()
        if name == "ifeval":
            records, summaries = ifeval_set(model, tokenizer, args, prompts)
            settings = {k: getattr(args, k) for k in IFEVAL_FLAGS}
        else:
            records, summaries = play_set(model, tokenizer, paths[name], args, plans, name)
            settings = {
                k: getattr(args, k) for k in SAMPLING + PLAY_FLAGS + ["seed", "family", "game_split"] if k != "quiet"
            }
        run = args.run or runfolder.run_name(out)
        for r in records:
            r.update(run=run, round=args.round, model=args.model)
        seconds = round(time.time() - start, 1)
        for s in summaries:
            s.update(kind="summary", eval_set=name, run=run, round=args.round, model=args.model, seconds=seconds)
            s["settings"] = settings
        jsonl.write_jsonl(out, records + summaries)
        if not args.quiet:
            show_sample(records[0])
        for s in summaries:
            print(summary_line(s) + f" | {s['seconds']:.0f} s | {out}")
        all_summaries += summaries
    return all_summaries


def show_sample(record):
    """One game as a person reads it, or one IFEval prompt with its answer and verdicts."""
    if record["kind"] == "game":
        return play.show_trajectory(record)
    print(
        f"--- sample: IFEval prompt {record['key']} ---\n{record['prompt']}\n[model] {record['response'][:800]}\n"
        f"followed (strict): {dict(zip(record['instruction_id_list'], record['followed']))}\n---"
    )


def summary_line(s):
    ci = lambda key: "[{:.2f}, {:.2f}]".format(*s[key + "_ci"])
    if s["eval_set"] == "ifeval":
        fields = [
            f"prompts {s['n']}",
            f"prompt-level strict {s['prompt_accuracy']:.2f} {ci('prompt_accuracy')}",
            f"instruction-level {s['instruction_accuracy']:.2f}",
            f"loose {s['prompt_accuracy_loose']:.2f}",
            f"tokens {s['tokens_per_response']:.0f}",
            f"cut {s['cut']:.2f}",
        ]
    else:
        fields = [
            f"knowledge {s['knowledge_id']}",
            f"games {s['games']} x {s['n'] // s['games']} episodes" if s["n"] > s["games"] else f"games {s['n']}",
            f"pass {s['pass_rate']:.2f} {ci('pass_rate')}",
            f"score {s['score']:.2f}",
            f"turns {s['turns']:.1f}",
            f"tokens/turn {s['tokens_per_turn']:.1f} {ci('tokens_per_turn')}",
            f"valid {s['valid']:.2f}",
        ]
    return " | ".join([f"evaluate {s['eval_set']}", f"round {s['round']}", *fields])


if __name__ == "__main__":
    cli.run_main(main, parse_args(), check)
