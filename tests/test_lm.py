"""Tests of the shared generation, model-loading and argument helpers in oel/lm.py."""

import argparse
import os
import subprocess
import sys

import pytest
import torch

from oel import cli, lm


def load(folder, dtype=torch.float64):
    return lm.load_model(folder, "cpu", dtype=dtype, quiet=True)


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
    assert lm.eos_ids(model, tokenizer) == [im_end, endoftext]
    model, tokenizer = load(tiny_model)  # a model whose generation config names only the tokenizer's EOS
    assert lm.eos_ids(model, tokenizer) == [tokenizer.eos_token_id]


def test_cut_at_eos():
    assert lm.cut_at_eos([5, 6, 2, 7, 1], {1, 2}) == [5, 6, 2]
    assert lm.cut_at_eos([5, 6, 7], {1, 2}) == [5, 6, 7]
    assert lm.cut_at_eos([1, 2], {1, 2}) == [1]


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_generation_stops_at_the_second_eos(tiny_qwen3, cache):
    """Qwen3's `<|endoftext|>` (listed in the generation config, not the tokenizer's EOS) ends a response."""
    model, tokenizer = load(tiny_qwen3)
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert endoftext != tokenizer.eos_token_id
    word = tokenizer("go", add_special_tokens=False).input_ids[0]
    calls = force_tokens(model, [word, word, word, endoftext])
    prompts = [lm.chat_text(tokenizer, [{"role": "user", "content": p}]) for p in ("look", "go north now")]
    responses = lm.generate_ids(model, tokenizer, prompts, max_new_tokens=12, temperature=0, cache=cache)
    assert responses == [[word, word, word, endoftext]] * 2
    assert len(calls) == 4  # generate stopped there: prefill + 3 decode steps, not 12
    calls.clear()
    assert lm.generate(model, tokenizer, prompts[:1], 12, temperature=0, cache=cache) == [("gogogo", 4)]


def test_sampling_stops_at_every_eos(tiny_qwen3):
    model, tokenizer = load(tiny_qwen3)
    im_end = tokenizer.eos_token_id
    word = tokenizer("go", add_special_tokens=False).input_ids[0]
    force_tokens(model, [word, im_end])
    prompt = lm.chat_text(tokenizer, [{"role": "user", "content": "look"}])
    assert lm.generate_ids(model, tokenizer, [prompt], 8, temperature=0.7, top_p=0.9, top_k=50) == [[word, im_end]]


def model_parser():
    return cli.add_model_args(argparse.ArgumentParser())


def test_model_args_take_their_ranges():
    args = model_parser().parse_args(["--temperature", "0", "--top-p", "1", "--top-k", "0", "--seed", "3"])
    assert (args.temperature, args.top_p, args.top_k, args.seed, args.device) == (0, 1, 0, 3, None)
    args = model_parser().parse_args(["--temperature", "1.3", "--top-p", "0.05", "--top-k", "20", "--device", "cpu"])
    assert (args.temperature, args.top_p, args.top_k, args.device) == (1.3, 0.05, 20, "cpu")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--top-p", "5"], "(0, 1]"),
        (["--top-p", "0"], "(0, 1]"),
        (["--top-p", "nan"], "(0, 1]"),
        (["--temperature", "-0.1"], "[0, inf)"),
        (["--temperature", "inf"], "[0, inf)"),
        (["--temperature", "warm"], "expected a number"),
        (["--top-k", "-1"], "integer >= 0"),
        (["--top-k", "2.5"], "expected an integer"),
        (["--seed", "-3"], "integer >= 0"),
        (["--device", "gpu0"], "expected a device"),
    ],
)
def test_model_args_refuse_out_of_range(argv, expected, capsys):
    with pytest.raises(SystemExit) as e:
        model_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and expected in err


def test_float_range_ends():
    unit = cli.float_range(0, 1, hi_open=True)
    assert unit("0") == 0 and unit("0.999") == 0.999
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[0, 1\)"):
        unit("1")
    assert cli.float_range()("-7.5") == -7.5


def test_a_stage_refuses_top_p_5_before_loading_a_model():
    """`collect.py --top-p 5` used to run and exit 0."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "collect.py", "--top-p", "5", "--model", "/nonexistent"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--top-p" in done.stderr and "(0, 1]" in done.stderr


def test_min_new_tokens_holds_eos_back(tiny_qwen3):
    model, tokenizer = load(tiny_qwen3)
    force_tokens(model, [tokenizer.eos_token_id])  # EOS wins at every step unless held back
    prompt = lm.chat_text(tokenizer, [{"role": "user", "content": "look"}])
    (response,) = lm.generate_ids(model, tokenizer, [prompt], 9, temperature=0, min_new_tokens=5)
    assert len(response) == 6 and response[-1] == tokenizer.eos_token_id
    assert not set(response[:5]) & set(lm.eos_ids(model, tokenizer))


def test_generation_defaults_by_device(monkeypatch):
    monkeypatch.delenv("OEL_GENERATE", raising=False)
    assert lm.generation_defaults("cpu") == ("dynamic", False)
    assert lm.generation_defaults("cuda:0") == ("static", True)  # measured 4.3x faster on an H200
    monkeypatch.setenv("OEL_GENERATE", "dynamic")
    assert lm.generation_defaults("cuda:0") == ("dynamic", False)
    monkeypatch.setenv("OEL_GENERATE", "static")
    assert lm.generation_defaults("cpu") == ("static", False)
    monkeypatch.setenv("OEL_GENERATE", "paged")
    with pytest.raises(cli.InputError, match="OEL_GENERATE"):
        lm.generation_defaults("cpu")


@pytest.mark.parametrize("fixture", ["tiny_qwen3", "tiny_model"])
def test_static_cache_gives_the_dynamic_cache_tokens(fixture, request):
    """Greedy decoding with a static KV cache (prompts padded to STATIC_BUCKET) equals the dynamic cache's."""
    model, tokenizer = load(request.getfixturevalue(fixture))
    texts = ["look around the kitchen and take the coin from the floor, then go north", "go", "open door"]
    prompts = [lm.chat_text(tokenizer, [{"role": "user", "content": t}]) for t in texts]
    dynamic = lm.generate_ids(model, tokenizer, prompts, 24, temperature=0, cache="dynamic")
    static = lm.generate_ids(model, tokenizer, prompts, 24, temperature=0, cache="static")
    assert static == dynamic
    assert max(len(r) for r in dynamic) > 5  # the random model does talk: the comparison is not of empty rows
    with pytest.raises(ValueError, match="static"):
        lm.generate_ids(model, tokenizer, prompts, 4, cache="paged")


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_kv_cache_follows_autocast(tiny_qwen3, cache, monkeypatch):
    """fp32 weights under bf16 autocast: the KV cache is bf16 (a static cache used to refuse the fp32 keys
    that Qwen3's k_norm makes, and a dynamic one kept them in fp32), and sampling works with either cache."""
    model, tokenizer = load(tiny_qwen3, dtype=torch.float32)
    prompts = [lm.chat_text(tokenizer, [{"role": "user", "content": t}]) for t in ("look", "go north now")]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    kv_cache = lm.kv_cache
    kv = kv_cache(model, cache, 64, torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(**batch, past_key_values=kv, use_cache=True)
    used = []  # the cache generate_ids builds
    monkeypatch.setattr(lm, "kv_cache", lambda *a: used.append(kv_cache(*a)) or used[-1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        responses = lm.generate_ids(model, tokenizer, prompts, 10, temperature=0.7, cache=cache)
    for kv in [kv] + used:
        assert (
            {layer.keys.dtype for layer in kv.layers} == {layer.values.dtype for layer in kv.layers} == {torch.bfloat16}
        )
    assert len(used) == 1 and all(0 < len(r) <= 10 for r in responses)


def test_kv_dtype_other_than_the_models_needs_autocast(tiny_qwen3):
    model, tokenizer = load(tiny_qwen3, dtype=torch.float32)
    with pytest.raises(ValueError, match="autocast"):
        lm.generate_ids(model, tokenizer, ["look"], 4, kv_dtype=torch.bfloat16)
    assert len(lm.generate_ids(model, tokenizer, ["look"], 4, kv_dtype=torch.float32)[0]) <= 4


def test_oel_generate_reaches_generate(tiny_model, monkeypatch):
    model, tokenizer = load(tiny_model)
    seen = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: seen.append(kw) or generate(**kw))
    lm.generate_ids(model, tokenizer, ["look"], 3, temperature=0)
    monkeypatch.setenv("OEL_GENERATE", "static")
    lm.generate_ids(model, tokenizer, ["look"], 3, temperature=0)
    assert [kw.get("cache_implementation") for kw in seen] == [None, "static"]
    assert seen[1]["input_ids"].shape[1] % lm.STATIC_BUCKET == 0 and seen[1]["disable_compile"]
