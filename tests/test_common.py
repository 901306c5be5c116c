"""Tests of the shared generation, model-loading and argument helpers in common.py."""

import torch

import common


def load(folder, dtype=torch.float64):
    return common.load_model(folder, "cpu", dtype=dtype, quiet=True)


def force_tokens(model, schedule):
    """Make greedy decoding emit schedule[i] at generated position i (the last entry from then on),
    by a forward hook on lm_head; returns the list that counts the forward calls."""
    calls = []

    def hook(module, inputs, logits):
        token = schedule[min(len(calls), len(schedule) - 1)]
        calls.append(token)
        logits = logits.clone()
        logits[:, -1, token] += 1e4
        return logits

    model.lm_head.register_forward_hook(hook)
    return calls


def test_eos_ids_lists_the_generation_config_ones(tiny_qwen3, tiny_model):
    model, tokenizer = load(tiny_qwen3)
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert common.eos_ids(model, tokenizer) == [im_end, endoftext]
    model, tokenizer = load(tiny_model)  # a model whose generation config names only the tokenizer's EOS
    assert common.eos_ids(model, tokenizer) == [tokenizer.eos_token_id]


def test_cut_at_eos():
    assert common.cut_at_eos([5, 6, 2, 7, 1], {1, 2}) == [5, 6, 2]
    assert common.cut_at_eos([5, 6, 7], {1, 2}) == [5, 6, 7]
    assert common.cut_at_eos([1, 2], {1, 2}) == [1]


def test_generation_stops_at_the_second_eos(tiny_qwen3):
    """Qwen3's `<|endoftext|>` (listed in the generation config, not the tokenizer's EOS) ends a response."""
    model, tokenizer = load(tiny_qwen3)
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert endoftext != tokenizer.eos_token_id
    word = tokenizer("go", add_special_tokens=False).input_ids[0]
    calls = force_tokens(model, [word, word, word, endoftext])
    prompts = [common.chat_text(tokenizer, [{"role": "user", "content": p}]) for p in ("look", "go north now")]
    responses = common.generate_ids(model, tokenizer, prompts, max_new_tokens=12, temperature=0)
    assert responses == [[word, word, word, endoftext]] * 2
    assert len(calls) == 4  # generate stopped there: prefill + 3 decode steps, not 12
    calls.clear()
    assert common.generate(model, tokenizer, prompts[:1], 12, temperature=0) == [("gogogo", 4)]


def test_sampling_stops_at_every_eos(tiny_qwen3):
    model, tokenizer = load(tiny_qwen3)
    im_end = tokenizer.eos_token_id
    word = tokenizer("go", add_special_tokens=False).input_ids[0]
    force_tokens(model, [word, im_end])
    prompt = common.chat_text(tokenizer, [{"role": "user", "content": "look"}])
    assert common.generate_ids(model, tokenizer, [prompt], 8, temperature=0.7, top_p=0.9, top_k=50) == [[word, im_end]]
