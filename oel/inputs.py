"""Every input a stage reads, checked before a model loads: trajectories for the extractor, turn prompts and the
knowledge pool for distillation (with the sequence lengths they make), one knowledge text for play. Each error
names the file, the line and what was expected.
"""

import os

from oel import cli, jsonl, lm, play

TURN_KEYS = ("turn", "response", "command", "reply")  # what the extractor reads of each turn


def family_of(records, path, kind):
    """The one game family of a file's records (`family`; files from before it was recorded: TextWorld)."""
    families = {r.get("family") or "textworld" for _, r in records}
    if len(families) > 1:
        raise cli.InputError(f"{path}: {kind} of several game families {sorted(families)}; expected one")
    return families.pop() if families else "textworld"


def check_family(path, family, expected, expected_from):
    if family != expected:
        raise cli.InputError(
            f"{path}: knowledge of {family} games; {expected_from} is of {expected} games (knowledge and play must be "
            "of one game family)"
        )


def load_trajectories(path):
    """collect.py's trajectories, each checked for its kind (a knowledge file or an evaluate.py output is
    not one) and its shape, before any model loads."""
    numbered = jsonl.read_records(path, "trajectories")  # a knowledge pool or an evaluation is named as such
    expected = "expected collect.py trajectories (RUN/round_R/extraction_trajectories.jsonl), one episode per line"
    for lineno, r in numbered:
        where = f"{path}:{lineno}"
        if "feedback" not in r:
            raise cli.InputError(f"{where}: record lacks key(s) ['feedback']; {expected}")
        turns_ok = isinstance(r["turns"], list) and all(
            isinstance(t, dict) and all(k in t for k in TURN_KEYS) for t in r["turns"]
        )
        if not turns_ok or not isinstance(r["feedback"], str):
            raise cli.InputError(
                f"{where}: expected 'turns' as a list of turns with keys {list(TURN_KEYS)} and 'feedback' as text"
            )
    if not numbered:
        raise cli.InputError(f"{path}: no trajectories ({expected})")
    family_of(numbered, path, "trajectories")
    return [r for _, r in numbered]


def load_turn_prompts(path):
    """Every turn prompt (chat messages) of every trajectory: ([(where it came from, messages)], game family)."""
    prompts, records = [], jsonl.read_records(path, "trajectories")
    for n, r in records:
        if not isinstance(r["turns"], list):
            raise cli.InputError(f"{path}:{n}: `turns` is not a list of turns")
        for t in r["turns"]:
            messages = t.get("messages") if isinstance(t, dict) else None
            ok = isinstance(messages, list) and messages
            ok = ok and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages)
            if not ok:
                raise cli.InputError(f"{path}:{n}: a turn without `messages` (a list of {{role, content}})")
            prompts.append((f"{r.get('game')}#{r.get('episode')}:{t.get('turn')}", messages))
    if not prompts:
        raise cli.InputError(f"{path}: no turn prompts (expected trajectories from collect.py with turns)")
    return prompts, family_of(records, path, "trajectories")


def load_pool(path, thinking=False, family=None, family_from=None):
    """The knowledge pool: [(knowledge_id, text)] of records with in_pool true; an empty entry is an error
    (its teacher would see no knowledge, and the KL of that prompt would be 0 by construction). With `family`,
    a pool written about another game family is an error too."""
    records = jsonl.read_records(path, "knowledge")
    if family:
        check_family(path, family_of(records, path, "knowledge"), family, family_from)
    pool = [(n, r["knowledge_id"], r["knowledge"]) for n, r in records if r["in_pool"]]
    if not pool:
        raise cli.InputError(f"{path}: the knowledge pool is empty (no record with in_pool true)")
    empty = [f"line {n} ({kid})" for n, kid, text in pool if not (isinstance(text, str) and text.strip())]
    if thinking:  # a reasoning model cut at the cap inside <think> writes no answer, so no item
        hint = "the extractor wrote no item (with thinking on, usually an answer cut inside <think>): rerun extract.py"
        hint += " with a larger --max-new-tokens"
    else:
        hint = "the extractor wrote no '- EXPERIENCE ITEM:' line (extract.py's sample output shows what it wrote): "
        hint += "rerun extract.py with --answer-prefix 1, a larger --max-new-tokens or another --extractor-model"
    if len(empty) == len(pool):  # the teacher would see exactly what the student sees: nothing to learn
        raise cli.InputError(f"{path}: every pool entry is empty ({', '.join(empty[:5])}); {hint}")
    if empty:  # a chain that wrote nothing: its entry would make the teacher's prompt the student's; dropped
        print(
            f"distill | {path}: dropped {len(empty)} of {len(pool)} pool entries with no knowledge text: "
            f"{', '.join(empty[:5])}; {hint}",
            flush=True,
        )
    return [(kid, text) for _, kid, text in pool if isinstance(text, str) and text.strip()]


def load_knowledge(path, knowledge_id=None, family=None):
    """(knowledge_id, text) from a knowledge JSONL (extract.py) or a plain text file; never empty.

    From a JSONL: the record whose `knowledge_id` is asked for, else the first pool entry
    (`in_pool` true), else the last record. A trajectories file (whose records carry
    `knowledge: null`) is refused, not read as "no knowledge".
    """
    if path is None:
        return None, None
    if not path.endswith(".jsonl"):
        if knowledge_id is not None:
            raise cli.InputError(
                f"{path}: --knowledge-id {knowledge_id!r} picks a record of a knowledge JSONL (extract.py's); "
                "this is a plain text file, used whole: leave --knowledge-id out"
            )
        text = jsonl.read_text(path, "knowledge file")
        if not text.strip():
            raise cli.InputError(f"{path}: the knowledge text is empty")
        return os.path.basename(path), text
    records = jsonl.read_jsonl(path, required=("knowledge_id", "knowledge"))
    if not records:
        raise cli.InputError(f"{path}: no knowledge records")
    if family:
        check_family(path, family_of([(0, r) for r in records], path, "knowledge"), family, f"--family {family}")
    for i, r in enumerate(records, 1):
        if "turns" in r or not isinstance(r["knowledge_id"], str) or not isinstance(r["knowledge"], str):
            raise cli.InputError(
                f"{path}: record {i} is not a knowledge record (expected extract.py's records: a string "
                "knowledge_id and a knowledge text); trajectories from collect.py are not knowledge"
            )
    if knowledge_id is not None:
        chosen = [r for r in records if r["knowledge_id"] == knowledge_id]
        if not chosen:
            raise cli.InputError(f"{path}: no record with knowledge_id {knowledge_id!r}")
    else:
        chosen = [r for r in records if r.get("in_pool")] or records[-1:]
    if not chosen[0]["knowledge"].strip():
        raise cli.InputError(f"{path}: knowledge {chosen[0]['knowledge_id']!r} is empty")
    return chosen[0]["knowledge_id"], chosen[0]["knowledge"]


def generation_marker(tokenizer, thinking=False):
    """The text the chat template puts after the last message to start the assistant's turn."""
    probe = [{"role": "user", "content": "x"}]
    with_marker = lm.chat_text(tokenizer, probe, thinking)
    without = tokenizer.apply_chat_template(
        probe, tokenize=False, add_generation_prompt=False, enable_thinking=thinking
    )
    if not with_marker.startswith(without):
        raise cli.InputError("the chat template's generation prompt is not a suffix of the conversation")
    return with_marker[len(without) :]


def plan_lengths(tokenizer, prompts, pool, thinking, marker_ids):
    """Before the model loads: (longest teacher prompt in tokens, its prompt id, its knowledge id,
    longest student prompt in tokens).

    Every prompt is rendered without and with a pool entry, and every entry with one prompt (play.pair_prompts
    checks each; every student prompt must end with the marker's ids). Tokens add up almost exactly (a
    prompt with knowledge k is as long as without it plus k's block, give or take a token where they meet),
    so only the prompts within 64 tokens of the longest are tokenized with the entries within 64 tokens of
    the longest. Each step still checks its own sequences exactly.
    """
    tokenize = lambda texts: tokenizer(texts, add_special_tokens=False).input_ids
    block = lambda k: play.insert_knowledge([{"role": "user", "content": ""}], k)[0]["content"]  # what k adds
    blocks = [len(ids) for ids in tokenize([block(k) for _, k in pool])]
    students = tokenize([play.pair_prompts(tokenizer, m, pool[0][1], thinking, pid)[0] for pid, m in prompts])
    for (pid, _), ids in zip(prompts, students):
        if ids[-len(marker_ids) :] != marker_ids:
            raise cli.InputError(f"{pid}: the rendered prompt does not end with the assistant marker's tokens")
    for kid, k in pool:
        play.pair_prompts(tokenizer, prompts[0][1], k, thinking, f"{prompts[0][0]} with knowledge {kid}")
    longest = max(map(len, students))
    long_prompts = [p for p, ids in zip(prompts, students) if len(ids) >= longest - 64]
    long_entries = [e for e, n in zip(pool, blocks) if n >= max(blocks) - 64]
    candidates = [(pid, m, kid, k) for pid, m in long_prompts for kid, k in long_entries]
    texts = [
        play.pair_prompts(tokenizer, m, k, thinking, f"{pid} with knowledge {kid}")[1] for pid, m, kid, k in candidates
    ]
    lengths = [len(ids) for ids in tokenize(texts)]
    best = max(range(len(candidates)), key=lengths.__getitem__)
    return lengths[best], candidates[best][0], candidates[best][2], longest


def check_lengths(tokenizer, prompts, pool, marker_ids, *, thinking, max_new_tokens, max_seq_len, model_path):
    """distill.py's sequences, before the model loads: (the sequence length limit, derived from the longest
    teacher prompt or checked against --max-seq-len, and against the model's window; (longest student prompt,
    longest teacher prompt) in tokens)."""
    from transformers import AutoConfig

    longest, pid, kid, student_longest = plan_lengths(tokenizer, prompts, pool, thinking, marker_ids)
    need, limit = longest + max_new_tokens, max_seq_len or longest + max_new_tokens
    where = f"the longest teacher prompt ({pid} with knowledge {kid}) has {longest} tokens"
    window = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None) or need
    if limit < need or need > window:
        too_small = f"--max-seq-len {limit} is too small" if limit < need else f"the model's window is {window}"
        raise cli.InputError(f"{too_small}: {where}, + --max-new-tokens {max_new_tokens} = {need}")
    print(f"distill | {len(prompts)} prompts x {len(pool)} knowledge entries | {where} | limit {limit}")
    return limit, (student_longest, longest)
