"""What a player needs, shared by collect.py and evaluate.py: the turn prompt, reading the command out of
the model's answer, and the play loop over a set of games (the games themselves are oel/games.py's).

The turn prompt is a system message, one example exchange, then the goal, the running log of commands
and replies (oldest turns dropped) and, optionally, the admissible commands. Knowledge goes in only
through `insert_knowledge`, which distill.py also uses to build the teacher's prompt, so the policy and
the teacher see it in exactly the same place.
"""

import os
import re
import time

from tqdm import tqdm

from oel import cli, games, lm

# ----------------------------------------------------------------------------- the turn prompt

SYSTEM_PROMPT = (
    "You are playing a text adventure game. Each turn you read what happened and type the next "
    "command, a short verb phrase such as: go north, take key, open door, unlock door with key. "
    "Reply with one command and nothing else."
)
# One example exchange before the real turn: the small default model copies its form (a bare command).
EXAMPLE_TURN = (
    "Goal: Find the lamp in the attic.\n\n"
    "Game:\n-= Hallway =-\nYou are in a hallway. A ladder leads up.\n\n"
    "Commands you can use: examine ladder, go up, inventory, look\n\n"
    "Your command:"
)
EXAMPLE_ANSWER = "go up"
TURN_PROMPT = "Goal: {objective}\n\nGame:\n{log}\n\n{commands}Your command:"
KNOWLEDGE_BLOCK = "What you learned from earlier games:\n{knowledge}\n\n"


def render_log(history, max_turns):
    """The running log: the last `max_turns` (command, reply) pairs, oldest dropped first."""
    shown = history[-max_turns:] if max_turns else history
    lines = ["(earlier turns not shown)"] if len(shown) < len(history) else []
    for command, reply in shown:
        lines.append(reply if command is None else f"> {command}\n{reply}")
    return "\n\n".join(lines)


def render_turn(objective, history, admissible=None, knowledge=None, max_turns=8, example=True):
    """The chat messages of one turn. Knowledge, if any, goes in through `insert_knowledge`, the
    same function distillation uses to build the teacher's prompt from a stored student prompt."""
    commands = f"Commands you can use: {', '.join(admissible)}\n\n" if admissible else ""
    user = TURN_PROMPT.format(
        objective=objective or "(not stated)", log=render_log(history, max_turns), commands=commands
    )
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    if example:
        messages += [{"role": "user", "content": EXAMPLE_TURN}, {"role": "assistant", "content": EXAMPLE_ANSWER}]
    messages.append({"role": "user", "content": user})
    return insert_knowledge(messages, knowledge)


def insert_knowledge(messages, knowledge):
    """Messages with the knowledge text at the start of the last user turn (before the assistant
    marker); no knowledge leaves them unchanged. Returns a new list."""
    messages = [dict(m) for m in messages]
    if knowledge:
        messages[-1]["content"] = KNOWLEDGE_BLOCK.format(knowledge=knowledge.strip()) + messages[-1]["content"]
    return messages


def pair_prompts(tokenizer, messages, knowledge, thinking, where):
    """(student prompt, teacher prompt): the same turn without and with the knowledge. A teacher prompt
    that lacks the knowledge text, or equals the student's, is an error: the KL would teach nothing."""
    student = lm.chat_text(tokenizer, messages, thinking)
    teacher = lm.chat_text(tokenizer, insert_knowledge(messages, knowledge), thinking)
    if knowledge.strip() not in teacher or teacher == student:
        raise cli.InputError(f"{where}: the teacher's prompt does not carry the knowledge (check the chat template)")
    return student, teacher


# ----------------------------------------------------------------------------- reading the command

SEPARATORS = re.compile(r"\s*(?:;|\n|,|\. | and then | then )\s*")


def parse_command(answer):
    """(command, status) from the model's final answer (after any </think>).

    The last `[...]` wins if there is one, else the first non-empty line. Only one command is ever
    sent: "open door then go east" (or "open door, go east") sends "open door" with status 'multi'
    (TextWorld would run both).
    status: 'ok', 'multi', or 'empty' (nothing usable; command is '').
    """
    brackets = re.findall(r"\[([^\[\]]+)\]", answer)
    text = brackets[-1] if brackets else answer.strip()
    text = re.sub(r"^(?:your )?(?:next )?command\s*:\s*", "", text.strip(), flags=re.I)
    parts = [p for p in (re.sub(r"[^a-z0-9' -]", " ", p.lower()) for p in SEPARATORS.split(text)) if p.strip()]
    if not parts:
        return "", "empty"
    command = " ".join(parts[0].split())
    return command, ("multi" if len(parts) > 1 else "ok")


def closest_command(command, admissible):
    """The admissible command sharing the most words with `command` (ties: shorter, then first);
    None if no word is shared. Used only when the commands are listed in the prompt."""
    words = set(command.split())
    best, best_key = None, (0, 0)
    for candidate in admissible:
        shared = len(words & set(candidate.split()))
        key = (shared, -len(candidate.split()))
        if shared and key > best_key:
            best, best_key = candidate, key
    return best


def choose_command(response, admissible, match):
    """(answer, command sent, status, valid) for one response. Never raises."""
    _, answer = lm.split_thinking(response)
    typed, status = parse_command(answer)
    valid = typed in admissible
    command = typed
    if status != "empty" and not valid and match == "closest":
        command = closest_command(typed, admissible) or typed
        status = "closest" if command != typed else status
    return answer, command, status, valid


# ----------------------------------------------------------------------------- playing a game set


def model_agent(model, tokenizer, *, thinking, max_new_tokens, temperature, top_p, top_k):
    """The policy: chat messages of many games -> one batched generate -> [(response, n_tokens)]."""

    def act(episodes, messages):
        prompts = [lm.chat_text(tokenizer, m, thinking) for m in messages]
        return lm.generate(model, tokenizer, prompts, max_new_tokens, temperature, top_p, top_k)

    return act


def feedback_line(episode, max_turns):
    """The closing line shown to the extractor: won, lost or turn limit, and the game's last words."""
    last = episode.history[-1][1].replace("\n", " ")[-300:]
    turns = len(episode.history) - 1
    if episode.won:
        return f"Result: WON in {turns} turns (score {episode.score}/{episode.max_score}). The game said: {last}"
    if episode.lost:
        return f"Result: LOST after {turns} turns (score {episode.score}/{episode.max_score}). The game said: {last}"
    return (
        f"Result: NOT FINISHED, the turn limit of {max_turns} turns ran out "
        f"(score {episode.score}/{episode.max_score}). The last reply was: {last}"
    )


def play(
    agent,
    paths,
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
    games (one game per call if not `lockstep`). Returns one record per episode (see README) and
    stats (generated tokens, seconds spent in the agent)."""
    running = [(path, e, games.Episode(path)) for path in paths for e in range(episodes)]
    turns = [[] for _ in running]
    stats = dict(tokens=0, gen_seconds=0.0)
    bar = tqdm(total=len(running), desc=desc, disable=quiet, leave=False)
    step = batch_size if lockstep else 1
    for t in range(max_turns):
        active = [i for i, (_, _, ep) in enumerate(running) if not ep.done]
        for start in range(0, len(active), step):
            chunk = [running[i][2] for i in active[start : start + step]]
            messages = [
                render_turn(
                    ep.objective, ep.history, ep.admissible if list_commands else None, knowledge, history, example
                )
                for ep in chunk
            ]
            t0 = time.time()
            outs = agent(chunk, messages)
            stats["gen_seconds"] += time.time() - t0
            for i, ep, m, (response, n_tokens) in zip(active[start : start + step], chunk, messages, outs):
                answer, command, status, valid = choose_command(response, ep.admissible, match)
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
    for (path, e, ep), ts in zip(running, turns):
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
