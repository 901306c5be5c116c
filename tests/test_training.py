"""distill.py's numerics, memory plan and optimizer set-up: the teacher computes exactly as the student
(identical contexts give KL 0 and gradient 0 under bf16 autocast), the optimizers keep lr-1e-6 updates,
the memory plan adds up and matches a measured peak at small shapes."""

import copy
import json
import os
import subprocess
import sys

import pytest
import test_distill
import torch

import distill
from bench import generation
from oel import cli, lm, training

MESSAGES = [
    {"role": "system", "content": "Play the game."},
    {"role": "user", "content": "Goal: take the coin.\n\nGame:\nYou are in a room.\n\nYour command:"},
]
RESPONSES = ["<think>\nthe coin is here\n</think>\n\n[take coin]<|im_end|>", "<think>\nlook first", "[go north]"]


def same_context_pairs(tokenizer):
    """Student and teacher see the very same prompt (Qwen3 template, thinking on)."""
    ids = tokenizer(lm.chat_text(tokenizer, MESSAGES, thinking=True), add_special_tokens=False).input_ids
    marker_ids = tokenizer(lm.generation_marker(tokenizer, thinking=True), add_special_tokens=False).input_ids
    responses = [tokenizer(r, add_special_tokens=False).input_ids for r in RESPONSES]
    return [distill.build_pair(ids, ids, r, marker_ids, 4096) for r in responses]


def kl_and_grad_norm(student, teacher, pairs):
    """The training path of distill.main on one batch under CPU bf16 autocast: (KL per token, grad norm)."""
    student.train()
    student.zero_grad(set_to_none=True)
    n_total = sum(len(p["response_ids"]) for p in pairs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kl, _ = distill.micro_batch_kl(
            student, teacher, pairs, mode="on-policy", temperature=0.7, topk=0, chunk=4, pad_id=0
        )
        (kl / n_total).backward()
    grads = [p.grad.float().flatten() for p in student.parameters() if p.grad is not None]
    return kl.item() / n_total, torch.cat(grads).norm().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identical_contexts_give_kl_zero_and_gradient_zero_under_bf16_autocast(tiny_qwen3, dtype):
    """fp32 master weights (--optimizer adamw) and bf16 weights (--optimizer adamw8bit), both under autocast."""
    student, tokenizer = lm.load_model(tiny_qwen3, "cpu", dtype=dtype, quiet=True)
    pairs = same_context_pairs(tokenizer)
    kl, grad_norm = kl_and_grad_norm(student, distill.make_teacher(student), pairs)
    # full vocabulary: the gradient at equal distributions is p (1 - sum p), zero up to float rounding
    assert kl == 0.0 and grad_norm < 1e-6, (kl, grad_norm)
    if dtype == torch.float32:  # the check can fail: a pure-bf16 teacher beside fp32 weights computes otherwise
        bf16_copy = copy.deepcopy(student).to(torch.bfloat16).eval().requires_grad_(False)
        kl, grad_norm = kl_and_grad_norm(student, bf16_copy, pairs)
        assert kl > 1e-6 and grad_norm > 1e-4, (kl, grad_norm)


def test_teacher_is_a_frozen_copy(tiny_qwen3):
    student, _ = lm.load_model(tiny_qwen3, "cpu", dtype=torch.float32, quiet=True)
    teacher = distill.make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    for (name, s), t in zip(student.named_parameters(), teacher.parameters()):
        assert torch.equal(s, t) and s.dtype == t.dtype and s.data_ptr() != t.data_ptr(), name


# ----------------------------------------------------------------------------- the optimizer


def test_adamw8bit_lands_updates_below_bf16_resolution():
    """lr 1e-5 on weights of 0.02 (bf16's step there is 1.2e-4): torch AdamW on bf16 weights rounds every
    update away; torchao's AdamW8bit with stochastic rounding moves the weights by lr per step on average."""
    steps, lr = 30, 1e-5
    moved = {}
    for name in ("adamw", "adamw8bit"):
        weight = torch.nn.Parameter(torch.full((64, 64), 0.02, dtype=torch.bfloat16))
        start = weight.float().mean().item()  # 0.02 as bf16 holds it
        if name == "adamw":
            optimizer = torch.optim.AdamW([weight], lr=lr, weight_decay=0.0)
        else:
            optimizer = training.make_optimizer([weight], name, lr, 0.0)
        for _ in range(steps):
            weight.grad = torch.ones_like(weight)  # Adam's update is then lr in size, every step
            optimizer.step()
        moved[name] = (start - weight.float().mean().item()) / (lr * steps)
    assert moved["adamw"] == 0.0 and abs(moved["adamw8bit"] - 1) < 0.1, moved


def test_optimizer_states_have_the_planned_size():
    weight = torch.nn.Parameter(torch.zeros(256, 256))
    weight.grad = torch.ones_like(weight)
    optimizer = training.make_optimizer([weight], "adamw", 1e-3, 0.01)
    optimizer.step()
    state_bytes = sum(t.numel() * t.element_size() for t in optimizer.state[weight].values() if t.dim())
    assert state_bytes == 8 * weight.numel()  # two fp32 moments, as plan_memory counts for adamw


# ----------------------------------------------------------------------------- the memory plan

GIB = 2**30
PAPER = dict(batch_size=32, prompt_tokens=1500, teacher_prompt_tokens=1500 + 2048, new_tokens=1024)


def qwen3_4b():
    return generation.shape_config("qwen3-4b")


def plan_4b(**kw):
    config = qwen3_4b()
    settings = dict(PAPER, weight_bytes=2, optimizer="adamw8bit", checkpointing=True, micro_batch_tokens=4096)
    settings.update(kw)
    return training.plan_memory(config, 4_022_468_096, chunk=128, **settings)


def test_plan_terms_by_hand_for_qwen3_4b():
    assert training.count_params(qwen3_4b()) == 4_022_468_096  # Qwen3-4B's public count, 4.02B
    plan = plan_4b()
    # K and V of 36 layers, 8 heads of 128, bf16, for 32 sequences of 1500 + 1024 tokens
    assert plan["sampling"]["KV cache"] == 32 * 2524 * 36 * 2 * 8 * 128 * 2
    assert plan["static"]["student weights"] == plan["static"]["teacher weights"] == 2 * 4_022_468_096
    assert 2 * 4_022_468_096 < plan["static"]["optimizer states"] < 2.1 * 4_022_468_096
    peak, phase = training.planned_peak(plan)
    assert peak < 80e9 * 0.9 and phase == "sampling"
    # fp32 master weights with fp32 AdamW (and an fp32 teacher, to compute alike) do not fit on 80 GB
    adamw = plan_4b(weight_bytes=4, optimizer="adamw", autocast_bytes=2)
    assert sum(adamw["static"].values()) > 80e9 * 0.9 and "DOES NOT FIT" in training.format_plan(adamw, 80e9)
    # without checkpointing, one micro-batch's activations of all 36 layers
    no_ckpt = plan_4b(checkpointing=False)
    assert no_ckpt["training"]["activations"] > 10 * plan["training"]["activations"]
    text = training.format_plan(plan, 80e9)
    assert "planned peak" in text and "KV cache 11.09" in text and "of 74.5 GiB" in text and "NOT FIT" not in text


def test_plan_matches_the_measured_peak_at_a_small_shape():
    """bench/distill_step.py runs two whole steps of the 42M-parameter Qwen3 shape "small" on this CPU and measures
    the peak RSS growth (with a fixed malloc mmap threshold, so that RSS follows live memory); the plan, made
    from the config and the settings alone, must be within 10%."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "bench/distill_step.py", "--shape", "small", "--batch", "4", "--prompt-tokens", "160"]
    cmd += ["--knowledge-tokens", "100", "--new-tokens", "8", "--steps", "2"]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["planned_bytes"] > 0.5 * GIB  # the terms dominate the process's own overhead
    assert abs(result["measured_bytes"] / result["planned_bytes"] - 1) < 0.10, out.stdout


# ----------------------------------------------------------------------------- distill.main


def test_main_prints_the_plan_and_the_measured_peak(tiny_qwen3, tmp_path, capsys):
    traj, know = test_distill.write_inputs(tmp_path)
    argv = ["--model", tiny_qwen3, "--trajectories", traj, "--knowledge", know, "--out", str(tmp_path / "m")]
    args = distill.parse_args(argv + ["--steps", "1", "--batch-size", "2", "--max-new-tokens", "4", "--thinking"])
    assert args.optimizer is None and args.gradient_checkpointing is None
    distill.main(args)
    resolved = json.loads((tmp_path / "m" / "args.json").read_text())["resolved"]
    assert resolved["optimizer"] == "adamw" and resolved["gradient_checkpointing"] is False  # the CPU defaults
    printed = capsys.readouterr().out
    assert "memory plan (MiB)" in printed and "static" in printed and "KV cache" in printed
    assert "planned peak" in printed and "measured process peak RSS" in printed
    assert printed.index("memory plan") < printed.index("teacher | steps")  # the plan comes before the run


@pytest.mark.parametrize("optimizer", ["adamw", "adamw8bit"])
def test_the_kv_cache_of_sampling_takes_the_weights_dtype_as_planned(tiny_qwen3, optimizer):
    """Under bf16 autocast (CPU here, CUDA in a GPU run): bf16 weights (adamw8bit) sample with a bf16 cache,
    fp32 master weights (adamw) with an fp32 one; plan_memory counts the cache in the weights' dtype."""
    weights_dtype = torch.bfloat16 if optimizer == "adamw8bit" else torch.float32  # training_dtypes on a GPU
    student, tokenizer = lm.load_model(tiny_qwen3, "cpu", dtype=weights_dtype, quiet=True)
    batch = tokenizer([lm.chat_text(tokenizer, MESSAGES, thinking=True)], return_tensors="pt")
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = student.generate(**batch, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    layer = out.past_key_values.layers[0]
    assert layer.keys.dtype == layer.values.dtype == weights_dtype


def test_adamw8bit_without_torchao_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    traj, know = test_distill.write_inputs(tmp_path)
    argv = ["--model", str(tmp_path / "no-such-model"), "--trajectories", traj, "--knowledge", know]
    args = distill.parse_args(argv + ["--out", str(tmp_path / "m"), "--optimizer", "adamw8bit"])
    find_spec = training.importlib.util.find_spec
    monkeypatch.setattr(
        training.importlib.util, "find_spec", lambda name: None if name == "torchao" else find_spec(name)
    )
    with pytest.raises(cli.InputError, match="adamw8bit needs torchao"):
        distill.main(args)  # a missing model folder would be the error if the model loaded first
