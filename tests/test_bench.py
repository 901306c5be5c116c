"""Tests of the benchmarks: the Qwen3 shapes both build from (generation.SHAPES), bench/generation.py's
generation benchmark and bench/distill_step.py's plan for a shape. The plan against a measured peak is in
tests/test_training.py."""

import sys

import pytest
import torch

from bench import distill_step, generation
from bench import prefix as bench_prefix
from oel import cli, jsonl, training


# the model cards: Qwen3-0.6B 0.6B (0.44B non-embedding), 1.7B (1.4B), 4B (3.6B); params: the exact count
@pytest.mark.parametrize(
    "shape, params, total, non_embedding",
    [
        ("qwen3-0.6b", 596_049_920, 0.6, 0.44),
        ("qwen3-1.7b", 1_720_574_976, 1.7, 1.4),
        ("qwen3-4b", 4_022_468_096, 4.0, 3.6),
    ],
)
def test_build_model_has_the_public_sizes(shape, params, total, non_embedding):
    model = generation.build_model(shape, torch.bfloat16, "meta")  # shapes only, no memory
    n = sum(p.numel() for p in model.parameters())  # the tied embedding counted once
    assert n == params == training.count_params(model.config)  # what the memory plan counts, from the config alone
    embedding = model.get_input_embeddings().weight.numel()
    assert round(n / 1e9, 1) == total and round((n - embedding) / 1e9, 2 if total < 1 else 1) == non_embedding
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    c = model.config
    assert (c.vocab_size, c.head_dim, c.num_key_value_heads, c.rms_norm_eps) == (151936, 128, 8, 1e-6)
    assert c.rope_parameters["rope_theta"] == 1e6 and model.dtype == torch.bfloat16
    assert model.generation_config.eos_token_id == [151645, 151643]


def test_small_is_the_42m_shape_the_memory_plan_was_measured_at():
    """README's CPU figures (`bench/distill_step.py --shape small`, planned 1533 vs measured 1597 MiB) are of this
    architecture: 8 layers of 512, a 32,000-token vocabulary, 41,559,552 parameters."""
    model = generation.build_model("small", torch.float32, "meta")
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.vocab_size) == (8, 512, 1536, 32000)
    assert sum(p.numel() for p in model.parameters()) == 41_559_552 and c.tie_word_embeddings


@pytest.mark.parametrize("shape", sorted(generation.SHAPES))
def test_every_shape_has_its_special_token_ids_in_its_vocabulary(shape):
    """Sampling masks the EOS ids (min_new_tokens) and pads with the pad id: an id past the embedding fails."""
    c = generation.shape_config(shape)
    ids = [c.eos_token_id] if isinstance(c.eos_token_id, int) else list(c.eos_token_id)
    ids += [c.pad_token_id] + ([] if c.bos_token_id is None else [c.bos_token_id])
    assert all(0 <= i < c.vocab_size for i in ids), ids


def test_build_model_refuses_an_unknown_shape():
    with pytest.raises(cli.InputError, match="qwen3-1.7b"):
        generation.build_model("qwen3-7b")


def test_plan_only_prints_the_readme_peaks(monkeypatch, capsys):
    """`bench/distill_step.py --shape qwen3-{1.7b,4b} --plan-only` gives the README table's planned peaks."""
    for shape, peak in [("qwen3-1.7b", "20.67"), ("qwen3-4b", "37.21")]:
        monkeypatch.setattr(sys, "argv", ["bench/distill_step.py", "--shape", shape, "--plan-only"])
        distill_step.main(distill_step.parse_args())
        assert f"planned peak {peak} GiB (static + sampling) of 74.5 GiB" in capsys.readouterr().out


def test_bench_distill_refuses_a_device_this_machine_lacks(monkeypatch, capsys):
    for device, why in [("cuda:64", "CUDA device"), ("gpu", "expected a device such as cuda")]:
        monkeypatch.setattr(sys, "argv", ["bench/distill_step.py", "--device", device, "--plan-only"])
        with pytest.raises(SystemExit) as e:
            distill_step.parse_args()
        assert e.value.code == 2 and why in capsys.readouterr().err


def test_bench_collect_runs_on_recorded_prompts(tiny_qwen3, tmp_path, capsys, monkeypatch):
    """Every (mode, batch) is generated and reported; the figures are the benchmark's arithmetic on the clock's
    readings. The clock is a stand-in (0.1 s a call + 0.01 s a token): on a busy machine a real 1-token call can
    outlast a 3-token one, which made this test fail under load."""

    def clock(device, fn):
        out = fn()
        return 0.1 + 0.01 * len(out[0]), out

    monkeypatch.setattr(generation, "timed", clock)
    turn = {"messages": [{"role": "user", "content": "You are in a kitchen. Your command:"}]}
    jsonl.write_jsonl(tmp_path / "t.jsonl", [{"game": "g", "turns": [turn, turn]}, {"game": "h", "turns": []}])
    argv = ["--shape", "tiny", "--tokenizer", tiny_qwen3, "--trajectories", str(tmp_path / "t.jsonl")]
    argv += ["--batch-sizes", "1,3", "--modes", "dynamic,static", "--new-tokens", "3", "--bandwidth", "10"]
    generation.main(generation.parse_args(argv))
    rows = [
        line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["dynamic"], ["static"])
    ]
    assert [(r[0], r[1]) for r in rows] == [("dynamic", "1"), ("dynamic", "3"), ("static", "1"), ("static", "3")]
    for r in rows:  # gen tokens/s = b x 3 / 0.13 s; prefill 0.11 s; a decode step (0.13 - 0.11) / 2 = 10 ms
        b = int(r[1])
        assert float(r[4]) == pytest.approx(b * 3 / 0.13, abs=0.1) and r[5:8] == ["0.110", "10.0", f"{b / 0.01:.1f}"]
        assert float(r[9]) > 0 and float(r[10]) >= float(r[9])  # roofline ratios: weights, weights + KV cache


def test_bench_collect_says_when_a_step_is_below_the_noise(tiny_qwen3, capsys, monkeypatch):
    monkeypatch.setattr(generation, "timed", lambda device, fn: (0.5, fn()))  # 3 tokens no slower than 1
    generation.main(
        generation.parse_args(["--shape", "tiny", "--tokenizer", tiny_qwen3, "--batch-sizes", "2", "--new-tokens", "3"])
    )
    assert "dynamic     2 | decode time below the timing noise" in capsys.readouterr().out


def test_bench_collect_checks_its_arguments(tiny_qwen3, tmp_path, monkeypatch, capsys):
    for flag, value in (("--modes", "static,paged"), ("--batch-sizes", "1,0")):
        with pytest.raises(SystemExit) as e:
            generation.parse_args([flag, value])
        assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text('{"turns": []}\n')
    with pytest.raises(cli.InputError, match="no turn prompts"):
        generation.main(generation.parse_args(["--trajectories", str(tmp_path / "empty.jsonl")]))
    # a tokenizer with more ids than the shape's vocabulary ("small" has 32,000; here one of 100) is refused
    monkeypatch.setitem(
        generation.OTHER_VOCAB, "small", dict(vocab_size=100, bos_token_id=None, eos_token_id=1, pad_token_id=0)
    )
    with pytest.raises(cli.InputError, match="has 100 token ids"):
        generation.main(generation.parse_args(["--shape", "small", "--tokenizer", tiny_qwen3]))


def test_bench_collect_roofline_bytes():
    model = generation.build_model("qwen3-1.7b", torch.bfloat16, "meta")
    assert generation.weight_bytes(model) == 2 * sum(p.numel() for p in model.parameters()) == 2 * 1_720_574_976
    assert generation.kv_bytes_per_token(model, torch.bfloat16) == 28 * 2 * 8 * 128 * 2
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))  # untied: input rows only
    assert generation.weight_bytes(model) == 2 * 1_720_574_976


@pytest.mark.parametrize("thinking", [False, True])
def test_in_context_plays_each_condition_on_the_same_games(thinking, tiny_qwen3, tmp_path):
    """bench/in_context.py with Qwen3's chat template: one row per condition over the same FrozenLake games, the
    knowledge file read before the model loads, a prompt variant undone when the run ends."""
    from bench import in_context
    from oel import arena_games

    hint = tmp_path / "hint.txt"
    hint.write_text("- H is a hole; go down and right\n")
    argv = ["--model", tiny_qwen3, "--n", "3", "--max-new-tokens", "4", "--out", str(tmp_path / "rows.jsonl")]
    argv += ["--condition", "none", "--condition", f"hint:{hint}:cap=6:prompt=move-only"]
    prompt = arena_games.TURN_PROMPT
    rows = in_context.main(in_context.parse_args(argv + (["--thinking"] if thinking else [])))
    assert arena_games.TURN_PROMPT == prompt
    assert [r["condition"]["name"] for r in rows] == ["none", "hint"] and all(r["games"] == 3 for r in rows)
    written = jsonl.read_jsonl(str(tmp_path / "rows.jsonl"))
    turns = [t for r in written[1]["records"] for t in r["turns"]]
    assert len(written) == 2 and "paired" in rows[1] and rows[1]["turns"] == len(turns) > 0
    assert rows[1]["invalid"] == sum("invalid move" in t["reply"] or not t["valid"] for t in turns) / len(turns)
    with pytest.raises(cli.InputError, match="missing.txt"):
        in_context.main(in_context.parse_args(argv[:-4] + ["--condition", "none", "--condition", "x:missing.txt"]))


def test_bench_prefix_times_both_paths_of_the_teacher_and_of_sampling(tiny_qwen3, tmp_path, capsys):
    """bench/prefix.py on the tiny shape: a row per knowledge length with both paths' figures; and a lock-step
    batch of turns whose head is shared, drawing the same tokens on both paths."""
    argv = ["--knowledge-tokens", "16,64", "--prompt-tokens", "24", "--new-tokens", "4", "--batch", "4", "--pool", "2"]
    rows = bench_prefix.run_forward(bench_prefix.parse_args(argv + ["--repeats", "1"]))
    assert [r["knowledge_tokens"] for r in rows] == [16, 64] and all(r["whole_s"] > 0 < r["shared_s"] for r in rows)
    system = {"role": "system", "content": "You play a text game. Reply with one command in brackets, like [look]."}
    turns = [{"messages": [system, {"role": "user", "content": f"Room {i}: " + "a door, " * i}]} for i in range(4)]
    jsonl.write_jsonl(tmp_path / "t.jsonl", [{"game": f"g{i}", "turns": turns} for i in range(3)])
    argv = ["--turns", str(tmp_path / "t.jsonl"), "--model", tiny_qwen3, "--batch", "5", "--new-tokens", "3"]
    whole, shared = bench_prefix.run_turns(bench_prefix.parse_args(argv + ["--repeats", "1"]))
    out = capsys.readouterr().out
    assert whole > 0 < shared and "| the same tokens" in out and "a head of 0 shared" not in out
    with pytest.raises(cli.InputError, match="t.jsonl: 9 turn prompts after the first turns, --batch 10 asked"):
        bench_prefix.run_turns(bench_prefix.parse_args(argv[:4] + ["--batch", "10"]))
