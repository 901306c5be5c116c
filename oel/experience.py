"""Experiential knowledge: where it goes in a prompt, and how a stage reads it from a file.

Knowledge enters a turn prompt only through `insert_knowledge`: the policy's prompt in play (collect, evaluate)
and the teacher's prompt in distill are built by it from the same messages, so both see the knowledge in exactly
the same place. A knowledge text is empty when it holds nothing but whitespace (`has_text`): an empty entry is
never a teacher's context or an in-context evaluation, in every stage.
"""

import os

from oel import cli, jsonl, lm, rollouts

KNOWLEDGE_BLOCK = "What you learned from earlier games:\n{knowledge}\n\n"


def has_text(text):
    """The one rule for an empty knowledge entry, in every stage: text that is more than whitespace."""
    return isinstance(text, str) and bool(text.strip())


def insert_knowledge(messages, knowledge):
    """Messages with the knowledge text at the start of the last user turn (before the assistant
    marker); no knowledge leaves them unchanged. Returns a new list."""
    messages = [dict(m) for m in messages]
    if has_text(knowledge):
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


def check_family(path, family, expected, expected_from):
    if family != expected:
        raise cli.InputError(
            f"{path}: knowledge of {family} games; {expected_from} is of {expected} games (knowledge and play must be "
            "of one game family)"
        )


def load_pool(path, thinking=False, family=None, family_from=None):
    """The knowledge pool: [(knowledge_id, text)] of records with in_pool true; an empty entry is an error
    (its teacher would see no knowledge, and the KL of that prompt would be 0 by construction). With `family`,
    a pool written about another game family is an error too."""
    records = jsonl.read_records(path, "knowledge")
    if family:
        check_family(path, rollouts.family_of(records, path, "knowledge"), family, family_from)
    pool = [(n, r["knowledge_id"], r["knowledge"]) for n, r in records if r["in_pool"]]
    if not pool:
        raise cli.InputError(f"{path}: the knowledge pool is empty (no record with in_pool true)")
    empty = [f"line {n} ({kid})" for n, kid, text in pool if not has_text(text)]
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
    return [(kid, text) for _, kid, text in pool if has_text(text)]


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
        if not has_text(text):
            raise cli.InputError(f"{path}: the knowledge text is empty")
        return os.path.basename(path), text
    records = jsonl.read_jsonl(path, required=("knowledge_id", "knowledge"))
    if not records:
        raise cli.InputError(f"{path}: no knowledge records")
    if family:
        check_family(
            path, rollouts.family_of([(0, r) for r in records], path, "knowledge"), family, f"--family {family}"
        )
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
    if not has_text(chosen[0]["knowledge"]):
        raise cli.InputError(f"{path}: knowledge {chosen[0]['knowledge_id']!r} is empty")
    return chosen[0]["knowledge_id"], chosen[0]["knowledge"]
