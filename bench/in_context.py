"""Benchmark: does the policy's play move with what it is told? One model plays one held-out set under several
conditions, paired over the same games and seeds: a knowledge text in context or none, a response cap, a turn
prompt variant. Prints, per condition, the pass rate, the share of turns whose move was invalid (a wall, or no
move found), the share with no move found, the moves chosen, tokens per turn, replies at the cap, and the
pass rate's paired change from the first condition (exact sign-flip p over games).

    python bench/in_context.py --family frozenlake --game-split paper --n 128 \\
        --condition none --condition correct:bench/hints/frozenlake_correct.txt \\
        --condition wrong:bench/hints/frozenlake_wrong.txt
    python bench/in_context.py --family frozenlake --n 64 --condition none:cap=24 --condition none:cap=64 \\
        --condition none:cap=64:prompt=move-only

A condition is NAME[:FILE][:cap=N][:prompt=VARIANT]: NAME `none` plays without knowledge, any other name with the
text of FILE in context (inserted as the distillation teacher sees it). Prompt variants of the paper's games'
turn prompt: `default` (oel/arena_games.py), `move-only` (ends asking for the move alone, no example move).
"""

import argparse
import collections
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from oel import arena_games, cli, games, jsonl, lm, play, stats  # noqa: E402

PROMPTS = {
    "default": arena_games.TURN_PROMPT,
    "move-only": (
        "{instruction}\n\nThe game so far:\n{log}\n\nReply with your move only, in square brackets.\n\nYour move:"
    ),
}


def condition(text):
    """argparse type: NAME[:FILE][:cap=N][:prompt=VARIANT] -> dict."""
    name, *parts = text.split(":")
    spec = dict(name=name, file=None, cap=None, prompt="default")
    for part in parts:
        key, _, value = part.partition("=")
        if not value:
            spec["file"] = key
        elif key == "cap" and value.isdigit() and int(value) > 0:
            spec["cap"] = int(value)
        elif key == "prompt" and value in PROMPTS:
            spec["prompt"] = value
        else:
            raise argparse.ArgumentTypeError(f"{text}: expected NAME[:FILE][:cap=N][:prompt={'|'.join(PROMPTS)}]")
    if (name == "none") != (spec["file"] is None):
        raise argparse.ArgumentTypeError(f"{text}: 'none' takes no file; any other name needs a knowledge file")
    return spec


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_model_args(p)
    p.set_defaults(top_p=0.8, top_k=20)  # the authors' play sampling
    p.add_argument("--family", type=games.family_arg, default="frozenlake", help=games.FAMILY_HELP)
    p.add_argument("--game-split", default="paper", choices=games.SPLITS, help=games.SPLIT_HELP)
    p.add_argument("--set", default="id", choices=games.SETS, help=games.SET_HELP)
    p.add_argument("--n", type=cli.positive_int, default=64, help="games")
    p.add_argument("--episodes", type=cli.positive_int, default=1, help="episodes per game")
    p.add_argument("--max-turns", type=cli.positive_int, default=arena_games.TURN_CAP, help="turn limit")
    p.add_argument("--history", type=cli.nonneg_int, default=0, help="moves of the log shown (0 = all)")
    p.add_argument("--max-new-tokens", type=cli.positive_int, default=64, help="response cap (a condition's cap=)")
    p.add_argument("--batch-size", type=cli.positive_int, default=32, help="games in one generate")
    p.add_argument(
        "--condition", type=condition, action="append", required=True, help="see above; the first is the base"
    )
    p.add_argument("--out", default=None, help="also write each condition's games and summary here (JSONL)")
    return p.parse_args(argv)


def turn_summary(records, cap):
    """Shares over all turns: invalid moves (the env said so, or no move was found), no move found, replies at
    the cap, and the moves chosen."""
    turns = [t for r in records for t in r["turns"]]
    n = max(len(turns), 1)
    moves = collections.Counter(t["command"] for t in turns if t["valid"])
    return dict(
        turns=len(turns),
        invalid=sum("invalid move" in t["reply"] or not t["valid"] for t in turns) / n,
        no_move=sum(not t["valid"] for t in turns) / n,
        cut=sum(t["response_tokens"] >= cap for t in turns) / n,
        tokens_per_turn=sum(t["response_tokens"] for t in turns) / n,
        moves={m: round(k / n, 3) for m, k in moves.most_common()},
    )


def main(args):
    games.check_family(args.family, args.max_turns)
    game_ids = games.game_set(args.family, args.set, args.n, game_split=args.game_split)
    texts = {c["name"]: jsonl.read_text(c["file"], "knowledge file") for c in args.condition if c["file"]}
    model, tokenizer = lm.load_model(args.model, args.device, quiet=True)
    default_prompt = arena_games.TURN_PROMPT
    try:
        return play_conditions(args, model, tokenizer, texts, game_ids)
    finally:
        arena_games.TURN_PROMPT = default_prompt  # a prompt variant never outlives its run


def play_conditions(args, model, tokenizer, texts, game_ids):
    """Each condition in turn on the same games and sampling noise: its summary row, printed as it finishes."""
    base, rows = None, []
    for c in args.condition:
        cap = c["cap"] or args.max_new_tokens
        arena_games.TURN_PROMPT = PROMPTS[c["prompt"]]
        agent = play.model_agent(
            model, tokenizer, thinking=args.thinking, max_new_tokens=cap, temperature=args.temperature,
            top_p=args.top_p, top_k=args.top_k,
        )  # fmt: skip
        torch.manual_seed(args.seed)  # the same sampling noise in every condition: paired
        start = time.time()
        records, _ = play.play(
            agent, game_ids, max_turns=args.max_turns, history=args.history, batch_size=args.batch_size,
            episodes=args.episodes, knowledge=texts.get(c["name"]), quiet=True,
        )  # fmt: skip
        won = sum(r["won"] for r in records)
        row = dict(
            condition=c,
            games=len(game_ids),
            pass_rate=won / len(records),
            pass_rate_ci=stats.wilson(won, len(records)),
        )
        row.update(turn_summary(records, cap), seconds=round(time.time() - start))
        if base is None:
            base = records
        else:
            row["paired"] = stats.paired_difference(base, records)
        rows.append(row)
        if args.out:
            jsonl.append_jsonl(args.out, dict(row, records=records))
        print(summary_line(row), flush=True)
    return rows


def summary_line(row):
    c, d = row["condition"], row.get("paired")
    paired = f" | Δ pass {d['diff']:+.3f} p={d['p']:.3f} ({d['better']} better, {d['worse']} worse)" if d else ""
    return (
        f"{c['name']} cap={c['cap'] or '-'} prompt={c['prompt']} | pass {row['pass_rate']:.3f} "
        "[{:.3f}, {:.3f}]".format(*row["pass_rate_ci"])
        + f" | invalid {row['invalid']:.3f} | no move "
        f"{row['no_move']:.3f} | at cap {row['cut']:.3f} | tokens/turn {row['tokens_per_turn']:.1f} | turns "
        f"{row['turns']} | moves {json.dumps(row['moves'])}{paired} | {row['seconds']} s"
    )


if __name__ == "__main__":
    cli.run_main(main, parse_args())
