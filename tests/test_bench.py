"""Tests of the benchmarks: the Qwen3 shapes they build (bench_collect.SHAPES) and bench_collect.py's
generation benchmark."""

import pytest
import torch

import bench_collect
import common


@pytest.mark.parametrize(
    "shape, total, non_embedding",  # the model cards: Qwen3-0.6B 0.6B (0.44B non-embedding), 1.7B (1.4B), 4B (3.6B)
    [("qwen3-0.6b", 0.6, 0.44), ("qwen3-1.7b", 1.7, 1.4), ("qwen3-4b", 4.0, 3.6)],
)
def test_build_model_has_the_public_sizes(shape, total, non_embedding):
    model = bench_collect.build_model(shape, torch.bfloat16, "meta")  # shapes only, no memory
    n = sum(p.numel() for p in model.parameters())  # the tied embedding counted once
    embedding = model.get_input_embeddings().weight.numel()
    assert round(n / 1e9, 1) == total and round((n - embedding) / 1e9, 2 if total < 1 else 1) == non_embedding
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    c = model.config
    assert (c.vocab_size, c.head_dim, c.num_key_value_heads, c.rms_norm_eps) == (151936, 128, 8, 1e-6)
    assert c.rope_parameters["rope_theta"] == 1e6 and model.dtype == torch.bfloat16
    assert model.generation_config.eos_token_id == [151645, 151643]


def test_build_model_refuses_an_unknown_shape():
    with pytest.raises(common.InputError, match="qwen3-1.7b"):
        bench_collect.build_model("qwen3-7b")


def test_bench_collect_runs_on_recorded_prompts(tiny_qwen3, tmp_path, capsys):
    turn = {"messages": [{"role": "user", "content": "You are in a kitchen. Your command:"}]}
    common.write_jsonl(tmp_path / "t.jsonl", [{"game": "g", "turns": [turn, turn]}, {"game": "h", "turns": []}])
    argv = ["--shape", "tiny", "--tokenizer", tiny_qwen3, "--trajectories", str(tmp_path / "t.jsonl")]
    argv += ["--batch-sizes", "1,3", "--modes", "dynamic,static", "--new-tokens", "3", "--bandwidth", "10"]
    bench_collect.main(bench_collect.parse_args(argv))
    rows = [
        line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["dynamic"], ["static"])
    ]
    assert [(r[0], r[1]) for r in rows] == [("dynamic", "1"), ("dynamic", "3"), ("static", "1"), ("static", "3")]
    assert all(float(r[4]) > 0 and r[9] != "n/a" and r[10] != "n/a" for r in rows)  # tokens/s, roofline ratios


def test_bench_collect_checks_its_arguments(tmp_path):
    with pytest.raises(SystemExit):
        bench_collect.parse_args(["--modes", "static,paged"])
    with pytest.raises(SystemExit):
        bench_collect.parse_args(["--batch-sizes", "1,0"])
    (tmp_path / "empty.jsonl").write_text('{"turns": []}\n')
    with pytest.raises(common.InputError, match="no turn prompts"):
        bench_collect.main(bench_collect.parse_args(["--trajectories", str(tmp_path / "empty.jsonl")]))


def test_bench_collect_roofline_bytes():
    model = bench_collect.build_model("qwen3-1.7b", torch.bfloat16, "meta")
    assert bench_collect.weight_bytes(model) == 2 * sum(p.numel() for p in model.parameters()) == 2 * 1_720_574_976
    assert bench_collect.kv_bytes_per_token(model, torch.bfloat16) == 28 * 2 * 8 * 128 * 2
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))  # untied: input rows only
    assert bench_collect.weight_bytes(model) == 2 * 1_720_574_976
