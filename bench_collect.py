"""Benchmark: rollout throughput of lock-step play (one batched generate per turn over every running
game) against one-game-at-a-time play, on the same games, model and greedy decoding, in one run.

    python bench_collect.py --n 16 --max-turns 3            # default model, eval games
    python bench_collect.py --model Qwen/Qwen3-0.6B --n 64  # on a GPU

Prints generated tokens/s, prompt tokens/s and turns/s for both modes and their ratio.
"""

import argparse
import time

import torch

import common
import games


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=common.DEFAULT_MODEL, help="model to play with")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--n", type=int, default=16, help="games played at once")
    p.add_argument("--max-turns", type=int, default=3, help="turns per game")
    p.add_argument("--max-new-tokens", type=int, default=24, help="response cap per turn")
    p.add_argument("--games-dir", default="games", help="game cache folder (eval preset)")
    return p.parse_args()


def measure(model, tokenizer, paths, args, lockstep):
    """Play once, greedy; return (seconds, generated tokens, prompt tokens, turns, commands)."""
    agent = games.model_agent(
        model, tokenizer, thinking=False, max_new_tokens=args.max_new_tokens, temperature=0, top_p=1.0, top_k=0
    )
    prompt_tokens = [0]

    def counting_agent(episodes, messages):  # count prompt tokens (padding excluded) as well
        prompt_tokens[0] += sum(
            len(tokenizer(common.chat_text(tokenizer, m), add_special_tokens=False).input_ids) for m in messages
        )
        return agent(episodes, messages)

    start = time.time()
    records, stats = games.play(
        counting_agent, paths, max_turns=args.max_turns, history=8, batch_size=64, lockstep=lockstep, quiet=True
    )
    seconds = time.time() - start
    turns = [t for r in records for t in r["turns"]]
    return seconds, stats["tokens"], prompt_tokens[0], len(turns), [[t["command"] for t in r["turns"]] for r in records]


def main(args):
    paths = games.make_set(args.games_dir, "eval", args.n)
    model, tokenizer = common.load_model(args.model, args.device)
    print(
        f"threads {torch.get_num_threads()} | games {len(paths)} | turns {args.max_turns} | max new tokens {args.max_new_tokens}"
    )
    results = {}
    for mode, lockstep in (("lock-step", True), ("one at a time", False)):
        results[mode] = measure(model, tokenizer, paths, args, lockstep)
        s, gen, prompt, turns, _ = results[mode]
        print(
            f"{mode:>14} | {s:7.1f} s | gen tokens/s {gen / s:7.1f} | prompt tokens/s {prompt / s:7.1f} | turns/s {turns / s:6.2f}"
        )
    (s1, g1, _, t1, c1), (s0, g0, _, t0, c0) = results["lock-step"], results["one at a time"]
    print(
        f"ratio lock-step / one-at-a-time | gen tokens/s {(g1 / s1) / (g0 / s0):.2f}x | turns/s {(t1 / s1) / (t0 / s0):.2f}x"
        f" | same commands: {c1 == c0}"
    )


if __name__ == "__main__":
    main(parse_args())
