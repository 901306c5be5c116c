"""Stage 2 of the OEL loop: the policy reads its own trajectories and writes experiential knowledge.

K independent chains walk the same extraction trajectories in order. At step i each chain shows the
model trajectory i (every turn's response, command and game reply, then the closing result line) and,
optionally, the knowledge it has so far, and asks for one or two new general lessons marked
`- EXPERIENCE ITEM:`. New items are appended; the oldest are dropped when the knowledge passes the
token budget. Step i of all chains is one batched generate call; chains differ only in sampling
randomness. Every snapshot is written; one per chain (`--use-steps`) forms the pool for distillation.

    python extract.py --model smollm2-135m --trajectories runs/demo/round_1/extract.jsonl \\
        --out runs/demo/round_1/knowledge.jsonl

Simplified relative to the paper: TextWorld trajectories; K=4 chains over a few trajectories by
default (paper: K=10, 100 steps, 50 used); the prompt is our own. `--source raw` builds the same pool
from the raw trajectories (the paper's ablation), `--extractor-model` lets another model write it.
"""

import argparse
import os
import re
import time

import torch
from tqdm import tqdm

import common

SYSTEM_PROMPT = "You review records of text adventure games and write down short lessons for playing better."
STRUCTURED_PROMPT = (
    "Here is the record of a text adventure game you just played.\n\n{trajectory}\n\n{known}"
    "What does this game teach about its rules (how commands must be phrased, what must happen before "
    "what) and about winning quickly? Write one or two new, general lessons that would help in other "
    "games of this kind. Do not repeat a lesson you already know. Write each lesson on its own line "
    'starting with "- EXPERIENCE ITEM:".'
)
# No example item: the 135M default model copies an example into its knowledge word for word, so an
# example that is a strategy for these games would be our hint, not the model's experience. The
# answer is started with the marker instead (ANSWER_PREFIX).
FREE_TEXT_PROMPT = (
    "Here is the record of a text adventure game you just played.\n\n{trajectory}\n\n{known}"
    "In two or three sentences, say what this game teaches about its rules and about winning quickly, "
    "as general advice for other games of this kind."
)
KNOWN_BLOCK = "Lessons you already know:\n{knowledge}\n\n"
PROMPTS = {"structured-v2": STRUCTURED_PROMPT, "freetext-v1": FREE_TEXT_PROMPT}
# The assistant's answer is started with the marker (structured prompt only): small models that
# ignore a requested format still continue a line that is already begun.
ANSWER_PREFIX = {"structured-v2": "- EXPERIENCE ITEM:", "freetext-v1": ""}
MARKER = re.compile(r"\s*-?\s*EXPERIENCE ITEM\s*:\s*", re.IGNORECASE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_model_args(p)
    p.add_argument(
        "--trajectories", required=True, help="extraction trajectories (collect.py JSONL), read in file order"
    )
    p.add_argument(
        "--out", required=True, help="knowledge JSONL, one record per chain and snapshot; skipped if it exists"
    )
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument(
        "--chains", type=common.positive_int, default=4, help="independent chains K (the pool size) [paper: 10]"
    )
    p.add_argument("--steps", type=int, default=0, help="trajectories each chain reads (0 = all in the file)")
    p.add_argument(
        "--use-steps",
        type=int,
        default=0,
        help="the snapshot after N steps goes into the pool (0 = the last) [paper: 50 of 100]",
    )
    p.add_argument(
        "--max-knowledge-tokens",
        type=common.positive_int,
        default=512,
        help="knowledge budget; the oldest items go first [paper: 2048/8192]",
    )
    p.add_argument(
        "--max-new-items", type=common.positive_int, default=2, help="at most this many items kept from one output"
    )
    p.add_argument(
        "--max-new-tokens",
        type=common.positive_int,
        default=96,
        help="extractor output cap (raise it for thinking models)",
    )
    p.add_argument(
        "--max-turns-shown",
        type=common.positive_int,
        default=20,
        help="turns of a trajectory shown (the last ones if longer)",
    )
    p.add_argument(
        "--show-knowledge",
        type=int,
        default=1,
        choices=[0, 1],
        help="1: the extractor sees the knowledge accumulated so far",
    )
    p.add_argument(
        "--prompt-version",
        default="structured-v2",
        choices=sorted(PROMPTS),
        help="structured (marked items) or free text",
    )
    p.add_argument(
        "--answer-prefix",
        type=int,
        default=1,
        choices=[0, 1],
        help="1: start the answer with the item marker (structured prompt, thinking off)",
    )
    p.add_argument(
        "--extractor-model",
        default=None,
        help="another model writes the knowledge (default: --model, the policy itself)",
    )
    p.add_argument(
        "--source",
        default="knowledge",
        choices=["knowledge", "raw"],
        help="raw: the pool holds the trajectories themselves",
    )
    p.add_argument("--round", type=int, default=0, help="round number recorded in every record")
    p.add_argument(
        "--run", default=None, help="run name recorded in every record (default: the folder holding round_R)"
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- helpers


def format_trajectory(record, max_turns):
    """A trajectory as the extractor reads it: goal, start, each turn (model's answer, command sent,
    game's reply), then the closing result line."""
    lines = [f"Goal: {record.get('objective') or '(not stated)'}", f"Start: {record.get('intro', '')}"]
    turns = record["turns"][-max_turns:]
    if len(turns) < len(record["turns"]):
        lines.append(f"({len(record['turns']) - len(turns)} earlier turns not shown)")
    for t in turns:
        said = t["response"].strip().replace("\n", " ")[:200]
        sent = f" (sent: {t['command']})" if t["command"] != said.lower() else ""
        lines.append(f"Turn {t['turn'] + 1}. You: {said}{sent}\nGame: {t['reply']}")
    lines.append(record["feedback"])
    return "\n".join(lines)


def parse_items(output, prompt_version):
    """New items from an extractor output: only text after </think>; marked items (several on one
    line become several); in free-text mode the whole answer is one item. [] if nothing parsed."""
    _, answer = common.split_thinking(output)
    if prompt_version.startswith("freetext"):
        text = " ".join(answer.split())
        return [text] if text else []
    items = []
    for line in answer.splitlines():
        items += [" ".join(part.split()) for part in MARKER.split(line)[1:] if part.strip()]
    return items


def render_knowledge(items):
    """The knowledge text that goes into prompts: one item per line."""
    return "\n".join(f"- {item}" for item in items)


def fit_budget(items, max_tokens, count_tokens):
    """Drop the oldest items until the rendered knowledge fits the budget; never cut an item."""
    start = 0
    while start < len(items) and count_tokens(render_knowledge(items[start:])) > max_tokens:
        start += 1
    return items[start:]


def add_items(items, new, max_new, max_tokens, count_tokens):
    """Append up to max_new items that are not already known (case-insensitive), then fit the budget."""
    known = {i.lower() for i in items}
    fresh = []
    for item in new:
        if item.lower() not in known and len(fresh) < max_new:
            fresh.append(item)
            known.add(item.lower())
    return fit_budget(items + fresh, max_tokens, count_tokens)


def extraction_messages(trajectory_text, items, args):
    known = KNOWN_BLOCK.format(knowledge=render_knowledge(items)) if items and args.show_knowledge else ""
    user = PROMPTS[args.prompt_version].format(trajectory=trajectory_text, known=known)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def load_trajectories(path):
    records = common.read_jsonl(path, required=("turns", "feedback"))
    if not records:
        raise common.InputError(f"{path}: no trajectories (expected collect.py JSONL, one episode per line)")
    return records


# ----------------------------------------------------------------------------- main


def main(args):
    common.claim_outputs(args.out, args)  # one writer per run folder; an output made otherwise is refused
    if os.path.exists(args.out) and not args.force:
        print(f"extract | {args.out} exists, skipped (use --force to redo)")
        return None
    trajectories = load_trajectories(args.trajectories)
    if args.steps:
        trajectories = trajectories[: args.steps]
    ids = [f"{r.get('game')}#{r.get('episode')}" for r in trajectories]
    texts = [format_trajectory(r, args.max_turns_shown) for r in trajectories]
    torch.manual_seed(args.seed)
    model, tokenizer = (
        common.load_model(args.extractor_model or args.model, args.device)
        if args.source == "knowledge"
        else (None, None)
    )
    if args.extractor_model or model is None:  # the budget is measured with the policy's tokenizer
        from transformers import AutoTokenizer

        count_tokenizer = AutoTokenizer.from_pretrained(common.resolve_model(args.model))
    else:
        count_tokenizer = tokenizer
    count = lambda text: len(count_tokenizer(text, add_special_tokens=False).input_ids)
    use_step = args.use_steps or len(trajectories)
    if not 1 <= use_step <= len(trajectories):
        raise common.InputError(f"--use-steps {args.use_steps}: the chains read only {len(trajectories)} trajectories")
    chains = [[] for _ in range(args.chains)]  # knowledge starts empty every round
    snapshots, failures, new_tokens, gen_seconds, sample_output = [], 0, 0, 0.0, None
    run = args.run or common.run_name(args.out)

    def snapshot(step):
        for c, items in enumerate(chains):
            text = render_knowledge(items)
            snapshots.append(
                dict(
                    knowledge_id=f"r{args.round}-c{c}-s{step}",
                    chain=c,
                    step=step,
                    knowledge=text,
                    items=list(items),
                    n_items=len(items),
                    n_tokens=count(text),
                    trajectory_ids=ids[:step],
                    in_pool=step == use_step,
                    model=args.extractor_model or args.model,
                    run=run,
                    round=args.round,
                    prompt_version=args.prompt_version,
                    seed=args.seed,
                    source=args.source,
                )
            )

    snapshot(0)
    for step, text in enumerate(tqdm(texts, desc="extract"), 1):
        if args.source == "raw":  # the ablation: the trajectory itself is the item
            chains = [add_items(items, [text], 1, args.max_knowledge_tokens, count) for items in chains]
        else:  # step i of every chain in one batched call
            prefix = ANSWER_PREFIX[args.prompt_version] if args.answer_prefix and not args.thinking else ""
            prompts = [
                common.chat_text(tokenizer, extraction_messages(text, items, args), args.thinking) + prefix
                for items in chains
            ]
            t0 = time.time()
            outputs = [
                (prefix + o, n)
                for o, n in common.generate(
                    model, tokenizer, prompts, args.max_new_tokens, args.temperature, args.top_p, args.top_k
                )
            ]
            gen_seconds += time.time() - t0
            for c, (output, n) in enumerate(outputs):
                new = parse_items(output, args.prompt_version)
                failures += not new  # nothing parsed: the knowledge stays as it was
                new_tokens += n
                chains[c] = add_items(chains[c], new, args.max_new_items, args.max_knowledge_tokens, count)
            sample_output = sample_output or (prompts[0], outputs[0][0])
        snapshot(step)
    common.write_jsonl(args.out, snapshots)
    pool = [s for s in snapshots if s["in_pool"]]
    if sample_output:
        print(
            f"--- sample extractor prompt (chain 0, step 1) ---\n{sample_output[0][-1500:]}\n--- its output ---\n{sample_output[1]}"
        )
    print(
        f"--- knowledge {pool[0]['knowledge_id']} ({pool[0]['n_tokens']} tokens) ---\n{pool[0]['knowledge'][:3000]}\n---"
    )
    n_calls = len(texts) * args.chains
    print(
        f"extract | chains {args.chains} | steps {len(texts)} | items/chain {sum(p['n_items'] for p in pool) / len(pool):.1f} | "
        f"parse failures {failures}/{n_calls if args.source == 'knowledge' else 0} | tokens/s {new_tokens / max(gen_seconds, 1e-9):.1f} | {args.out}"
    )
    return snapshots


if __name__ == "__main__":
    common.run_main(main, parse_args())
