"""distill.py: both losses against a float64 brute force and in the right direction, ~0 with equal contexts
in every mode, the chunked path equal to the plain reference, gradients against finite differences, the
teacher frozen or live, inputs and arguments checked before the model loads, one metrics attempt per file,
the runs end to end (on-/off-policy, frozen/live, Qwen3 with thinking on)."""

import json
import math
import os

import pytest
import torch

import distill
from oel import cli, experience, jsonl, lm, rollouts, training

TEMPERATURE = 0.7


def brute_force_kl(p_logits, q_logits, temperature, topk):
    """KL(p || q) over p's top-k tokens, one position and one token at a time."""
    out = []
    for p_row, q_row in zip(p_logits.double().tolist(), q_logits.double().tolist()):
        p = torch.tensor(p_row, dtype=torch.float64) / temperature
        q = torch.tensor(q_row, dtype=torch.float64) / temperature
        logp, logq = p - torch.logsumexp(p, 0), q - torch.logsumexp(q, 0)
        keep = sorted(range(len(p_row)), key=lambda v: -logp[v].item())[: topk or len(p_row)]
        out.append(sum(logp[v].exp().item() * (logp[v].item() - logq[v].item()) for v in keep))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("topk", [0, 1, 5, 50])
def test_both_losses_match_brute_force(topk):
    torch.manual_seed(topk)
    s, t = torch.randn(6, 50) * 3, torch.randn(6, 50) * 3
    kl, mass_s, mass_t = distill.reverse_kl(s, t, TEMPERATURE, topk)  # over the student's top-k
    assert torch.allclose(kl.double(), brute_force_kl(s, t, TEMPERATURE, topk), atol=1e-5)
    kl_f, mass_s_f, mass_t_f = distill.forward_kl(s, t, TEMPERATURE, topk)  # over the teacher's top-k
    assert torch.allclose(kl_f.double(), brute_force_kl(t, s, TEMPERATURE, topk), atol=1e-5)
    if topk in (0, 50):
        for mass in (mass_s, mass_t, mass_s_f, mass_t_f):
            assert torch.allclose(mass, torch.ones(6))
        assert (kl > 0).all() and (kl_f > 0).all()
    else:
        assert (mass_s < 1).all() and (mass_s > 0).all() and (mass_t_f < 1).all() and (mass_t_f > 0).all()
        assert not torch.allclose(kl, kl_f)  # another support, another number


def test_each_loss_has_its_direction():
    """An asymmetric pair: a sure student (one token at 0.95) and a uniform teacher over 4 tokens.
    KL(student || teacher) = 1.12 and KL(teacher || student) = 1.67 by hand; a swapped argument fails."""
    student, teacher = torch.tensor([[4.0, 0.0, 0.0, 0.0]]), torch.zeros(1, 4)
    p = torch.softmax(student[0].double(), 0).tolist()
    by_hand_reverse = sum(p[v] * math.log(p[v] / 0.25) for v in range(4))
    by_hand_forward = sum(0.25 * math.log(0.25 / p[v]) for v in range(4))
    assert abs(by_hand_reverse - 1.1245) < 1e-3 and abs(by_hand_forward - 1.6672) < 1e-3
    assert abs(distill.reverse_kl(student, teacher, 1.0, 0)[0].item() - by_hand_reverse) < 1e-5
    assert abs(distill.forward_kl(student, teacher, 1.0, 0)[0].item() - by_hand_forward) < 1e-5
    s = torch.randn(4, 30)
    assert distill.reverse_kl(s, s.clone(), TEMPERATURE, 0)[0].abs().max() < 1e-6


# ----------------------------------------------------------------------------- with a tiny model

MESSAGES = [
    {"role": "system", "content": "Play the game."},
    {"role": "user", "content": "Goal: take the coin.\n\nGame:\nYou are in a room.\n\nYour command:"},
]
MODES = [("on-policy", "frozen"), ("on-policy", "live"), ("off-policy", "frozen"), ("off-policy", "live")]


def pairs_for(tokenizer, knowledge_texts, responses):
    """Pairs as main builds them; knowledge None gives a teacher with the student's own prompt."""
    marker_ids = tokenizer(lm.generation_marker(tokenizer), add_special_tokens=False).input_ids
    pairs = []
    for k, r in zip(knowledge_texts, responses):
        s_text = lm.chat_text(tokenizer, MESSAGES)
        t_text = lm.chat_text(tokenizer, experience.insert_knowledge(MESSAGES, k)) if k else s_text
        s_ids, t_ids = (tokenizer(x, add_special_tokens=False).input_ids for x in (s_text, t_text))
        pairs.append(distill.build_pair(s_ids, t_ids, r, marker_ids, 4096))
    return pairs


def chunked_loss(student, teacher, pairs, mode="on-policy", topk=0, chunk=4, budget=10**6):
    """The training path: micro-batches of chunks, gradients accumulated; returns the token-mean KL."""
    n_total = sum(len(p["response_ids"]) for p in pairs)
    kl = 0.0
    for group in distill.micro_batches(pairs, budget):
        kl_sum, _ = distill.micro_batch_kl(
            student, teacher, group, mode=mode, temperature=TEMPERATURE, topk=topk, chunk=chunk, pad_id=0
        )
        (kl_sum / n_total).backward()  # as distill.main does
        kl += kl_sum.item()
    return kl / n_total


@pytest.fixture()
def models(tiny_model):
    student, tokenizer = lm.load_model(tiny_model, "cpu", dtype=torch.float64, quiet=True)
    teacher, _ = lm.load_model(tiny_model, "cpu", dtype=torch.float64, quiet=True)
    teacher.requires_grad_(False)
    return student, teacher, tokenizer


@pytest.mark.parametrize("mode, teacher_kind", MODES)
def test_loss_is_zero_with_equal_contexts_and_positive_with_knowledge(models, mode, teacher_kind):
    student, teacher, tokenizer = models
    teacher = student if teacher_kind == "live" else teacher
    responses = [tokenizer(t, add_special_tokens=False).input_ids for t in ("go north<|im_end|>", "take coin")]
    same = chunked_loss(student, teacher, pairs_for(tokenizer, [None, None], responses), mode)
    different = chunked_loss(student, teacher, pairs_for(tokenizer, ["- open the door first", "- a"], responses), mode)
    assert abs(same) < 1e-10 and different > 1e-4


@pytest.mark.parametrize("mode", ["on-policy", "off-policy"])
@pytest.mark.parametrize("topk", [0, 7])
def test_chunked_loss_equals_reference(models, mode, topk):
    """The chunked, checkpointed, micro-batched path (any chunk size and budget) has the value and the
    gradient of reference_loss: full logits, the formula."""
    student, teacher, tokenizer = models
    texts = ("go north<|im_end|>", "open the door then take the key", "look")
    responses = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    pairs = pairs_for(tokenizer, ["- a", "- open containers first", "- b c"], responses)
    student.zero_grad()
    reference = distill.reference_loss(student, teacher, pairs, mode=mode, temperature=TEMPERATURE, topk=topk)
    reference.backward()
    reference_grad = torch.cat([p.grad.flatten() for p in student.parameters()])
    assert len(distill.micro_batches(pairs, 1)) == 3
    for chunk, budget in ((10**6, 10**6), (1, 10**6), (3, 1)):
        student.zero_grad()
        loss = chunked_loss(student, teacher, pairs, mode, topk, chunk, budget)
        grad = torch.cat([p.grad.flatten() for p in student.parameters()])
        assert abs(loss - reference.item()) <= 1e-9 * reference.item() and reference.item() > 1e-6
        assert torch.allclose(grad, reference_grad, rtol=1e-7, atol=1e-13) and grad.abs().max() > 1e-8


@pytest.mark.parametrize("mode", ["on-policy", "off-policy"])
def test_the_training_path_has_the_direction_its_mode_names(models, mode):
    """What micro_batch_loss backpropagates, against the brute force on the two models' own full logits: on-policy
    KL(student || teacher) over the student's top-k, off-policy KL(teacher || student) over the teacher's. The
    chunked path and reference_loss read one table, so comparing them could not see a swapped entry."""
    student, teacher, tokenizer = models
    texts = ("go north<|im_end|>", "open the door then take the key")
    responses = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    pairs = pairs_for(tokenizer, ["- a", "- open containers first"], responses)
    rows = {"on-policy": [], "off-policy": []}
    with torch.no_grad():
        for p in pairs:
            s = student(torch.tensor([p["student_ids"]])).logits[0, p["student_start"] - 1 : -1]  # (R, V)
            t = teacher(torch.tensor([p["teacher_ids"]])).logits[0, p["teacher_start"] - 1 : -1]
            rows["on-policy"].append(brute_force_kl(s, t, TEMPERATURE, 7))
            rows["off-policy"].append(brute_force_kl(t, s, TEMPERATURE, 7))
    expected = {m: torch.cat(r).mean().item() for m, r in rows.items()}  # the mean over response tokens
    other = "off-policy" if mode == "on-policy" else "on-policy"
    loss = chunked_loss(student, teacher, pairs, mode, topk=7)
    assert abs(loss - expected[mode]) <= 1e-9 * expected[mode]
    assert abs(loss - expected[other]) > 1e-2 * expected[mode]


def test_gradient_matches_finite_differences(tmp_path):
    """The chunked loss has the gradient of the plain loss: exact (float64) on the untied output head;
    through the transformer loosely, as its RMSNorm computes in float32."""
    import conftest

    folder = conftest.make_tiny_model(tmp_path / "untied", tie=False)
    student, tokenizer = lm.load_model(folder, "cpu", dtype=torch.float64, quiet=True)
    teacher, _ = lm.load_model(folder, "cpu", dtype=torch.float64, quiet=True)
    response = tokenizer("go north then take coin", add_special_tokens=False).input_ids
    pairs = pairs_for(tokenizer, ["- open the door first"], [response])
    student.zero_grad()
    chunked_loss(student, teacher, pairs, topk=7, chunk=2)

    def loss():
        with torch.no_grad():
            return distill.reference_loss(student, teacher, pairs, mode="on-policy", temperature=TEMPERATURE, topk=7)

    for weight, eps, rel in (
        (student.lm_head.weight, 1e-6, 1e-5),
        (student.model.layers[0].mlp.down_proj.weight, 1e-2, 0.05),
    ):
        for idx in [(0, 0), (3, 5), (10, 20), (7, 1)]:
            analytic = weight.grad[idx].item()
            with torch.no_grad():
                weight[idx] += eps
                up = loss().item()
                weight[idx] -= 2 * eps
                down = loss().item()
                weight[idx] += eps
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - analytic) <= rel * abs(analytic) + 1e-12, (idx, analytic, numeric)


def test_steps_on_a_fixed_batch_drive_the_kl_down(models):
    student, teacher, tokenizer = models
    responses = [tokenizer(t, add_special_tokens=False).input_ids for t in ("go north", "take coin")]
    pairs = pairs_for(tokenizer, ["- open the door first", "- read the goal"], responses)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kls = []
    for _ in range(15):
        kls.append(chunked_loss(student, teacher, pairs))
        optimizer.step()
        optimizer.zero_grad()
    assert kls[-1] < 0.2 * kls[0] and kls[0] > 1e-5
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # the teacher never moves


# ----------------------------------------------------------------------------- pairs of sequences


def test_build_pair_checks_the_marker_ids_and_the_length(models):
    _, _, tokenizer = models
    marker_ids = tokenizer(lm.generation_marker(tokenizer), add_special_tokens=False).input_ids
    s_ids = tokenizer(lm.chat_text(tokenizer, MESSAGES), add_special_tokens=False).input_ids
    response = tokenizer("go north", add_special_tokens=False).input_ids
    with pytest.raises(cli.InputError, match="assistant marker"):
        distill.build_pair(s_ids, s_ids[:-1], response, marker_ids, 4096)  # the teacher's marker lost a token
    with pytest.raises(cli.InputError, match="exceeds --max-seq-len 10"):
        distill.build_pair(s_ids, s_ids, response, marker_ids, 10)
    pair = distill.build_pair(s_ids, s_ids, response, marker_ids, len(s_ids) + len(response))  # exactly fits
    assert pair["student_ids"] == s_ids + response and pair["student_start"] == len(s_ids)


def test_sampled_ids_are_kept_as_they_are(tiny_qwen3):
    """A sampled response need not re-tokenize to its own ids: with Qwen3's real tokenizer a leading newline
    merges with the marker's, and any model can sample a non-canonical split ("l","o","o","k" for "look").
    The old text round trip raised AssertionError on both; the sampled ids are now kept on both sides."""
    _, tokenizer = lm.load_model(tiny_qwen3, "cpu", quiet=True)
    marker_ids = tokenizer(lm.generation_marker(tokenizer, True), add_special_tokens=False).input_ids
    s_text = lm.chat_text(tokenizer, MESSAGES, True)
    t_text = lm.chat_text(tokenizer, experience.insert_knowledge(MESSAGES, "- look first"), True)
    split = [tokenizer.convert_tokens_to_ids(c) for c in "\u010a[look]"]  # byte-level: \u010a is the newline
    response = split + [tokenizer.eos_token_id]
    round_trip = tokenizer(s_text + tokenizer.decode(response), add_special_tokens=False).input_ids
    assert round_trip[-len(response) :] != response and tokenizer.decode(response).startswith("\n[look]")
    s_ids, t_ids = (tokenizer(x, add_special_tokens=False).input_ids for x in (s_text, t_text))
    pair = distill.build_pair(s_ids, t_ids, response, marker_ids, 4096)
    assert pair["student_ids"][pair["student_start"] :] == response == pair["teacher_ids"][pair["teacher_start"] :]
    assert (
        pair["student_ids"][: pair["student_start"]] == s_ids and pair["teacher_ids"][: pair["teacher_start"]] == t_ids
    )


def test_a_teacher_prompt_without_the_knowledge_is_an_error(models, monkeypatch):
    _, _, tokenizer = models
    s, t = experience.pair_prompts(tokenizer, MESSAGES, "- open the door first", False, "g#0:0")
    assert "- open the door first" in t and "- open the door first" not in s
    # a renderer that drops the knowledge
    monkeypatch.setattr(experience, "insert_knowledge", lambda messages, knowledge: messages)
    with pytest.raises(cli.InputError, match="g#0:0: the teacher's prompt does not carry the knowledge"):
        experience.pair_prompts(tokenizer, MESSAGES, "- open the door first", False, "g#0:0")


# ----------------------------------------------------------------------------- inputs and arguments


def write_inputs(tmp_path, turns=True):
    traj = tmp_path / "deploy.jsonl"
    turn = dict(turn=0, messages=MESSAGES, response="go north", command="go north")
    jsonl.write_jsonl(str(traj), [dict(game=f"g{i}", episode=0, turns=[turn] * 3 if turns else []) for i in range(2)])
    know = tmp_path / "knowledge.jsonl"
    jsonl.write_jsonl(
        str(know),
        [
            dict(knowledge_id="r1-c0-s1", knowledge="- the coin is north", in_pool=True),
            dict(knowledge_id="r1-c0-s0", knowledge="", in_pool=False),
            dict(knowledge_id="r1-c1-s1", knowledge="- take things to win", in_pool=True),
        ],
    )
    return str(traj), str(know)


def no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the input was checked")


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("empty_pool", "knowledge pool is empty"),
        (
            "empty_entries",
            r"knowledge.jsonl: every pool entry is empty \(line 1 \(r1-c0-s1\), line 3 \(r1-c1-s1\)\).*--max-new",
        ),
        ("no_turns", "no turn prompts"),
        ("malformed", r"deploy.jsonl:3: not valid JSON"),
        ("eval_as_trajectories", r"eval_id.jsonl:1: this is an evaluate.py output"),
        (
            "knowledge_as_trajectories",
            r"knowledge.jsonl:1: this is an extract.py knowledge .*expected collect.py traj",
        ),
        (
            "trajectories_as_knowledge",
            r"deploy.jsonl:1: this is collect.py trajectories .*expected an extract.py know",
        ),
        ("turn_without_messages", r"deploy.jsonl:1: a turn without `messages`"),
        ("beyond_the_window", r"the model's window is 4096: the longest teacher prompt .* = \d+"),
        ("max_seq_len_too_small", r"--max-seq-len 30 is too small: the longest teacher prompt \(g\d#0:0 with .* = \d+"),
        ("binary_trajectories", r"deploy.jsonl: a binary file, not text; expected JSON Lines"),
        ("out_is_a_file", r"model: exists and is a file; expected a model folder"),  # was "exists, skipped", exit 0
        ("out_unwritable", r"cannot write in /sys"),
    ],
)
def test_bad_input_is_an_error_before_the_model_loads(problem, expected, tiny_model, tmp_path, monkeypatch):
    traj, know = write_inputs(tmp_path, turns=problem != "no_turns")
    extra = []
    if problem == "empty_pool":
        jsonl.write_jsonl(know, [dict(knowledge_id="x", knowledge="- a", in_pool=False)])
    if problem == "empty_entries":  # a thinking extractor cut inside <think> leaves no item
        records = jsonl.read_jsonl(know)
        records[0]["knowledge"], records[2]["knowledge"] = "", "  \n"
        jsonl.write_jsonl(know, records)
    if problem == "malformed":
        with open(traj, "a") as f:
            f.write("{oops\n")
    if problem == "eval_as_trajectories":
        eval_file = str(tmp_path / "eval_id.jsonl")  # evaluate.py: games, then a summary whose `turns` is a mean
        game = dict(jsonl.read_jsonl(traj)[0], kind="game", eval_set="id")
        jsonl.write_jsonl(eval_file, [game, dict(kind="summary", eval_set="id", turns=3.5, n=1)])
        traj = eval_file
    if problem == "knowledge_as_trajectories":
        traj = know
    if problem == "trajectories_as_knowledge":
        know = traj
    if problem == "turn_without_messages":
        records = jsonl.read_jsonl(traj)
        records[0]["turns"][1] = dict(turn=1, response="x")
        jsonl.write_jsonl(traj, records)
    if problem == "beyond_the_window":  # the tiny model has 4096 positions
        jsonl.write_jsonl(know, [dict(knowledge_id="long", knowledge="- go north " * 3000, in_pool=True)])
    if problem == "max_seq_len_too_small":
        extra = ["--max-seq-len", "30"]
    out = tmp_path / "model"
    if problem == "binary_trajectories":
        with open(traj, "wb") as f:
            f.write(b"PK\x03\x04\x00\x00" + bytes(range(256)) * 8)  # an archive given as trajectories
    if problem == "out_is_a_file":
        out.write_text("not a model\n")
    if problem == "out_unwritable":
        out = "/sys/oel-run/round_1/model"
    args = distill.parse_args(
        ["--model", tiny_model, "--trajectories", traj, "--knowledge", know, "--out", str(out), "--steps", "1"] + extra
    )
    monkeypatch.setattr(lm, "load_model", no_model)
    with pytest.raises(cli.InputError, match=expected):
        distill.main(args)
    assert not os.path.isdir(out)


def test_a_diverging_run_stops_and_saves_nothing(tiny_model, tmp_path, monkeypatch):
    """Past the learning-rate range (raised here to reach it), Adam moves every weight by ~lr: the run stops at
    the first step whose weights' norm more than doubled, with an error, and no model is saved as if it were fine."""
    traj, know = write_inputs(tmp_path)
    monkeypatch.setattr(distill, "MAX_LR", 1e6)
    out = tmp_path / "model"
    argv = ["--model", tiny_model, "--trajectories", traj, "--knowledge", know, "--out", str(out), "--lr", "1e3"]
    args = distill.parse_args(
        argv + ["--steps", "3", "--batch-size", "2", "--max-new-tokens", "4", "--print-every", "0"]
    )
    with pytest.raises(cli.RunError, match=r"training diverged at step 1: the weights' norm went from [\d.]+ to"):
        distill.main(args)
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.startswith(".model")]


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--temperature", "0"),
        ("--temperature", "-1"),
        ("--temperature", "nan"),
        ("--loss-topk", "-5"),
        ("--lr", "-1"),
        ("--lr", "inf"),
        ("--lr", "1e6"),  # trained, saved weights near 1e6 and exited 0; no recipe comes near it (MAX_LR)
        ("--weight-decay", "-0.1"),
        ("--clip", "0"),
        ("--top-p", "0.9"),
        ("--top-k", "20"),
        ("--steps", "0"),
        ("--batch-size", "-1"),
        ("--max-new-tokens", "0"),
        ("--max-seq-len", "0"),
        ("--micro-batch-tokens", "0"),
        ("--chunk", "0"),
        ("--save-every", "-1"),
        ("--print-every", "-1"),
        ("--round", "-1"),
        ("--seed", "-1"),
        ("--mode", "offline"),
        ("--teacher", "copy"),
    ],
)
def test_every_numeric_flag_has_its_range(flag, value, capsys):
    base = ["--trajectories", "t.jsonl", "--knowledge", "k.jsonl", "--out", "m"]
    with pytest.raises(SystemExit) as e:
        distill.parse_args(base + [flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err
    args = distill.parse_args(base)  # the defaults pass, and full support is what they say
    assert args.top_p == 1.0 and args.top_k == 0 and args.max_seq_len is None and args.mode == "on-policy"


# ----------------------------------------------------------------------------- end to end

POOL_TEXTS = ("- the coin is north", "- take things to win")


def run_args(model, traj, know, out, *extra):
    base = ["--model", model, "--trajectories", traj, "--knowledge", know, "--out", str(out), "--steps", "3"]
    base += ["--batch-size", "4", "--max-new-tokens", "6", "--lr", "1e-3", "--print-every", "2", "--round", "1"]
    return distill.parse_args(base + ["--loss-topk", "16"] + list(extra))


def spy(monkeypatch):
    """Record what main samples from (model, prompts, responses), the pairs it trains on, and whether the
    teacher it scores with is the student itself."""
    seen = dict(sampled=[], pairs=[], live=set(), sampling=[])
    generate, build_pair, micro_batch_kl = lm.generate_ids, distill.build_pair, distill.micro_batch_kl

    def generate_ids(model, tokenizer, prompts, *args, **kwargs):
        responses = generate(model, tokenizer, prompts, *args, **kwargs)
        seen["sampled"] += list(zip(prompts, responses))
        seen["sampling"].append((args, kwargs))  # (max_new_tokens, temperature, top_p, top_k), one per step
        return responses

    def pair(*args):
        seen["pairs"].append(build_pair(*args))
        return seen["pairs"][-1]

    def loss(student, teacher, *args, **kwargs):
        seen["live"].add(student is teacher)
        return micro_batch_kl(student, teacher, *args, **kwargs)

    monkeypatch.setattr(lm, "generate_ids", generate_ids)
    monkeypatch.setattr(distill, "build_pair", pair)
    monkeypatch.setattr(distill, "micro_batch_kl", loss)
    return seen


def check_sides(seen, tokenizer, sampler_sees_knowledge):
    """The student's sequences never hold the knowledge, the teacher's always hold a pool text, and the
    responses trained on are the sampled ones, sampled from the side the mode names."""
    block = "What you learned from earlier games"
    assert seen["sampled"] and len(seen["pairs"]) == len(seen["sampled"])
    for (prompt, response), p in zip(seen["sampled"], seen["pairs"]):
        student = tokenizer.decode(p["student_ids"][: p["student_start"]])
        teacher = tokenizer.decode(p["teacher_ids"][: p["teacher_start"]])
        assert block not in student and block in teacher and any(k in teacher for k in POOL_TEXTS)
        assert prompt == (teacher if sampler_sees_knowledge else student)
        assert p["response_ids"] == response == p["student_ids"][p["student_start"] :]


def test_end_to_end_on_policy_frozen(tiny_model, tmp_path, capsys, monkeypatch):
    traj, know = write_inputs(tmp_path)
    out = tmp_path / "round_1" / "model"
    seen = spy(monkeypatch)
    history = distill.main(run_args(tiny_model, traj, know, out, "--save-every", "2"))
    _, tokenizer = lm.load_model(tiny_model, "cpu", quiet=True)
    check_sides(seen, tokenizer, sampler_sees_knowledge=False)  # the student samples, without the knowledge
    assert seen["live"] == {False}  # a frozen teacher is a model of its own
    metrics = jsonl.read_jsonl(str(tmp_path / "round_1" / "model.metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2, 3] and metrics == json.loads(json.dumps(history))
    eos = lm.eos_ids(lm.load_model(tiny_model, "cpu", quiet=True)[0], tokenizer)
    for i, m in enumerate(metrics):  # --loss-topk 16 of 384 tokens: a support below the whole mass on both sides
        assert m["kl"] != 0 and 0 < m["student_topk_mass"] < 0.99 and 0 < m["teacher_topk_mass"] < 0.99
        responses = [r for _, r in seen["sampled"][4 * i : 4 * i + 4]]  # this step's, as sampled
        assert m["response_len_max"] == max(map(len, responses)) and m["responses"] == 4
        assert m["capped"] == sum(r[-1] not in eos for r in responses)
        assert m["grad_norm"] > 0 and not m["skipped"] and m["round"] == 1 and m["peak_memory_mb"] > 0
        assert m["mode"] == "on-policy" and m["teacher"] == "frozen"
    settings = json.load(open(out / "args.json"))
    longest = max(len(p["teacher_ids"]) - len(p["response_ids"]) for p in seen["pairs"])  # one prompt, 2 entries
    assert settings["steps"] == 3 and settings["mode"] == "on-policy" and settings["teacher"] == "frozen"
    assert settings["resolved"]["max_seq_len"] == longest + 6  # derived: the longest teacher prompt + --max-new-tokens
    assert (tmp_path / "round_1" / "model_steps" / "step_2" / "args.json").exists()  # --save-every: OUT_steps
    printed = capsys.readouterr().out
    assert "distill | on-policy, frozen teacher | steps 3" in printed and "[student]" in printed
    assert distill.main(run_args(tiny_model, traj, know, out)) is None  # the output exists: skipped


def spy_optimizer(monkeypatch, seen):
    """Record the gradient each optimizer step applies, with the step it belongs to (one sampling call a step)."""
    make = training.make_optimizer
    seen["applied"] = []

    def make_optimizer(params, *args):
        params = list(params)
        optimizer = make(params, *args)
        step = optimizer.step

        def recorded_step(*a, **k):
            grad = torch.cat([p.grad.flatten() for p in params if p.grad is not None]).clone()
            seen["applied"].append((len(seen["sampling"]), grad))
            return step(*a, **k)

        optimizer.step = recorded_step
        return optimizer

    monkeypatch.setattr(training, "make_optimizer", make_optimizer)


def test_what_main_does_at_each_step(tiny_model, tmp_path, monkeypatch):
    """Looked at from inside one run: the sampler's arguments, one pool entry drawn per prompt, the gradient
    norm logged = that of reference_loss (the mean over response tokens alone), the step applying the gradient
    clipped to --clip in its direction, a step with a non-finite gradient skipped (no optimizer step), the logged
    lengths those of the sampled responses, and the saved weights nearer the teacher on what they trained on."""
    traj, know = write_inputs(tmp_path)
    out = tmp_path / "round_1" / "model"
    seen = spy(monkeypatch)
    spy_optimizer(monkeypatch, seen)
    loss = distill.micro_batch_kl  # the spy's wrapper: a NaN lands in the gradient of step 2, the loss stays finite

    def nan_at_step_2(student, *args, **kwargs):
        kl, masses = loss(student, *args, **kwargs)
        if len(seen["sampling"]) == 2:
            kl.register_hook(lambda grad: grad * float("nan"))
        return kl, masses

    monkeypatch.setattr(distill, "micro_batch_kl", nan_at_step_2)
    clip = 0.005  # below the tiny model's gradient norms (~0.05), so clipping acts at every step
    extra = ["--clip", str(clip), "--temperature", "0.9", "--loss-topk", "0", "--lr", "1e-4"]  # the whole KL
    history = distill.main(run_args(tiny_model, traj, know, out, *extra))
    assert [(a, k) for a, k in seen["sampling"]] == [((6, 0.9, 1.0, 0), {})] * 3  # τ, full support, the cap
    batch = 4
    _, tokenizer = lm.load_model(tiny_model, "cpu", quiet=True)
    drawn = []
    for p in seen["pairs"]:
        teacher_prompt = tokenizer.decode(p["teacher_ids"][: p["teacher_start"]])
        held = [k for k in POOL_TEXTS if k in teacher_prompt]
        assert len(held) == 1, teacher_prompt  # exactly one entry in each teacher prompt
        drawn.append(held[0])
    assert any(len(set(drawn[i : i + batch])) == 2 for i in range(0, len(drawn), batch))  # drawn per prompt

    # the logged gradient norm is reference_loss's, computed afresh on step 1's pairs from θ_{r-1}
    student, _ = lm.load_model(tiny_model, "cpu", quiet=True)
    teacher, _ = lm.load_model(tiny_model, "cpu", quiet=True)
    teacher.requires_grad_(False)
    settings = dict(mode="on-policy", temperature=0.9, topk=0)
    distill.reference_loss(student, teacher, seen["pairs"][:batch], **settings).backward()
    reference = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
    assert history[0]["grad_norm"] == pytest.approx(reference.norm().item(), rel=1e-4)
    assert reference.norm().item() > 5 * clip
    assert [s for s, _ in seen["applied"]] == [1, 3]  # step 2 had a NaN in its gradient: no optimizer step
    assert [h["skipped"] for h in history] == [False, True, False] and math.isnan(history[1]["grad_norm"])
    applied = seen["applied"][0][1]
    assert applied.norm().item() == pytest.approx(clip, rel=1e-3)
    assert torch.nn.functional.cosine_similarity(applied, reference, dim=0).item() > 0.9999

    eos = lm.eos_ids(student, tokenizer)
    for step, h in enumerate(history):
        responses = [r for _, r in seen["sampled"][step * batch : (step + 1) * batch]]
        assert h["response_len_max"] == max(map(len, responses))
        assert h["response_len_mean"] == sum(map(len, responses)) / batch
        assert h["capped"] == sum(r[-1] not in eos for r in responses)

    # the saved weights moved towards the teacher: their KL to it on every pair trained on fell
    trained, _ = lm.load_model(str(out), "cpu", quiet=True)
    with torch.no_grad():
        before = distill.reference_loss(student, teacher, seen["pairs"], **settings).item()
        after = distill.reference_loss(trained, teacher, seen["pairs"], **settings).item()
    assert after < 0.8 * before


def test_end_to_end_off_policy_live(tiny_model, tmp_path, capsys, monkeypatch):
    """Off-policy: the teacher samples with the knowledge (the student's sampler is never called), and the
    student trains on those samples. A live teacher is the student itself: no copy, no second load."""
    traj, know = write_inputs(tmp_path)
    out = tmp_path / "round_1" / "model"
    seen = spy(monkeypatch)
    loads = []
    load_model = lm.load_model
    monkeypatch.setattr(lm, "load_model", lambda *a, **k: loads.append(a) or load_model(*a, **k))
    deepcopy = distill.copy.deepcopy
    copied = []
    monkeypatch.setattr(distill.copy, "deepcopy", lambda x, *a: copied.append(x) or deepcopy(x, *a))
    history = distill.main(run_args(tiny_model, traj, know, out, "--mode", "off-policy", "--teacher", "live"))
    _, tokenizer = load_model(tiny_model, "cpu", quiet=True)
    check_sides(seen, tokenizer, sampler_sees_knowledge=True)
    assert seen["live"] == {True} and len(loads) == 1
    assert not any(isinstance(x, torch.nn.Module) for x in copied)
    assert {(m["mode"], m["teacher"]) for m in history} == {("off-policy", "live")}
    assert all(m["kl"] != 0 for m in history)  # top-k 16 of 384: not a divergence, the sign may vary
    settings = json.load(open(out / "args.json"))
    assert settings["mode"] == "off-policy" and settings["teacher"] == "live"
    assert "[teacher]" in capsys.readouterr().out


def test_a_restarted_run_starts_its_metrics_afresh(tiny_model, tmp_path, monkeypatch):
    """Killed after step 1, then rerun: the metrics hold the rerun's steps [1, 2, 3] only (they used to hold
    [1, 1, 2, 3]); no model folder is left by the killed run."""
    traj, know = write_inputs(tmp_path)
    out = tmp_path / "round_1" / "model"
    generate, calls = lm.generate_ids, []

    def dies_at_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill looks like from inside
        return generate(*args, **kwargs)

    monkeypatch.setattr(lm, "generate_ids", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        distill.main(run_args(tiny_model, traj, know, out))
    metrics_path = str(tmp_path / "round_1" / "model.metrics.jsonl")
    assert [m["step"] for m in jsonl.read_jsonl(metrics_path)] == [1] and not out.exists()
    monkeypatch.setattr(lm, "generate_ids", generate)
    distill.main(run_args(tiny_model, traj, know, out))
    assert [m["step"] for m in jsonl.read_jsonl(metrics_path)] == [1, 2, 3]


def test_qwen3_thinking_end_to_end(tiny_qwen3, tmp_path, monkeypatch):
    """The paper setting: Qwen3's real template with thinking on, a sampler that answers like Qwen3
    (<think> first, every third response starting with a newline, cut at --max-new-tokens)."""
    import thinking_stub

    traj, know = write_inputs(tmp_path)
    monkeypatch.setattr(lm, "generate_ids", thinking_stub.generate_ids)
    seen = spy(monkeypatch)
    out = tmp_path / "round_1" / "model"
    args = run_args(tiny_qwen3, traj, know, out, "--thinking", "--max-new-tokens", "64", "--batch-size", "3")
    history = distill.main(args)
    _, tokenizer = lm.load_model(tiny_qwen3, "cpu", quiet=True)
    check_sides(seen, tokenizer, sampler_sees_knowledge=False)
    responses = [tokenizer.decode(r) for _, r in seen["sampled"]]
    assert any(r.startswith("\n<think>") for r in responses) and all("<think>" in r for r in responses)
    assert all(p.endswith("<|im_start|>assistant\n") for p, _ in seen["sampled"])  # thinking on: no empty block
    assert len(history) == 3 and all(math.isfinite(m["kl"]) for m in history) and out.exists()


def test_the_derived_length_is_the_longest_of_every_prompt_with_every_entry(tiny_qwen3):
    """plan_lengths tokenizes only the longest prompts with the longest entries; on prompts and entries of
    many lengths it finds the same maximum as rendering every pair."""
    _, tokenizer = lm.load_model(tiny_qwen3, "cpu", quiet=True)
    words = "go north, take the coin, open the door; examine it. "
    prompts = [
        (f"g#{i}", [dict(MESSAGES[0]), dict(role="user", content=words * (i % 7) + "Your command:")]) for i in range(20)
    ]
    pool = [(f"k{j}", "- " + words * (3 * j + 1)) for j in range(5)]
    marker_ids = tokenizer(lm.generation_marker(tokenizer, True), add_special_tokens=False).input_ids
    longest, pid, kid, student = training.plan_lengths(tokenizer, prompts, pool, True, marker_ids)
    alone = [len(tokenizer(lm.chat_text(tokenizer, m, True), add_special_tokens=False).input_ids) for _, m in prompts]
    assert student == max(alone)
    every = {
        (p, k): len(
            tokenizer(experience.pair_prompts(tokenizer, m, text, True, p)[1], add_special_tokens=False).input_ids
        )
        for p, m in prompts
        for k, text in pool
    }
    assert longest == max(every.values()) == every[(pid, kid)] and kid == "k4"


def test_an_empty_pool_entry_is_dropped_and_said(tmp_path, capsys):
    """One chain that wrote nothing: its entry would give a teacher prompt equal to the student's, so it is
    dropped, loudly; the other entries are the pool."""
    _, know = write_inputs(tmp_path)
    records = jsonl.read_jsonl(know)
    records[2]["knowledge"] = "  \n"
    jsonl.write_jsonl(know, records)
    assert experience.load_pool(know) == [("r1-c0-s1", "- the coin is north")]
    said = capsys.readouterr().out  # with thinking off, the hint does not blame a cut inside <think>
    assert "dropped 1 of 2 pool entries with no knowledge text: line 3 (r1-c1-s1)" in said
    assert "<think>" not in said and "- EXPERIENCE ITEM:" in said
    assert experience.load_pool(know, thinking=True) and "inside <think>" in capsys.readouterr().out


def test_a_round_is_saved_in_the_dtype_it_trained_in(tiny_model, tmp_path):
    """θ_r is saved as it was trained (fp32 master weights on a CPU; bf16 under adamw8bit on a GPU): a bf16 copy
    of fp32-trained weights would undo the round, since one Adam step at the paper's lr moves a weight by far less
    than bf16's spacing (2^-12 ≈ 2.4e-4 for a weight of 0.05), so the copy rounds back to θ_(r-1)."""
    from safetensors import safe_open

    traj, know = write_inputs(tmp_path)
    out = tmp_path / "round_1" / "model"
    distill.main(run_args(tiny_model, traj, know, out, "--steps", "1", "--print-every", "0"))
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    w = torch.full((1000,), 0.05)
    assert torch.equal((w + 5e-6).bfloat16(), w.bfloat16()) and not torch.equal(w + 5e-6, w)


def test_two_trainings_in_one_folder_keep_their_own_metrics(tiny_model, tmp_path):
    """Hand-run distillations whose models share a folder: each writes its metrics beside its own model, and
    every record names the model it trained; neither replaces the other's."""
    traj, know = write_inputs(tmp_path)
    for name, steps in (("a", "1"), ("b", "2")):
        distill.main(
            run_args(tiny_model, traj, know, tmp_path / "models" / name, "--steps", steps, "--print-every", "0")
        )
    a, b = (jsonl.read_jsonl(str(tmp_path / "models" / f"{n}.metrics.jsonl")) for n in "ab")
    assert [r["step"] for r in a] == [1] and [r["step"] for r in b] == [1, 2]
    assert {r["out"] for r in a} == {str(tmp_path / "models" / "a")} and {r["out"] for r in b} == {
        str(tmp_path / "models" / "b")
    }


@pytest.mark.parametrize("held_out", ["id", "ood"])
def test_held_out_trajectories_are_never_trained_on(held_out, tiny_model, tmp_path, monkeypatch):
    """Trajectories of a held-out set (collect.py --set id|ood records it) are refused by extract and distill,
    naming the file, the line and the set, before a model loads; a training set's are taken."""
    import extract

    traj, know = write_inputs(tmp_path)
    records = jsonl.read_jsonl(traj)
    for r in records:
        r.update(feedback="Result: WON", set="deploy")
        r["turns"] = [dict(t, reply="ok") for t in r["turns"]]
    records[1]["set"] = held_out
    jsonl.write_jsonl(traj, records)
    monkeypatch.setattr(lm, "load_model", no_model)
    expected = rf"deploy.jsonl:2: trajectories of the held-out set '{held_out}' \(collect.py --set {held_out}\)"
    with pytest.raises(cli.InputError, match=expected):
        distill.main(run_args(tiny_model, traj, know, tmp_path / "m"))
    with pytest.raises(cli.InputError, match=expected):
        extract.main(
            extract.parse_args(["--model", tiny_model, "--trajectories", traj, "--out", str(tmp_path / "k.jsonl")])
        )
    jsonl.write_jsonl(traj, [dict(r, set="deploy") for r in records])
    assert len(rollouts.load_trajectories(traj)) == 2 and len(rollouts.load_turn_prompts(traj)[0]) == 6
