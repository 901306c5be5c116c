"""Stage 1 of the OEL loop: the current policy plays TextWorld games and its trajectories are recorded.

All unfinished games advance in lock-step: each turn is one batched `generate` over every game still
running (left padding). The turn prompt (games.render_turn) holds short instructions, the goal, the
running log of commands and replies (oldest turns dropped) and, optionally, the admissible commands.
Played without knowledge these trajectories feed extraction (extraction games) and distillation
(deployment games: their turn prompts are the student's inputs); with `--knowledge` the knowledge text
goes in exactly where the distillation teacher sees it.

    python collect.py --preset train --n 16 --split extract --out runs/demo/round_1/extract.jsonl

Simplified relative to the paper: TextWorld instead of TextArena; HF `generate` instead of vLLM; the
answer may be mapped to the closest listed command (`--match closest`) because small models rarely
type one exactly (both the typed and the sent command are recorded).
"""

import argparse
import os
import random
import time

import torch
from tqdm import tqdm

import common
import games

# ----------------------------------------------------------------------------- arguments


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_model_args(p)
    p.add_argument("--games", default=None, help="play every finished game in this folder (instead of --preset)")
    p.add_argument(
        "--preset", default="train", choices=sorted(games.PRESETS), help="game set to make (or reuse) and play"
    )
    p.add_argument("--n", type=common.positive_int, default=16, help="number of games in the set (with --preset)")
    p.add_argument("--round", type=int, default=0, help="round number: picks fresh training seeds and is recorded")
    p.add_argument(
        "--split", default="extract", choices=sorted(games.SPLIT_OFFSET), help="training split (train preset only)"
    )
    p.add_argument("--games-dir", default="games", help="cache folder for generated games")
    p.add_argument("--episodes", type=common.positive_int, default=1, help="episodes per game")
    p.add_argument("--max-turns", type=common.positive_int, default=15, help="turn limit per episode")
    p.add_argument(
        "--max-new-tokens",
        type=common.positive_int,
        default=24,
        help="response length cap per turn (raise it for thinking models)",
    )
    p.add_argument("--batch-size", type=common.positive_int, default=64, help="most games in one generate call")
    p.add_argument("--history", type=int, default=8, help="turns of the log shown in the prompt (0 = all)")
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
    p.add_argument("--quiet", action="store_true", help="no sample trajectory, no progress bar")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- helpers


def load_knowledge(path, knowledge_id=None):
    """(knowledge_id, text) from a knowledge JSONL (extract.py) or a plain text file.

    From a JSONL: the record whose `knowledge_id` is asked for, else the first pool entry
    (`in_pool` true), else the last record.
    """
    if path is None:
        return None, None
    if not path.endswith(".jsonl"):
        return os.path.basename(path), common.read_text(path, "knowledge file")
    records = common.read_jsonl(path, required=("knowledge_id", "knowledge"))
    if not records:
        raise common.InputError(f"{path}: no knowledge records")
    if knowledge_id is not None:
        chosen = [r for r in records if r["knowledge_id"] == knowledge_id]
        if not chosen:
            raise common.InputError(f"{path}: no record with knowledge_id {knowledge_id!r}")
    else:
        chosen = [r for r in records if r.get("in_pool")] or records[-1:]
    return chosen[0]["knowledge_id"], chosen[0]["knowledge"]


def choose_command(response, admissible, match):
    """(answer, command sent, status, valid) for one response. Never raises."""
    _, answer = common.split_thinking(response)
    typed, status = games.parse_command(answer)
    valid = typed in admissible
    command = typed
    if status != "empty" and not valid and match == "closest":
        command = games.closest_command(typed, admissible) or typed
        status = "closest" if command != typed else status
    return answer, command, status, valid


def model_agent(model, tokenizer, args):
    """The policy: chat messages of many games -> one batched generate -> [(response, n_tokens)]."""

    def act(episodes, messages):
        prompts = [common.chat_text(tokenizer, m, args.thinking) for m in messages]
        return common.generate(model, tokenizer, prompts, args.max_new_tokens, args.temperature, args.top_p, args.top_k)

    return act


def play(agent, paths, args, knowledge=None, desc="play"):
    """Play every (game, episode) in lock-step; returns one record per episode (see README) and stats."""
    episodes = [(path, e, games.Episode(path)) for path in paths for e in range(args.episodes)]
    turns = [[] for _ in episodes]
    stats = dict(tokens=0, gen_seconds=0.0)
    bar = tqdm(total=len(episodes), desc=desc, disable=args.quiet, leave=False)
    step = args.batch_size if args.lockstep else 1
    for t in range(args.max_turns):
        active = [i for i, (_, _, ep) in enumerate(episodes) if not ep.done]
        for start in range(0, len(active), step):
            chunk = [episodes[i][2] for i in active[start : start + step]]
            messages = [render(ep, args, knowledge) for ep in chunk]
            t0 = time.time()
            outs = agent(chunk, messages)
            stats["gen_seconds"] += time.time() - t0
            for i, ep, m, (response, n_tokens) in zip(active[start : start + step], chunk, messages, outs):
                answer, command, status, valid = choose_command(response, ep.admissible, args.match)
                if command:
                    reply = ep.step(command)
                else:  # nothing to send: the turn is spent, the game is untouched
                    reply = "(no command was given)"
                    ep.history.append(("", reply))
                turns[i].append(
                    dict(
                        turn=t,
                        messages=m,
                        response=response,
                        response_tokens=n_tokens,
                        answer=answer,
                        command=command,
                        command_status=status,
                        valid=valid,
                        reply=reply,
                        score=ep.score,
                    )
                )
                stats["tokens"] += n_tokens
                bar.update(int(ep.done))
    bar.close()
    records = []
    for (path, e, ep), ts in zip(episodes, turns):
        records.append(
            dict(
                game=os.path.basename(path)[:-3],
                game_file=path,
                episode=e,
                objective=ep.objective,
                intro=ep.intro,
                turns=ts,
                won=ep.won,
                lost=ep.lost,
                score=ep.score,
                max_score=ep.max_score,
                turns_used=len(ts),
                feedback=games.feedback_line(ep, args.max_turns),
            )
        )
        ep.close()
    return records, stats


def render(episode, args, knowledge):
    """The turn prompt for an episode's current state (the one place prompt options are applied)."""
    admissible = episode.admissible if args.list_commands else None
    return games.render_turn(
        episode.objective, episode.history, admissible, knowledge, args.history, example=not args.no_example
    )


def summarize(records, stats):
    """Pass rate, valid-command rate, tokens per turn, turns per game, tokens/s."""
    all_turns = [t for r in records for t in r["turns"]]
    n_turns = max(len(all_turns), 1)
    return dict(
        games=len(records),
        won=sum(r["won"] for r in records) / max(len(records), 1),
        valid=sum(t["valid"] for t in all_turns) / n_turns,
        empty=sum(t["command_status"] == "empty" for t in all_turns) / n_turns,
        multi=sum(t["command_status"] == "multi" for t in all_turns) / n_turns,
        tokens_per_turn=sum(t["response_tokens"] for t in all_turns) / n_turns,
        turns=sum(r["turns_used"] for r in records) / max(len(records), 1),
        tokens_per_s=stats["tokens"] / max(stats["gen_seconds"], 1e-9),
        turns_per_s=len(all_turns) / max(stats["gen_seconds"], 1e-9),
    )


def show_trajectory(record):
    """Print one trajectory the way a person reads a game."""
    print(
        f"--- sample: {record['game']} (episode {record['episode']}) ---\nGoal: {record['objective']}\n{record['intro']}"
    )
    for t in record["turns"]:
        print(
            f"[model] {t['response']!r} -> sent {t['command']!r} ({t['command_status']}{', valid' if t['valid'] else ''})\n{t['reply']}"
        )
    print(record["feedback"] + "\n---")


# ----------------------------------------------------------------------------- main


def game_paths(folder, games_dir, preset, n, round_=0, split="extract"):
    """Every finished game in `folder`, or the preset's set made (or reused) under games_dir; each
    checked, so that a broken game fails before a model is loaded."""
    try:
        if folder:
            paths = games.list_games(folder)
        else:
            paths = games.make_games(os.path.join(games_dir, preset), games.game_specs(preset, n, round_, split))
        for path in paths:
            games.check_story_file(path)
    except (OSError, ValueError) as e:
        raise common.InputError(str(e))
    return paths


def main(args):
    common.claim_outputs(args.out, args)  # one writer per run folder; an output made otherwise is refused
    paths = game_paths(args.games, args.games_dir, args.preset, args.n, args.round, args.split)
    knowledge_id, knowledge = load_knowledge(args.knowledge, args.knowledge_id)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model, tokenizer = common.load_model(args.model, args.device, quiet=args.quiet)
    try:
        records, stats = play(
            model_agent(model, tokenizer, args), paths, args, knowledge, desc=f"collect {os.path.basename(args.out)}"
        )
    except ValueError as e:
        raise common.InputError(str(e))
    run = args.run or common.run_name(args.out)
    for r in records:
        r.update(run=run, round=args.round, model=args.model, knowledge_id=knowledge_id, knowledge=knowledge)
    common.write_jsonl(args.out, records)
    s = summarize(records, stats)
    if not args.quiet:
        show_trajectory(records[0])
    print(
        f"collect | games {s['games']} | won {s['won']:.2f} | valid {s['valid']:.2f} | empty {s['empty']:.2f} | "
        f"turns {s['turns']:.1f} | tokens/turn {s['tokens_per_turn']:.1f} | tokens/s {s['tokens_per_s']:.0f} | {args.out}"
    )
    return records, s


if __name__ == "__main__":
    common.run_main(main, parse_args())
