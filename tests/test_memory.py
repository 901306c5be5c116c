"""distill.py's numerics, memory plan and optimizer set-up: the teacher computes exactly as the student
(identical contexts give KL 0 and gradient 0 under bf16 autocast), the optimizers keep lr-1e-6 updates,
the memory plan adds up and matches a measured peak at small shapes."""

import copy
import types

import pytest
import torch

import common
import distill

MESSAGES = [
    {"role": "system", "content": "Play the game."},
    {"role": "user", "content": "Goal: take the coin.\n\nGame:\nYou are in a room.\n\nYour command:"},
]
RESPONSES = ["<think>\nthe coin is here\n</think>\n\n[take coin]<|im_end|>", "<think>\nlook first", "[go north]"]


def same_context_pairs(tokenizer):
    """Student and teacher see the very same prompt (Qwen3 template, thinking on)."""
    text = common.chat_text(tokenizer, MESSAGES, thinking=True)
    marker = distill.generation_marker(tokenizer, thinking=True)
    responses = [tokenizer(r, add_special_tokens=False).input_ids for r in RESPONSES]
    return [distill.build_pair(tokenizer, text, text, r, marker, 4096) for r in responses]


def kl_and_grad_norm(student, teacher, pairs):
    """The training path of distill.main on one batch under CPU bf16 autocast: (KL per token, grad norm)."""
    student.train()
    student.zero_grad(set_to_none=True)
    args = types.SimpleNamespace(temperature=0.7, topk=0, chunk=4, pad_id=0)
    n_total = sum(len(p["response_ids"]) for p in pairs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sums = distill.micro_batch_loss(student, teacher, pairs, n_total, args)
    grads = [p.grad.float().flatten() for p in student.parameters() if p.grad is not None]
    return sums[0].item() / n_total, torch.cat(grads).norm().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identical_contexts_give_kl_zero_and_gradient_zero_under_bf16_autocast(tiny_qwen3, dtype):
    """fp32 master weights (--optimizer adamw) and bf16 weights (--optimizer adamw8bit), both under autocast."""
    student, tokenizer = common.load_model(tiny_qwen3, "cpu", dtype=dtype, quiet=True)
    pairs = same_context_pairs(tokenizer)
    kl, grad_norm = kl_and_grad_norm(student, distill.make_teacher(student), pairs)
    # full vocabulary: the gradient at equal distributions is p (1 - sum p), zero up to float rounding
    assert kl == 0.0 and grad_norm < 1e-6, (kl, grad_norm)
    if dtype == torch.float32:  # the check can fail: a pure-bf16 teacher beside fp32 weights computes otherwise
        bf16_copy = copy.deepcopy(student).to(torch.bfloat16).eval().requires_grad_(False)
        kl, grad_norm = kl_and_grad_norm(student, bf16_copy, pairs)
        assert kl > 1e-6 and grad_norm > 1e-4, (kl, grad_norm)


def test_teacher_is_a_frozen_copy(tiny_qwen3):
    student, _ = common.load_model(tiny_qwen3, "cpu", dtype=torch.float32, quiet=True)
    teacher = distill.make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    for (name, s), t in zip(student.named_parameters(), teacher.parameters()):
        assert torch.equal(s, t) and s.dtype == t.dtype and s.data_ptr() != t.data_ptr(), name
