"""A prefix that many sequences share, run once (oel/prefix.py): the teacher's states equal the plain forward's."""

import pytest
import torch

import distill
from oel import experience, lm, prefix
from oel.cli import InputError

TURNS = [  # a system message and an example exchange before the turn, as TextWorld's prompts have
    "You are in a kitchen. There is a fridge.",
    "A dark cellar. Exits: north, up.",
    "You see a chest here, closed and locked. A key lies on the table beside a lamp and an old map.",
    "North.",
    "The fridge is open; inside are an apple and a carrot.",
    "A long corridor with many doors, all of them closed, and a window at the far end.",
    "West.",
]
POOL = ["- open containers first", "- take the key before the chest; read the map; go north when stuck", "- look"]
RESPONSES = ["go north<|im_end|>", "open the door then take the key", "look", "take key", "[open fridge]", "a", "n e"]


def messages(turn):
    return [
        {"role": "system", "content": "You play a text game. Reply with one command in brackets."},
        {"role": "user", "content": "You are in a hall."},
        {"role": "assistant", "content": "[look]"},
        {"role": "user", "content": turn},
    ]


def batch(tokenizer):
    """Seven pairs as distill.main builds them, three pool entries drawn among them, ragged prompts and responses."""
    marker_ids = tokenizer(lm.generation_marker(tokenizer), add_special_tokens=False).input_ids
    pairs = []
    for i, (turn, response) in enumerate(zip(TURNS, RESPONSES)):
        s, t = experience.pair_prompts(tokenizer, messages(turn), POOL[i % 3], False, f"turn {i}")
        s_ids, t_ids = (tokenizer(x, add_special_tokens=False).input_ids for x in (s, t))
        r_ids = tokenizer(response, add_special_tokens=False).input_ids
        pairs.append(distill.build_pair(s_ids, t_ids, r_ids, marker_ids, 4096))
    return pairs


def token_counter(monkeypatch):
    """Counts the tokens each forward of prefix.py runs (the prefixes' and the rest's)."""
    ran = []
    run, cache = prefix.run, prefix.prefix_cache
    monkeypatch.setattr(
        prefix, "run", lambda m, seqs, *a, **k: ran.append(sum(map(len, seqs))) or run(m, seqs, *a, **k)
    )
    monkeypatch.setattr(prefix, "prefix_cache", lambda m, p: ran.append(len(p)) or cache(m, p))
    return ran


@pytest.fixture(params=["llama", "qwen3"])
def model(request, tiny_model, tiny_qwen3):
    folder = tiny_model if request.param == "llama" else tiny_qwen3
    model, tokenizer = lm.load_model(folder, "cpu", dtype=torch.float32, quiet=True)
    return model.requires_grad_(False), tokenizer


def test_the_teachers_log_probs_equal_the_plain_forwards(model, monkeypatch):
    model, tokenizer = model
    pairs = batch(tokenizer)
    plain = distill.hidden_at(model, pairs, "teacher", tokenizer.pad_token_id)  # whole sequences, right padded
    assert prefix.supports(model, tokenizer.pad_token_id)  # tried once on a few tokens, before the count
    ran = token_counter(monkeypatch)
    distill.teacher_states(model, pairs, tokenizer.pad_token_id, budget=40)  # several batches of suffixes
    groups = prefix.group_by_prefix([p["teacher_ids"] for p in pairs], [p["teacher_shared"] for p in pairs])
    assert sorted(len(m) for m, _ in groups) == [2, 2, 3]  # one group per pool entry
    for members, shared in groups:  # each group's prefix ends at its knowledge block, the same for all members
        knowledge = tokenizer.decode(pairs[members[0]]["teacher_ids"][:shared])
        assert knowledge.rstrip().endswith(POOL[members[0] % 3]) and all(m % 3 == members[0] % 3 for m in members)
    head = lambda h: torch.log_softmax(model.lm_head(h), dim=-1)
    gap = max((head(p["teacher_hidden"]) - head(h)).abs().max().item() for p, h in zip(pairs, plain))
    assert gap < 1e-5 and all(p["teacher_hidden"].shape == h.shape for p, h in zip(pairs, plain))
    whole = sum(len(p["teacher_ids"]) for p in pairs)
    saved = sum((len(m) - 1) * n for m, n in groups)
    assert sum(ran) == whole - saved and saved > 0.3 * whole  # each prefix ran once, nothing else was skipped


@pytest.mark.parametrize("mode", ["on-policy", "off-policy"])
def test_the_loss_with_shared_prefixes_is_reference_loss(tiny_model, mode):
    student, tokenizer = lm.load_model(tiny_model, "cpu", dtype=torch.float64, quiet=True)
    teacher, _ = lm.load_model(tiny_model, "cpu", dtype=torch.float64, quiet=True)
    torch.manual_seed(1)
    with torch.no_grad():  # a teacher unlike the student, so the KL is far from 0
        for w in teacher.parameters():
            w.add_(0.05 * torch.randn_like(w))
    pairs = batch(tokenizer)
    reference = distill.reference_loss(student, teacher, pairs, mode=mode, temperature=0.7, topk=0).item()
    distill.teacher_states(teacher.requires_grad_(False), pairs, tokenizer.pad_token_id, budget=10**6)
    total = 0.0
    for group in distill.micro_batches(pairs, 300):
        kl, _ = distill.micro_batch_kl(
            student, teacher, group, mode=mode, temperature=0.7, topk=0, chunk=5, pad_id=tokenizer.pad_token_id
        )
        total += kl.item()
    loss = total / sum(len(p["response_ids"]) for p in pairs)
    assert abs(loss - reference) <= 1e-9 * reference and reference > 1e-3


def test_the_switch_runs_every_sequence_whole(model, monkeypatch):
    model, tokenizer = model
    pairs = batch(tokenizer)
    ran = token_counter(monkeypatch)
    monkeypatch.setenv("OEL_SHARE_PREFIX", "0")
    distill.teacher_states(model, pairs, tokenizer.pad_token_id, budget=10**6)
    assert ran == [sum(len(p["teacher_ids"]) for p in pairs)]  # one forward of the whole sequences
    monkeypatch.setenv("OEL_SHARE_PREFIX", "no")
    with pytest.raises(InputError, match="OEL_SHARE_PREFIX=no: expected 0 \\(off\\) or 1 \\(on\\)"):
        distill.teacher_states(model, pairs, tokenizer.pad_token_id, budget=10**6)


@pytest.mark.parametrize("breakage", ["ignores the cache", "raises"])
def test_a_model_whose_cache_cannot_be_shared_runs_whole_and_says_so_once(tiny_model, breakage, capsys):
    model, tokenizer = lm.load_model(tiny_model, "cpu", dtype=torch.float32, quiet=True)
    forward = model.model.forward

    def broken(*args, past_key_values=None, **kwargs):  # an architecture that does not read a cache it is given
        if breakage == "raises" and past_key_values is not None:
            raise NotImplementedError("no cache here")
        return forward(*args, **kwargs)

    model.model.forward = broken
    pairs = batch(tokenizer)
    plain = distill.hidden_at(model, pairs, "teacher", tokenizer.pad_token_id)
    for _ in range(2):
        distill.teacher_states(model, pairs, tokenizer.pad_token_id, budget=10**6)
        assert all(torch.allclose(p["teacher_hidden"], h, atol=1e-6) for p, h in zip(pairs, plain))
    said = capsys.readouterr().out.splitlines()
    reason = "NotImplementedError: no cache here" if breakage == "raises" else "differ from the plain forward's"
    assert len(said) == 1 and "shared prefixes off, every sequence runs whole" in said[0] and reason in said[0]


def test_groups_share_what_their_members_share():
    sequences = [[1, 2, 3, 4, 5], [1, 2, 3, 9, 9, 9], [1, 2, 7, 7], [1, 2, 3, 4, 6], [8]]
    ends = [3, 3, 3, 4, 0]
    groups = prefix.group_by_prefix(sequences, ends)
    assert groups == [([0, 1], 3), ([2], 3), ([3], 4), ([4], 0)]
    assert list(map(list, prefix.batches([3, 3, 5, 1], 6))) == [[0, 1], [2, 3]]
    assert list(map(list, prefix.batches([9, 1], 6))) == [[0], [1]]  # one item over the budget runs alone


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_sampling_with_a_shared_head_draws_the_same_tokens(tiny_model, tiny_qwen3, arch, monkeypatch):
    """A lock-step batch of turn prompts (the same system message and example exchange, turns of their own): the
    head runs once, and with a fixed seed every row samples what it samples without sharing."""
    model, tokenizer = lm.load_model(tiny_model if arch == "llama" else tiny_qwen3, "cpu", dtype=torch.float32)
    prompts = [lm.chat_text(tokenizer, messages(turn)) for turn in TURNS]
    used = []
    shared_head = prefix.shared_head
    monkeypatch.setattr(prefix, "shared_head", lambda *a, **k: used.append(shared_head(*a, **k)) or used[-1])
    draws = {}
    for share in ("0", "1"):
        monkeypatch.setenv("OEL_SHARE_PREFIX", share)
        torch.manual_seed(3)
        draws[share] = lm.generate_ids(model, tokenizer, prompts, 12, temperature=1.0, cache="dynamic", compile=False)
    ids = tokenizer(prompts, add_special_tokens=False).input_ids
    head = min(prefix.common_length(ids[0], x) for x in ids[1:])  # the system message and the example exchange
    inputs = used[-1][0]
    assert used[0] is None and head > 30 and inputs["input_ids"][:, :head].tolist() == [ids[0][:head]] * len(ids)
    assert [int(m.sum()) for m in inputs["attention_mask"]] == [len(x) for x in ids]  # every real token, once
    assert draws["1"] == draws["0"] and len({tuple(d) for d in draws["0"]}) == len(prompts)
