"""distill.py: the loss against a float64 brute force, ~0 with equal contexts, gradients against finite
differences, chunking and micro-batching exact, the teacher frozen, the run end to end, bad input."""

import json
import types

import pytest
import torch

import common
import distill
import games

TEMPERATURE = 0.7


def brute_force_kl(student_logits, teacher_logits, temperature, topk):
    """KL(student || teacher) over the student's top-k tokens, one position and one token at a time."""
    out = []
    for s_row, t_row in zip(student_logits.double().tolist(), teacher_logits.double().tolist()):
        s = torch.tensor(s_row, dtype=torch.float64) / temperature
        t = torch.tensor(t_row, dtype=torch.float64) / temperature
        logp_s, logp_t = s - torch.logsumexp(s, 0), t - torch.logsumexp(t, 0)
        keep = sorted(range(len(s_row)), key=lambda v: -logp_s[v].item())[: topk or len(s_row)]
        total = 0.0
        for v in keep:
            total += logp_s[v].exp().item() * (logp_s[v].item() - logp_t[v].item())
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("topk", [0, 1, 5, 50])
def test_reverse_kl_matches_brute_force(topk):
    torch.manual_seed(topk)
    s, t = torch.randn(6, 50) * 3, torch.randn(6, 50) * 3
    kl, mass_s, mass_t = distill.reverse_kl(s, t, TEMPERATURE, topk)
    assert torch.allclose(kl.double(), brute_force_kl(s, t, TEMPERATURE, topk), atol=1e-5)
    if topk in (0, 50):
        assert torch.allclose(mass_s, torch.ones(6)) and torch.allclose(mass_t, torch.ones(6))
        assert (kl > 0).all()
    else:
        assert (mass_s < 1).all() and (mass_s > 0).all()


def test_reverse_kl_is_zero_for_equal_distributions_and_has_the_right_direction():
    s = torch.randn(4, 30)
    assert distill.reverse_kl(s, s.clone(), TEMPERATURE, 0)[0].abs().max() < 1e-6
    # reverse KL weighs by the student: a student sure of token 0 pays only for the teacher's view of token 0
    student = torch.tensor([[10.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 10.0, 0.0]])
    forward = brute_force_kl(teacher, student, 1.0, 0)
    reverse = distill.reverse_kl(student, teacher, 1.0, 0)[0].double()
    assert torch.allclose(reverse, brute_force_kl(student, teacher, 1.0, 0)) and not torch.allclose(
        reverse, forward + 1
    )


# ----------------------------------------------------------------------------- with a tiny model


def tiny_args(**kw):
    base = dict(temperature=TEMPERATURE, topk=0, chunk=4, micro_batch_tokens=10**6, pad_id=0)
    base.update(kw)
    return types.SimpleNamespace(**base)


MESSAGES = [
    {"role": "system", "content": "Play the game."},
    {"role": "user", "content": "Goal: take the coin.\n\nGame:\nYou are in a room.\n\nYour command:"},
]


def pairs_for(tokenizer, knowledge_texts, responses):
    marker = distill.generation_marker(tokenizer)
    pairs = []
    for k, r in zip(knowledge_texts, responses):
        s_text = common.chat_text(tokenizer, MESSAGES)
        t_text = common.chat_text(tokenizer, games.insert_knowledge(MESSAGES, k))
        pairs.append(distill.build_pair(tokenizer, s_text, t_text, r, marker, 4096))
    return pairs


def loss_of(student, teacher, pairs, args):
    n_total = sum(len(p["response_ids"]) for p in pairs)
    return distill.micro_batch_loss(student, teacher, pairs, n_total, args)[0].item() / n_total


@pytest.fixture()
def models(tiny_model):
    student, tokenizer = common.load_model(tiny_model, "cpu", dtype=torch.float64, quiet=True)
    teacher, _ = common.load_model(tiny_model, "cpu", dtype=torch.float64, quiet=True)
    teacher.requires_grad_(False)
    return student, teacher, tokenizer


def test_loss_is_zero_with_equal_contexts_and_positive_with_knowledge(models):
    student, teacher, tokenizer = models
    responses = [
        tokenizer("go north<|im_end|>", add_special_tokens=False).input_ids,
        tokenizer("take coin", add_special_tokens=False).input_ids,
    ]
    same = loss_of(student, teacher, pairs_for(tokenizer, [None, ""], responses), tiny_args())
    different = loss_of(
        student, teacher, pairs_for(tokenizer, ["- open the door first", "- read the goal"], responses), tiny_args()
    )
    assert abs(same) < 1e-10 and different > 1e-4


def test_chunks_and_micro_batches_give_the_same_loss_and_gradient(models):
    student, teacher, tokenizer = models
    responses = [
        tokenizer(t, add_special_tokens=False).input_ids
        for t in ("go north<|im_end|>", "open the door then take the key", "look")
    ]
    pairs = pairs_for(tokenizer, ["- a", "- open containers first", "- b c"], responses)
    grads = []
    for chunk, budget in ((10**6, 10**6), (1, 10**6), (3, 1)):
        student.zero_grad()
        n_total = sum(len(p["response_ids"]) for p in pairs)
        total = sum(
            distill.micro_batch_loss(student, teacher, g, n_total, tiny_args(chunk=chunk, micro_batch_tokens=budget))[0]
            for g in distill.micro_batches(pairs, budget)
        )
        grads.append((total.item(), torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])))
    for total, grad in grads[1:]:
        assert abs(total - grads[0][0]) < 1e-9 and torch.allclose(grad, grads[0][1], atol=1e-10)
    assert len(distill.micro_batches(pairs, 1)) == 3


def test_gradient_matches_finite_differences(tmp_path):
    """The chunked, checkpointed loss has the gradient of the plain loss: exact (float64) on the
    untied output head; through the transformer loosely, as its RMSNorm computes in float32."""
    import conftest

    folder = conftest.make_tiny_model(tmp_path / "untied", tie=False)
    student, tokenizer = common.load_model(folder, "cpu", dtype=torch.float64, quiet=True)
    teacher, _ = common.load_model(folder, "cpu", dtype=torch.float64, quiet=True)
    pairs = pairs_for(
        tokenizer, ["- open the door first"], [tokenizer("go north then take coin", add_special_tokens=False).input_ids]
    )
    student.zero_grad()
    loss_of(student, teacher, pairs, tiny_args(topk=7, chunk=2))
    for weight, eps, rel in (
        (student.lm_head.weight, 1e-6, 1e-5),
        (student.model.layers[0].mlp.down_proj.weight, 1e-2, 0.05),
    ):
        for idx in [(0, 0), (3, 5), (10, 20), (7, 1)]:
            analytic = weight.grad[idx].item()
            with torch.no_grad():
                weight[idx] += eps
                up = loss_of_no_grad(student, teacher, pairs)
                weight[idx] -= 2 * eps
                down = loss_of_no_grad(student, teacher, pairs)
                weight[idx] += eps
            assert abs((up - down) / (2 * eps) - analytic) <= rel * abs(analytic) + 1e-12, (
                idx,
                analytic,
                (up - down) / (2 * eps),
            )


def loss_of_no_grad(student, teacher, pairs):
    p = pairs[0]
    s_logits = student(torch.tensor([p["student_ids"]])).logits[0, p["student_start"] - 1 : -1]
    t_logits = teacher(torch.tensor([p["teacher_ids"]])).logits[0, p["teacher_start"] - 1 : -1]
    return distill.reverse_kl(s_logits, t_logits, TEMPERATURE, 7)[0].mean().item()


def test_steps_on_a_fixed_batch_drive_the_kl_down(models):
    student, teacher, tokenizer = models
    pairs = pairs_for(
        tokenizer,
        ["- open the door first", "- read the goal"],
        [tokenizer(t, add_special_tokens=False).input_ids for t in ("go north", "take coin")],
    )
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kls = []
    for _ in range(15):
        kls.append(loss_of(student, teacher, pairs, tiny_args(topk=0)))
        optimizer.step()
        optimizer.zero_grad()
    assert kls[-1] < 0.2 * kls[0] and kls[0] > 1e-5
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # the teacher never moves


def test_misaligned_templates_are_caught(models):
    _, _, tokenizer = models
    marker = distill.generation_marker(tokenizer)
    s_text = common.chat_text(tokenizer, MESSAGES)
    response = tokenizer("go north", add_special_tokens=False).input_ids
    with pytest.raises(AssertionError, match="assistant marker"):
        distill.build_pair(
            tokenizer, s_text, s_text[:-1], response, marker, 4096
        )  # the teacher's marker lost its newline
    with pytest.raises(ValueError, match="exceeds --max-seq-len"):
        distill.build_pair(tokenizer, s_text, s_text, response, marker, 10)


# ----------------------------------------------------------------------------- end to end


def write_inputs(tmp_path, turns=True):
    traj = tmp_path / "deploy.jsonl"
    turn = dict(turn=0, messages=MESSAGES, response="go north", command="go north")
    common.write_jsonl(str(traj), [dict(game=f"g{i}", episode=0, turns=[turn] * 3 if turns else []) for i in range(2)])
    know = tmp_path / "knowledge.jsonl"
    common.write_jsonl(
        str(know),
        [
            dict(knowledge_id="r1-c0-s1", knowledge="- the coin is north", in_pool=True),
            dict(knowledge_id="r1-c0-s0", knowledge="", in_pool=False),
            dict(knowledge_id="r1-c1-s1", knowledge="- take things to win", in_pool=True),
        ],
    )
    return str(traj), str(know)


def test_end_to_end_metrics_and_checkpoint(tiny_model, tmp_path, capsys):
    traj, know = write_inputs(tmp_path)
    out = tmp_path / "round_1" / "model"
    args = distill.parse_args(
        [
            "--model",
            tiny_model,
            "--trajectories",
            traj,
            "--knowledge",
            know,
            "--out",
            str(out),
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--max-new-tokens",
            "6",
            "--lr",
            "1e-3",
            "--print-every",
            "2",
            "--round",
            "1",
            "--topk",
            "16",
        ]
    )
    history = distill.main(args)
    metrics = common.read_jsonl(str(tmp_path / "round_1" / "distill_metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2, 3] and metrics == json.loads(json.dumps(history))
    for m in metrics:
        assert m["kl"] != 0 and 0 < m["student_topk_mass"] <= 1 + 1e-6 and 0 < m["teacher_topk_mass"] <= 1 + 1e-6
        assert 1 <= m["response_len_mean"] <= 6 and m["response_len_max"] <= 6 and 0 <= m["capped"] <= 4
        assert m["grad_norm"] > 0 and not m["skipped"] and m["round"] == 1 and m["peak_memory_mb"] > 0
    assert json.load(open(out / "args.json"))["steps"] == 3
    reloaded, tokenizer = common.load_model(str(out), "cpu", quiet=True)
    original, _ = common.load_model(tiny_model, "cpu", quiet=True)
    assert not torch.equal(reloaded.lm_head.weight, original.lm_head.weight)  # it trained
    assert len(common.generate(reloaded, tokenizer, [common.chat_text(tokenizer, MESSAGES)], 4, 0.0)) == 1
    printed = capsys.readouterr().out
    assert "distill | steps 3" in printed and "[student]" in printed
    assert distill.main(args) is None  # the output exists: skipped


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("empty_pool", "knowledge pool is empty"),
        ("no_turns", "no turn prompts"),
        ("malformed", r"deploy.jsonl:3: not valid JSON"),
    ],
)
def test_bad_input(problem, expected, tiny_model, tmp_path):
    traj, know = write_inputs(tmp_path, turns=problem != "no_turns")
    if problem == "empty_pool":
        common.write_jsonl(know, [dict(knowledge_id="x", knowledge="- a", in_pool=False)])
    if problem == "malformed":
        with open(traj, "a") as f:
            f.write("{oops\n")
    out = tmp_path / "model"
    args = distill.parse_args(
        ["--model", tiny_model, "--trajectories", traj, "--knowledge", know, "--out", str(out), "--steps", "1"]
    )
    with pytest.raises(common.InputError, match=expected):
        distill.main(args)
    assert not out.exists()
