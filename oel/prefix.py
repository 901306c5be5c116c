"""A prefix that many sequences share, computed once.

The teacher's sequences in distill.py begin with the same tokens whenever they drew the same pool entry: the chat
header, the system message and example exchange where a family has them, and the knowledge block at the start of
the turn. Instead of running that prefix once per sequence, `hidden_states` runs it once, keeps its keys and
values, and runs only the rest of each sequence against them (the automatic prefix caching of serving engines,
in a few lines of plain `transformers`). The result equals the plain forward's up to float rounding (tested).

The prefix's cache is read, never written: each layer attends over the prefix's keys (broadcast over the batch,
no copy) followed by the suffix's own, which are not kept. So one prefix costs its keys and values once, however
many sequences share it. OEL_SHARE_PREFIX=0 turns sharing off (the plain path, for comparisons); a model whose
cache this cannot read (not a plain per-layer key/value cache) takes the plain path, said once.
"""

import functools
import os
import weakref

import torch

from oel.cli import InputError

_checked = weakref.WeakKeyDictionary()  # model -> whether sharing gives the plain forward's result on it


def enabled():
    """OEL_SHARE_PREFIX: 1 (the default) shares, 0 runs every sequence whole."""
    value = os.environ.get("OEL_SHARE_PREFIX", "1")
    if value not in ("0", "1"):
        raise InputError(f"OEL_SHARE_PREFIX={value}: expected 0 (off) or 1 (on)")
    return value == "1"


def common_length(a, b):
    """The number of leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def group_by_prefix(sequences, ends):
    """Groups of sequence indices that share their first ends[i] tokens, each with the length every member
    shares: [(indices, prefix_length)]. `ends[i]` is where sequence i's own part starts at the latest (distill:
    the end of its knowledge block); a group's prefix is the members' common length, capped so that every
    member keeps at least its tokens from ends[i] on."""
    by_key = {}
    for i, (s, end) in enumerate(zip(sequences, ends)):
        by_key.setdefault(tuple(s[:end]), []).append(i)
    groups = []
    for members in by_key.values():
        first = sequences[members[0]]
        shared = min([ends[i] for i in members] + [common_length(first, sequences[i]) for i in members[1:]])
        groups.append((members, shared))
    return groups


def worth_sharing(config, prefix_length, suffix_lengths):
    """Whether running a prefix once and then its sequences' suffixes against it takes fewer FLOPs than running
    the sequences whole (`flops`). A short prefix before long suffixes is cheaper whole on a model whose
    attention weighs as much as its MLP (a tiny one)."""
    if len(suffix_lengths) < 2 or prefix_length == 0:
        return False
    whole, shared = flops(config, prefix_length, suffix_lengths)
    return shared < whole


def flops(config, prefix_length, suffix_lengths):
    """(whole, shared): the forward FLOPs of sequences that begin with the same prefix, run whole or the prefix
    once. Per layer a token costs its projections and MLP (`linear`) and each query-key pair its attention
    (`pair`); a whole sequence attends causally (half its square), a suffix to the whole prefix and to itself,
    counted in full (attention under a mask computes every pair)."""
    config = config.get_text_config(decoder=True)
    hidden, mlp = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    linear, pair = 2 * (hidden * (q + 2 * kv) + q * hidden + 3 * hidden * mlp), 4 * q
    n = prefix_length
    whole = sum((n + s) * linear + (n + s) ** 2 / 2 * pair for s in suffix_lengths)
    shared = n * linear + n * n / 2 * pair + sum(s * linear + s * (n + s) * pair for s in suffix_lengths)
    return whole * config.num_hidden_layers, shared * config.num_hidden_layers


def _attend_after(layer, keys, values, *args, **kwargs):
    """A prefix layer's update: the prefix's keys and values, broadcast over the batch, then the new ones; the
    prefix cache is left as it was, so the next batch of suffixes reads it again."""
    batch = keys.shape[0]
    prefix_keys = layer.keys.expand(batch, *layer.keys.shape[1:])
    prefix_values = layer.values.expand(batch, *layer.values.shape[1:])
    return torch.cat([prefix_keys, keys], dim=-2), torch.cat([prefix_values, values], dim=-2)


def prefix_cache(model, prefix):
    """The keys and values of one prefix (token ids), as a cache that suffixes attend to without growing it."""
    from transformers.cache_utils import DynamicLayer

    device = next(model.parameters()).device
    cache = model.model(input_ids=torch.tensor([prefix], device=device), use_cache=True).past_key_values
    if cache is None or not all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None])):
        raise TypeError(f"{type(cache).__name__}: not a plain per-layer key/value cache")
    for layer in cache.layers:
        layer.update = functools.partial(_attend_after, layer)
    return cache


def run(model, sequences, pad_id, cache=None):
    """Final hidden states (B, T, H) of right-padded sequences, after the prefix held in `cache` (none: the
    sequences are whole). No padding mask: each real token attends only to those before it, and the pads all
    come after the real tokens of their row, so the causal mask alone gives every real token its plain result
    (and lets attention skip the masked half)."""
    device = next(model.parameters()).device
    ids = torch.full((len(sequences), max(map(len, sequences))), pad_id, dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
    options = dict(past_key_values=cache, use_cache=True) if cache is not None else dict(use_cache=False)
    return model.model(input_ids=ids.to(device), **options).last_hidden_state


def batches(lengths, budget):
    """Consecutive index ranges whose lengths add up to at most `budget` (one item at least)."""
    out, start, used = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and used + n > budget:
            out.append(range(start, i))
            start, used = i, 0
        used += n
    return out + [range(start, len(lengths))] if lengths else out


@torch.no_grad()
def hidden_states(model, sequences, starts, ends, pad_id, budget, share=None):
    """For each sequence, the final hidden states at positions starts[i]-1 ... len-2 (those that predict tokens
    starts[i] ... len-1): [(len - starts[i], H)]. Sequences that share their first ends[i] tokens (ends[i] <
    starts[i]) run that prefix once (`share`: default `enabled()` and the model passing `supports`); the rest
    run in batches of at most `budget` tokens of their own."""
    share = enabled() and supports(model, pad_id) if share is None else share
    out = [None] * len(sequences)
    groups = group_by_prefix(sequences, ends) if share else [(list(range(len(sequences))), 0)]
    if share:  # a prefix runs once where that costs less than running its sequences whole; the rest run whole
        cost = lambda m, n: worth_sharing(model.config, n, [len(sequences[i]) - n for i in m])
        whole = [i for m, n in groups if not cost(m, n) for i in m]
        groups = [(m, n) for m, n in groups if cost(m, n)] + ([(whole, 0)] if whole else [])
    for members, offset in groups:
        cache = prefix_cache(model, sequences[members[0]][:offset]) if offset else None
        rest = [sequences[i][offset:] for i in members]
        for part in batches([len(r) for r in rest], budget):
            hidden = run(model, [rest[j] for j in part], pad_id, cache)
            for row, j in enumerate(part):
                i = members[j]
                out[i] = hidden[row, starts[i] - 1 - offset : len(sequences[i]) - 1 - offset].clone()  # not a view
    return out


def shared_head(model, tokenizer, prompts, min_tokens=16):
    """For sampling (lm.generate_ids): a batch of prompt strings that begin with the same tokens (a turn prompt's
    system message and example exchange, the knowledge of an in-context evaluation) as (inputs, cache): the head
    run once into a cache copied to every row, each row's own tokens after it, left-padded up to the head
    (head, pads, own tokens; the pads masked out, positions counted over real tokens as `generate` does), so
    every row sees what it would see alone. None where there is nothing worth sharing, or sharing is off."""
    if len(prompts) < 2 or not enabled():
        return None
    ids = tokenizer(list(prompts), add_special_tokens=False).input_ids
    n = min([common_length(ids[0], x) for x in ids[1:]] + [min(map(len, ids)) - 1])
    if n < min_tokens or not supports(model, tokenizer.pad_token_id):
        return None
    device = next(model.parameters()).device
    with torch.no_grad():
        cache = model.model(input_ids=torch.tensor([ids[0][:n]], device=device), use_cache=True).past_key_values
    cache.batch_repeat_interleave(len(ids))  # each row's cache grows on its own as it samples
    width = max(map(len, ids))  # the head, then the longest row's own tokens
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, x in enumerate(ids):
        input_ids[row, :n], mask[row, :n] = torch.tensor(x[:n]), 1
        input_ids[row, width - (len(x) - n) :], mask[row, width - (len(x) - n) :] = torch.tensor(x[n:]), 1
    return dict(input_ids=input_ids.to(device), attention_mask=mask.to(device)), cache


def supports(model, pad_id):
    """Whether sharing gives the plain forward's hidden states on this model, tried once on a few tokens; a
    model it does not (or an error) takes the plain path, with one printed line."""
    if model in _checked:
        return _checked[model]
    vocab = model.config.get_text_config(decoder=True).vocab_size
    g = torch.Generator().manual_seed(0)
    head = torch.randint(0, vocab, (6,), generator=g).tolist()
    sequences = [head + torch.randint(0, vocab, (n,), generator=g).tolist() for n in (3, 5)]
    try:  # the shared path itself, whatever worth_sharing would choose for so short a prefix
        with torch.no_grad():
            plain = run(model, sequences, pad_id)[:, len(head) :]
            shared = run(model, [x[len(head) :] for x in sequences], pad_id, prefix_cache(model, head))
        scale = plain.abs().max().item()
        device = next(model.parameters()).device
        narrow = model.dtype != torch.float32 or torch.is_autocast_enabled(device.type)
        tolerance = 5e-2 if narrow else 1e-4
        ok = all(
            torch.allclose(plain[i, :n], shared[i, :n], atol=tolerance * scale, rtol=0) for i, n in enumerate((3, 5))
        )
        reason = "its hidden states differ from the plain forward's"
    except Exception as e:  # an architecture whose cache or forward this cannot drive
        ok, reason = False, f"{type(e).__name__}: {e}"
    if not ok:
        print(f"prefix | {type(model).__name__}: shared prefixes off, every sequence runs whole ({reason})")
    _checked[model] = ok
    return ok
