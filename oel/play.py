"""What a player needs, shared by collect.py and evaluate.py: knowledge in the prompt, the policy, and the play
loop over a set of games of any family (each game's turn prompt and how its answer is read are its episode's:
oel/games.py, oel/textworld_games.py, oel/arena_games.py).

Knowledge goes into a turn prompt only through `experience.insert_knowledge`, which distill.py also uses to build
the teacher's prompt from a stored student prompt, so the policy and the teacher see it in exactly the same place.
"""

import time

from tqdm import tqdm

from oel import experience, games, lm

# ----------------------------------------------------------------------------- playing a game set


def model_agent(model, tokenizer, *, thinking, max_new_tokens, temperature, top_p, top_k):
    """The policy: chat messages of many games -> one batched generate -> [(response, n_tokens)]."""

    def act(episodes, messages):
        prompts = [lm.chat_text(tokenizer, m, thinking) for m in messages]
        return lm.generate(model, tokenizer, prompts, max_new_tokens, temperature, top_p, top_k)

    return act


def feedback_line(episode, max_turns):
    """The closing words shown to the extractor: how the game ended, and the game's last reply as it was shown
    (its line breaks kept: a board stays a board; a very long reply keeps its last 1,000 characters)."""
    last, turns = episode.history[-1][1][-1000:], len(episode.history) - 1
    score = f"score {episode.score}/{episode.max_score}"
    if episode.won:
        return f"Result: WON in {turns} turns ({score}). The game said:\n{last}"
    if episode.lost:
        return f"Result: LOST after {turns} turns ({episode.ended}, {score}). The game said:\n{last}"
    return f"Result: NOT FINISHED, the turn limit of {max_turns} turns ran out ({score}). The last reply was:\n{last}"


def play(
    agent,
    game_ids,
    *,
    max_turns,
    history,
    batch_size,
    episodes=1,
    list_commands=True,
    match="closest",
    example=True,
    lockstep=True,
    knowledge=None,
    quiet=False,
    desc="play",
):
    """Play every (game, episode) in lock-step: each turn, one `agent` call per `batch_size` running
    games (one game per call if not `lockstep`). A game is any family's id (oel/games.py): its episode
    renders the turn prompt and reads the answer; knowledge goes in here, through `insert_knowledge`.
    Returns one record per episode (docs/method.md) and stats (generated tokens, seconds in the agent)."""
    running = [(game, e, games.open_episode(game)) for game in game_ids for e in range(episodes)]
    turns = [[] for _ in running]
    stats = dict(tokens=0, gen_seconds=0.0)
    bar = tqdm(total=len(running), desc=desc, disable=quiet, leave=False)
    step = batch_size if lockstep else 1
    for t in range(max_turns):
        active = [i for i, (_, _, ep) in enumerate(running) if not ep.done]
        for start in range(0, len(active), step):
            chunk = [running[i][2] for i in active[start : start + step]]
            messages = [
                experience.insert_knowledge(
                    ep.turn_messages(history=history, list_commands=list_commands, example=example), knowledge
                )
                for ep in chunk
            ]
            t0 = time.time()
            outs = agent(chunk, messages)
            stats["gen_seconds"] += time.time() - t0
            for i, ep, m, (response, n_tokens) in zip(active[start : start + step], chunk, messages, outs):
                answer, command, status, valid = ep.choose(response, match)
                if command:
                    reply = ep.step(command)
                else:  # nothing to send: the turn is spent, the game is untouched
                    reply, ep.refusal = "(no command was given)", None
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
                        valid=valid and ep.refusal is None,  # the move was read, and the game took it
                        refusal=ep.refusal,
                        reply=reply,
                        score=ep.score,
                    )
                )
                stats["tokens"] += n_tokens
                bar.update(int(ep.done))
    bar.close()
    records = []
    for (game, e, ep), ts in zip(running, turns):
        arena = {"seed": ep.seed, "board": ep.board} if hasattr(ep, "board") else {}  # replayable, comparable
        records.append(
            dict(
                game=games.name(game),
                game_id=game,
                family=games.family_of(game),
                **arena,
                episode=e,
                objective=ep.objective,
                intro=ep.intro,
                turns=ts,
                won=ep.won,
                lost=ep.lost,
                score=ep.score,
                max_score=ep.max_score,
                turns_used=len(ts),
                ended=ep.ended or "turn limit",  # won, lost, hole, invalid moves, or turn limit
                feedback=feedback_line(ep, max_turns),
            )
        )
        ep.close()
    return records, stats


def summarize(records, stats):
    """Pass rate, valid-command rate, tokens per turn, turns per game, tokens/s."""
    all_turns = [t for r in records for t in r["turns"]]
    n_turns = max(len(all_turns), 1)
    return dict(
        games=len(records),
        won=sum(r["won"] for r in records) / max(len(records), 1),
        valid=sum(t["valid"] for t in all_turns) / n_turns,
        empty=sum(t["command_status"] == "empty" for t in all_turns) / n_turns,
        no_move=sum(t["command_status"] == "no move" for t in all_turns) / n_turns,
        multi=sum(t["command_status"] == "multi" for t in all_turns) / n_turns,
        tokens_per_turn=sum(t["response_tokens"] for t in all_turns) / n_turns,
        turns=sum(r["turns_used"] for r in records) / max(len(records), 1),
        tokens_per_s=stats["tokens"] / max(stats["gen_seconds"], 1e-9),
        turns_per_s=len(all_turns) / max(stats["gen_seconds"], 1e-9),
    )


def show_trajectory(record):
    """Print one trajectory the way a person reads a game."""
    print(f"--- sample: {record['game']} (episode {record['episode']}) ---")
    print(f"Goal: {record['objective']}\n{record['intro']}")
    for t in record["turns"]:
        valid = ", valid" if t["valid"] else ""
        print(f"[model] {t['response']!r} -> sent {t['command']!r} ({t['command_status']}{valid})\n{t['reply']}")
    print(record["feedback"] + "\n---")
