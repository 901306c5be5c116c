"""Stage 1 of the OEL loop: the current policy plays games and its trajectories are recorded.

All unfinished games advance in lock-step: each turn is one batched `generate` over every game still
running (left padding). The game family (`--family`: TextWorld by default, or the paper's FrozenLake and
Sokoban) renders the turn prompt and reads the command: for TextWorld short instructions, the goal, the
running log of commands and replies (oldest turns dropped) and, optionally, the admissible commands; for the
paper's games the instruction that hides the rules and every message since the reset.
Played without knowledge these trajectories feed extraction (extraction games) and distillation
(deployment games: their turn prompts are the student's inputs); with `--knowledge` the knowledge text
goes in exactly where the distillation teacher sees it.

    python collect.py --set extract --round 1 --n 16 --out runs/demo/round_1/extraction_trajectories.jsonl

Simplified relative to the paper: HF `generate` instead of vLLM; on TextWorld the answer may be mapped to
the closest listed command (`--match closest`) because small models rarely type one exactly (both the typed
and the sent command are recorded).
"""

import argparse
import os
import random

import torch

from oel import cli, experience, games, jsonl, lm, play, runfolder

# ----------------------------------------------------------------------------- arguments


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_model_args(p)
    p.add_argument("--family", type=games.family_arg, default="textworld", help=games.FAMILY_HELP)
    p.add_argument("--game-split", default="disjoint", choices=games.SPLITS, help=games.SPLIT_HELP)
    p.add_argument("--games", default=None, help="TextWorld: every finished game in this folder (not --set)")
    p.add_argument("--set", default="extract", choices=games.SETS, help=games.SET_HELP)
    p.add_argument("--n", type=cli.positive_int, default=16, help="number of games in the set")
    p.add_argument(
        "--round",
        type=cli.nonneg_int,
        default=0,
        help="round number: picks fresh training seeds and is recorded",
    )
    p.add_argument("--games-dir", default="games", help="cache folder for generated games")
    p.add_argument("--episodes", type=cli.positive_int, default=1, help="episodes per game")
    p.add_argument("--max-turns", type=cli.positive_int, help="turn limit (default: 5 for the paper's games, else 12)")
    p.add_argument(
        "--max-new-tokens",
        type=cli.positive_int,
        default=24,
        help="response length cap per turn (raise it for thinking models)",
    )
    p.add_argument("--batch-size", type=cli.positive_int, default=64, help="most games in one generate call")
    p.add_argument(
        "--history", type=cli.nonneg_int, help="turns of the log shown (0 = all; default: the paper's 0, else 4)"
    )
    p.add_argument(
        "--list-commands", type=int, default=1, choices=[0, 1], help="1: list the admissible commands in the prompt"
    )
    p.add_argument(
        "--match",
        default="closest",
        choices=["closest", "exact"],
        help="closest: map an unlisted answer to the listed command sharing most words",
    )
    p.add_argument("--no-example", action="store_true", help="leave out the example exchange before the real turn")
    p.add_argument(
        "--knowledge", default=None, help="knowledge JSONL (from extract.py) or a .txt file to place in every prompt"
    )
    p.add_argument(
        "--knowledge-id", default=None, help="which knowledge record of a JSONL to use (default: the first pool entry)"
    )
    p.add_argument(
        "--lockstep", type=int, default=1, choices=[0, 1], help="0: play one game at a time (for the benchmark)"
    )
    p.add_argument(
        "--run", default=None, help="run name recorded in every record (default: the folder holding round_R)"
    )
    p.add_argument("--out", default="trajectories.jsonl", help="output JSONL, one record per episode")
    p.add_argument("--force", action="store_true", help="play again if --out exists (else it is kept)")
    p.add_argument("--quiet", action="store_true", help="no sample trajectory, no progress bar")
    cli.renamed(p, "--preset", "--set (--preset train --split deploy is --set deploy; --preset eval is --set id)")
    cli.renamed(p, "--split", "--set extract or --set deploy")
    return games.fill_play_defaults(p.parse_args(argv))


# ----------------------------------------------------------------------------- main


def check(args):
    """What the arguments alone can refuse (also `--check`, loop.sh's start-up check): a family these turns cannot
    play or win."""
    games.check_family(args.family, args.max_turns)


def main(args):
    # refused before anything is made or written: a model that cannot load, a family that cannot be played, bad
    # knowledge; then one writer per run folder, and an output that exists is kept (--force plays again)
    check(args)
    lm.check_model(args.model)
    knowledge_id, knowledge = experience.load_knowledge(args.knowledge, args.knowledge_id, family=args.family)
    if not runfolder.claim_outputs(args.out, args, stage="collect"):
        return None

    # 1. the game set, made (or reused) and every game opened once
    paths = games.game_set(
        args.family, args.set, args.n, round_=args.round, games_dir=args.games_dir, folder=args.games,
        game_split=args.game_split,
    )  # fmt: skip
    # 2. the policy, sampling as asked; the knowledge (if any) goes into every turn prompt
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model, tokenizer = lm.load_model(args.model, args.device, quiet=args.quiet)
    agent = play.model_agent(
        model, tokenizer, thinking=args.thinking, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k,
    )  # fmt: skip
    # 3. every episode played in lock-step: one batched generate per turn over the games still running
    records, stats = play.play(
        agent, paths, max_turns=args.max_turns, history=args.history, batch_size=args.batch_size,
        episodes=args.episodes, list_commands=bool(args.list_commands), match=args.match, example=not args.no_example,
        lockstep=bool(args.lockstep), knowledge=knowledge, quiet=args.quiet, desc=os.path.basename(args.out),
    )  # fmt: skip
    # 4. the trajectories, one record per episode, with what made them
    run = args.run or runfolder.run_name(args.out)
    for r in records:
        r.update(run=run, round=args.round, set="folder" if args.games else args.set, model=args.model)
        r.update(knowledge_id=knowledge_id, knowledge=knowledge)
    jsonl.write_jsonl(args.out, records)
    return records, print_summary(records, stats, args)


def print_summary(records, stats, args):
    """A sample trajectory and the summary line; the summary."""
    s = play.summarize(records, stats)
    if not args.quiet:
        play.show_trajectory(records[0])
    print(
        f"collect | games {s['games']} | won {s['won']:.2f} | valid {s['valid']:.2f} | empty {s['empty']:.2f} | "
        f"turns {s['turns']:.1f} | tokens/turn {s['tokens_per_turn']:.1f} | tokens/s {s['tokens_per_s']:.0f} | "
        f"{args.out}"
    )
    return s


if __name__ == "__main__":
    cli.run_main(main, parse_args(), check)
