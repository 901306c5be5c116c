"""Stage 2 of the OEL loop: the policy reads its own trajectories and writes experiential knowledge.

K independent chains each walk their own extraction trajectories in order (`--chain-data slice`:
chain c reads trajectories c, c+K, ...; `shared`: every chain reads them all). At step i a chain shows
the model its i-th trajectory (every turn's whole response, reasoning included, the command and the
game's reply, then the closing result line; the oldest turns go past `--max-trajectory-tokens`) and,
optionally, the knowledge it has so far, and asks for one or two new general lessons marked
`- EXPERIENCE ITEM:` (read after `</think>` only). New items are appended; the oldest are dropped when
the knowledge passes the token budget. Step i of all chains is one batched generate call. Every
snapshot is written; one per chain (`--use-steps`) forms the pool for distillation. A pool in which
every knowledge text is empty is an error, never an output.

    python extract.py --model smollm2-135m --trajectories runs/demo/round_1/extraction_trajectories.jsonl \\
        --out runs/demo/round_1/knowledge.jsonl

Simplified relative to the paper: TextWorld trajectories; K=4 chains over a few trajectories by
default (paper: K=10, each chain its own rollouts of 100 games, 50 used); the prompt is our own. `--source raw`
builds the same pool from the raw trajectories (the paper's ablation), `--extractor-model` lets
another model write it.
"""

import argparse
import collections
import functools
import re
import time

import torch
from tqdm import tqdm

from oel import cli, experience, games, jsonl, lm, rollouts, runfolder

# {game}: what the family's games are (oel/games.py description): "text adventure game", "grid game"
SYSTEM_PROMPT = "You review records of {game}s and write down short lessons for playing better."
STRUCTURED_PROMPT = (
    "Here is the record of a {game} you just played.\n\n{trajectory}\n\n{known}"
    "What does this game teach about its rules (how commands must be phrased, what must happen before "
    "what) and about winning quickly? Write one or two new, general lessons that would help in other "
    "games of this kind. Do not repeat a lesson you already know. Write each lesson on its own line "
    'starting with "- EXPERIENCE ITEM:".'
)
# No example item: the 135M default model copies an example into its knowledge word for word, so an
# example that is a strategy for these games would be our hint, not the model's experience. The
# answer is started with the marker instead (ANSWER_PREFIX).
FREE_TEXT_PROMPT = (
    "Here is the record of a {game} you just played.\n\n{trajectory}\n\n{known}"
    "In two or three sentences, say what this game teaches about its rules and about winning quickly, "
    "as general advice for other games of this kind."
)
KNOWN_BLOCK = "Lessons you already know:\n{knowledge}\n\n"
PROMPTS = {"structured-v2": STRUCTURED_PROMPT, "freetext-v1": FREE_TEXT_PROMPT}
# The assistant's answer is started with the marker (structured prompt only): small models that
# ignore a requested format still continue a line that is already begun.
ANSWER_PREFIX = {"structured-v2": "- EXPERIENCE ITEM:", "freetext-v1": ""}
# Default extractor output cap without / with thinking: lessons alone take a few dozen tokens; with
# thinking on, the answer comes after the reasoning, which runs to hundreds or thousands of tokens.
MAX_NEW_TOKENS = {False: 96, True: 2048}
MARKER = re.compile(r"\s*-?\s*EXPERIENCE ITEM\s*:\s*", re.IGNORECASE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_model_args(p)
    p.add_argument("--trajectories", required=True, help="extraction trajectories (collect.py JSONL), in file order")
    p.add_argument("--out", required=True, help="knowledge JSONL, one record per chain and snapshot; kept if it exists")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--chains", type=cli.positive_int, default=4, help="independent chains K, the pool size [paper: 10]")
    p.add_argument(
        "--chain-data",
        default="slice",
        choices=["slice", "shared"],
        help="slice: chain c reads trajectories c, c+K, ... (its own, as the authors' chains play their own "
        "rollouts); shared: every chain reads them all (K times the extraction calls)",
    )
    p.add_argument("--steps", type=cli.nonneg_int, default=0, help="trajectories each chain reads (0 = all it has)")
    p.add_argument(
        "--use-steps",
        type=cli.nonneg_int,
        default=0,
        help="the pool: snapshots after N steps (0 = the last) [paper: 50]",
    )
    p.add_argument(
        "--max-knowledge-tokens", type=cli.positive_int, default=512, help="knowledge budget [paper: 2048/8192]"
    )
    p.add_argument("--max-new-items", type=cli.positive_int, default=2, help="items kept from one output, at most")
    p.add_argument(
        "--max-new-tokens",
        type=cli.positive_int,
        default=None,
        help=f"extractor output cap, reasoning included (default: {MAX_NEW_TOKENS[False]}, or "
        f"{MAX_NEW_TOKENS[True]} with --thinking) [paper: 2048-8192]",
    )
    p.add_argument(
        "--max-trajectory-tokens",
        type=cli.positive_int,
        default=4096,
        help="a trajectory shown to the extractor is at most this long (extractor's tokenizer); the oldest turns "
        "go first [authors: (turn cap + 512) x turns + 1024]",
    )
    p.add_argument("--show-knowledge", type=int, default=1, choices=[0, 1], help="1: the extractor sees its knowledge")
    p.add_argument(
        "--prompt-version", default="structured-v2", choices=sorted(PROMPTS), help="marked items or free text"
    )
    p.add_argument(
        "--answer-prefix", type=int, default=1, choices=[0, 1], help="1: start the answer with the marker (no thinking)"
    )
    p.add_argument("--extractor-model", default=None, help="another model writes the knowledge (default: --model)")
    p.add_argument("--source", default="knowledge", choices=["knowledge", "raw"], help="raw: the pool is trajectories")
    p.add_argument("--round", type=cli.nonneg_int, default=0, help="round number recorded in every record")
    p.add_argument("--run", default=None, help="run name recorded in every record (default: the folder of round_R)")
    p.add_argument("--check-trajectories", type=cli.positive_int, help="with --check: trajectories collect will write")
    args = p.parse_args(argv)
    if args.max_new_tokens is None:  # a thinking extractor reasons first: 96 tokens end inside <think>
        args.max_new_tokens = MAX_NEW_TOKENS[args.thinking]
    return args


# ----------------------------------------------------------------------------- helpers


def keep_tail(text, max_tokens, count_tokens):
    """The longest end of `text` within max_tokens (binary search on where it starts)."""
    lo, hi = 0, len(text)  # text[hi:] == "" always fits
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(text[mid:]) <= max_tokens:
            hi = mid
        else:
            lo = mid + 1
    return text[lo:]


def render_turn(t):
    """(head, body) of one turn: the model's whole response (reasoning included), the command sent, the reply."""
    said = t["response"].strip()
    sent = f" (sent: {t['command']})" if t["command"] and t["command"] != said.lower() else ""
    return f"Turn {t['turn'] + 1}. You: ", f"{said}{sent}\nGame: {t['reply']}"


def format_trajectory(record, max_tokens, count_tokens):
    """A trajectory as the extractor reads it: goal, start, each turn whole, then the closing result line.

    Over max_tokens, the oldest turns go first (a line says how many); the most recent turns and the
    result line always stay. If even the newest turn alone is too long, its end is kept."""
    head = f"Goal: {record.get('objective') or '(not stated)'}\nStart: {record.get('intro', '')}"
    turns = [render_turn(t) for t in record["turns"]]
    result = record["feedback"]

    def text_of(kept, cut_body=None):
        n_dropped = len(turns) - len(kept) - (cut_body is not None)
        note = [f"({n_dropped} earlier turns not shown: over the {max_tokens}-token budget)"] if n_dropped else []
        cut = [f"{turns[-1][0]}(start cut) ...{cut_body}"] if cut_body is not None else []
        return "\n".join([head, *note, *cut, *[h + b for h, b in kept], result])

    # newest turns first, whole, by a sum of their sizes; then checked on the exact text
    room, k, used = max_tokens - count_tokens(text_of([])), 0, 0
    sizes = [count_tokens(h + b) + 1 for h, b in turns]  # + the newline that joins it
    while k < len(turns) and used + sizes[-1 - k] <= room:
        used += sizes[-1 - k]
        k += 1
    while k < len(turns) and count_tokens(text_of(turns[len(turns) - k - 1 :])) <= max_tokens:
        k += 1
    while k and count_tokens(text_of(turns[len(turns) - k :])) > max_tokens:
        k -= 1
    text = text_of(turns[len(turns) - k :])
    room = max_tokens - count_tokens(text_of([], ""))
    while k == 0 and turns and room > 0:  # not one turn fits whole: the end of the newest (answer, reply)
        text = text_of([], keep_tail(turns[-1][1], room, count_tokens))
        over = count_tokens(text) - max_tokens
        room = room - over if over > 0 else 0
    if count_tokens(text) > max_tokens:  # goal and result alone are over: the end of it all
        text = keep_tail(text, max_tokens, count_tokens)
    return text


def raw_item(record, max_tokens, count_tokens):
    """A trajectory as a knowledge item (`--source raw`): its most recent part that fits max_tokens once
    rendered, never nothing (the authors' truncation also keeps the end of a text over the budget)."""
    budget = max_tokens
    while budget > 0:
        text = format_trajectory(record, budget, count_tokens)
        over = count_tokens(render_knowledge([text])) - max_tokens
        if over <= 0:
            return text
        budget -= over
    return ""


def parse_items(output, prompt_version):
    """New items from an extractor output: only text after </think>; marked items (several on one
    line become several); in free-text mode the whole answer is one item. [] if nothing parsed."""
    _, answer = lm.split_thinking(output)
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


def extraction_messages(trajectory_text, items, args, game="text adventure game"):
    known = KNOWN_BLOCK.format(knowledge=render_knowledge(items)) if items and args.show_knowledge else ""
    user = PROMPTS[args.prompt_version].format(trajectory=trajectory_text, known=known, game=game)
    return [{"role": "system", "content": SYSTEM_PROMPT.format(game=game)}, {"role": "user", "content": user}]


def inside_thinking(output):
    """True when an output ends inside an unclosed <think>: the cap came before the answer."""
    return "<think>" in output and "</think>" not in output.rsplit("<think>", 1)[1]


def token_counters(args):
    """(count, count_shown): token counts by the policy's tokenizer (the knowledge goes into the policy's
    prompts) and by the extractor's (the trajectory it is shown); the same function without --extractor-model."""
    from transformers import AutoTokenizer

    policy_tokenizer = AutoTokenizer.from_pretrained(lm.resolve_model(args.model))
    count = lambda text: len(policy_tokenizer(text, add_special_tokens=False).input_ids)
    if not (args.extractor_model and args.source == "knowledge"):
        return count, count
    extractor_tokenizer = AutoTokenizer.from_pretrained(lm.resolve_model(args.extractor_model))
    return count, lambda text: len(extractor_tokenizer(text, add_special_tokens=False).input_ids)


def empty_pool_error(args, n_calls, failures, n_cut, n_cut_thinking):
    """The message for a pool in which every knowledge text is empty: why, and what to do."""
    why = f"every pool entry is empty ({failures}/{n_calls} extractor outputs had no item"
    if n_cut_thinking:
        return (
            f"{why}; {n_cut_thinking} ended inside an unclosed <think>, cut at --max-new-tokens "
            f"{args.max_new_tokens} before the answer). Raise --max-new-tokens (the paper allows 2048-8192 "
            "with thinking on) or turn --thinking off."
        )
    if failures == n_calls:
        return (
            f"{why}; {n_cut} were cut at --max-new-tokens {args.max_new_tokens}). The extractor does not "
            'write "- EXPERIENCE ITEM:" lines: see the sample output above; try --answer-prefix 1, '
            "--prompt-version freetext-v1, a larger --max-new-tokens or another --extractor-model."
        )
    return (
        f"{why}; items were parsed, but none is left at step {args.use_steps or 'last'}). An item longer "
        "than --max-knowledge-tokens is dropped whole: raise --max-knowledge-tokens."
    )


def chain_plan(n, chains, chain_data, steps=0):
    """The trajectory indices each chain reads, in order.

    shared: every chain reads trajectories 0..n-1 (chains differ only in sampling); slice: chain c reads
    c, c+K, c+2K, ... (n // K each), its own trajectories, for the same extraction cost as shared / K.
    collect.py writes a game's episodes one after another, so with K episodes per game chain c reads
    episode c of every game: the authors' scheme (same games, each chain its own rollouts)."""
    if chain_data == "shared":
        plan = [list(range(n))] * chains
    else:
        plan = [list(range(c, n - n % chains, chains)) for c in range(chains)]
    if not plan[0]:
        raise cli.InputError(
            f"{n} trajectories for {chains} chains: with --chain-data slice each chain needs one of its own; "
            "collect more extraction games, use fewer --chains, or --chain-data shared"
        )
    if steps > len(plan[0]):
        raise cli.InputError(f"--steps {steps}: each chain has only {len(plan[0])} trajectories ({chain_data})")
    return [p[: steps or len(p)] for p in plan]


# ----------------------------------------------------------------------------- main


def check(args):
    """What the arguments alone can refuse (also `--check`, loop.sh's start-up check, which says with
    --check-trajectories how many trajectories collect will write): a chain without trajectories of its own, a
    pool snapshot (--use-steps) past a chain's last step."""
    if args.check_trajectories:
        check_use_steps(args, chain_plan(args.check_trajectories, args.chains, args.chain_data, args.steps))


def check_use_steps(args, plan):
    if args.use_steps and args.use_steps > len(plan[0]):
        raise cli.InputError(f"--use-steps {args.use_steps}: each chain reads only {len(plan[0])} trajectories")


def main(args):
    # one writer per run folder; an output that exists is kept (--force redoes it)
    if not runfolder.claim_outputs(args.out, args, stage="extract"):
        return None

    # 1. the extraction trajectories, and which of them each of the K chains reads, in order
    trajectories = rollouts.load_trajectories(args.trajectories)
    family = trajectories[0].get("family") or "textworld"  # one family a file (load_trajectories checks)
    plan = chain_plan(len(trajectories), args.chains, args.chain_data, args.steps)
    check_use_steps(args, plan)
    n_steps, use_step = len(plan[0]), args.use_steps or len(plan[0])
    unread = len(trajectories) - len({i for p in plan for i in p})
    if unread:  # said, not silent: slices of equal length leave the remainder out
        print(
            f"extract | {unread} of {len(trajectories)} trajectories not read ({args.chains} chains x {n_steps} steps)"
        )
    # 2. each trajectory as the extractor will read it, within its token budget (measured before a model loads)
    count, count_shown = token_counters(args)
    used = sorted({i for p in plan for i in p})
    if args.source == "raw":  # the item is the trajectory: cut to the knowledge budget, not dropped whole
        texts = {i: raw_item(trajectories[i], args.max_knowledge_tokens, count) for i in used}
    else:
        texts = {i: format_trajectory(trajectories[i], args.max_trajectory_tokens, count_shown) for i in used}
    # 3. the extractor: the policy θ_{r-1} itself (or --extractor-model); knowledge starts empty every round
    torch.manual_seed(args.seed)
    model, tokenizer = (
        lm.load_model(args.extractor_model or args.model, args.device) if args.source == "knowledge" else (None, None)
    )
    chains, tally = [[] for _ in range(args.chains)], collections.Counter()
    ids = [f"{r.get('game')}#{r.get('episode')}" for r in trajectories]
    snapshot = functools.partial(
        snapshot_records, args, plan=plan, ids=ids, use_step=use_step, count=count, family=family,
        run=args.run or runfolder.run_name(args.out),
    )  # fmt: skip
    snapshots = snapshot(chains, 0)

    # 4. step i of every chain: read its next trajectory with its own knowledge so far, write 1-2 items, append
    for step in tqdm(range(1, n_steps + 1), desc="extract"):
        shown = [texts[plan[c][step - 1]] for c in range(args.chains)]  # each chain's trajectory at this step
        if args.source == "raw":  # the ablation: the trajectory itself is the item
            chains, cut = (
                [add_items(items, [t], 1, args.max_knowledge_tokens, count) for items, t in zip(chains, shown)],
                None,
            )
        else:
            outputs, cut = write_items(model, tokenizer, chains, shown, args, family, tally)  # one batched call
            new = [parse_items(output, args.prompt_version) for output in outputs]
            tally["failures"] += sum(not items for items in new)  # nothing parsed: the knowledge stays as it was
            chains = [
                add_items(items, n, args.max_new_items, args.max_knowledge_tokens, count)
                for items, n in zip(chains, new)
            ]
        snapshots += snapshot(chains, step, cut)

    # 5. the pool: the snapshot of each chain after --use-steps; an all-empty pool is an error, never an output
    pool = [s for s in snapshots if s["in_pool"]]
    check_pool(pool, args, n_steps, tally)
    jsonl.write_jsonl(args.out, snapshots)
    print_summary(pool, args, n_steps, tally)
    return snapshots


def snapshot_records(args, chains, step, cut=None, *, plan, ids, use_step, count, family, run):
    """One record per chain of its knowledge after `step` trajectories (cut: whether each chain's output of this
    step hit --max-new-tokens); the snapshot after --use-steps is the chain's pool entry."""
    return [
        dict(
            knowledge_id=f"r{args.round}-c{c}-s{step}",
            chain=c,
            step=step,
            knowledge=render_knowledge(items),
            items=list(items),
            n_items=len(items),
            n_tokens=count(render_knowledge(items)),
            trajectory_ids=[ids[i] for i in plan[c][:step]],
            chain_data=args.chain_data,
            in_pool=step == use_step,
            model=args.extractor_model or args.model,
            run=run,
            round=args.round,
            prompt_version=args.prompt_version,
            seed=args.seed,
            source=args.source,
            family=family,
            output_cut=None if cut is None else cut[c],
        )  # fmt: skip
        for c, items in enumerate(chains)
    ]


def write_items(model, tokenizer, chains, shown, args, family, tally):
    """Every chain's extractor output for this step, in one batched generate: (outputs, whether each was cut at
    --max-new-tokens). The counts of what was cut, generated and timed go to `tally`; the first output is kept
    as the sample to print."""
    prefix = ANSWER_PREFIX[args.prompt_version] if args.answer_prefix and not args.thinking else ""
    prompts = [
        lm.chat_text(tokenizer, extraction_messages(t, items, args, games.description(family)), args.thinking) + prefix
        for items, t in zip(chains, shown)
    ]
    t0 = time.time()
    responses = lm.generate_ids(
        model, tokenizer, prompts, args.max_new_tokens, args.temperature, args.top_p, args.top_k
    )
    tally["gen_seconds"] += time.time() - t0
    eos_ids = set(lm.eos_ids(model, tokenizer))
    cut = [len(ids) >= args.max_new_tokens and ids[-1] not in eos_ids for ids in responses]
    outputs = [prefix + tokenizer.decode(ids, skip_special_tokens=True) for ids in responses]
    tally["calls"] += len(outputs)
    tally["cut"] += sum(cut)
    tally["cut_thinking"] += sum(c and inside_thinking(o) for c, o in zip(cut, outputs))
    tally["new_tokens"] += sum(len(ids) for ids in responses)
    if "sample" not in tally:
        tally["sample"] = (prompts[0], outputs[0])
    return outputs, cut


def check_pool(pool, args, n_steps, tally):
    """The sample output, how many outputs were cut, and the pool checked: all empty is an error (the teacher
    would see what the student sees), some empty a warning."""
    if "sample" in tally:
        print(f"--- sample extractor prompt (step 1) ---\n{tally['sample'][0][-1500:]}\n--- its output ---")
        print(tally["sample"][1])
    if tally["calls"]:
        cut = f"{tally['cut']}/{tally['calls']} ({tally['cut_thinking']} of them inside <think>)"
        print(f"extract | outputs cut at --max-new-tokens {args.max_new_tokens}: {cut}")
    n_empty = sum(not experience.has_text(p["knowledge"]) for p in pool)
    if n_empty == len(pool):  # nothing learned: never hand an empty pool on
        if not tally["calls"]:
            raise cli.InputError(f"every pool entry is empty: --max-knowledge-tokens {args.max_knowledge_tokens}")
        raise cli.InputError(
            empty_pool_error(args, tally["calls"], tally["failures"], tally["cut"], tally["cut_thinking"])
        )
    if n_empty:  # a teacher given empty knowledge sees what the student sees: no signal on those prompts
        print(f"extract | warning: {n_empty} of {len(pool)} pool entries are empty")


def print_summary(pool, args, n_steps, tally):
    first, n_calls = pool[0], tally["calls"]
    print(f"--- knowledge {first['knowledge_id']} ({first['n_tokens']} tokens) ---\n{first['knowledge'][:3000]}\n---")
    print(
        f"extract | chains {args.chains} ({args.chain_data}) | steps {n_steps} | "
        f"items/chain {sum(p['n_items'] for p in pool) / len(pool):.1f} | "
        f"parse failures {tally['failures']}/{n_calls} | "
        f"cut {tally['cut']}/{n_calls} | "
        f"empty in pool {sum(not experience.has_text(p['knowledge']) for p in pool)}/{len(pool)} | "
        f"tokens/s {tally['new_tokens'] / max(tally['gen_seconds'], 1e-9):.1f} | {args.out}"
    )


if __name__ == "__main__":
    cli.run_main(main, parse_args(), check)
