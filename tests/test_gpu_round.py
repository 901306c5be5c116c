"""bench/gpu_round.py on the CPU with the tiny shape: the real loop.sh, every stage under the probe, so that the
GPU round cannot rot while no GPU runs it."""

import json
import os

from bench import gpu_round

TINY = ["MAX_NEW=6", "EXTRACT_NEW=8", "IFEVAL_NEW=4", "N_DEPLOY=2", "N_EVAL=2", "N_OOD=1", "BATCH=2",
        "STEPS=1", "IFEVAL_N=2", "KNOW_TOKENS=64", "TRAJ_TOKENS=256"]  # fmt: skip


def test_a_round_of_the_real_loop_reports_every_stage(tmp_path, capsys):
    result = gpu_round.main(
        gpu_round.parse_args(["--shape", "tiny", "--out", str(tmp_path)] + sum([["--knob", k] for k in TINY], []))
    )
    whats = [r["what"] for r in result["stages"]]
    evaluation = "evaluate --sets id,ood,ifeval"
    stages = ["collect --set extract", "collect --set deploy", "extract", "distill"]
    assert whats == [evaluation, *stages, evaluation, "evaluate --sets id --knowledge", "report"]
    assert result["status"] == 0 and all(
        r["status"] == 0 and r["seconds"] > 0 and r["peak_mib"] > 0 for r in result["stages"]
    )
    by = {w: r for w, r in zip(whats, result["stages"])}
    assert by["collect --set deploy"]["games"] == 2 and by["collect --set deploy"]["tokens"] > 0
    assert by["distill"]["steps"] == 1 and by["distill"]["prompts"] == 2
    assert by["evaluate --sets id --knowledge"]["id_incontext"]["games"] == 2
    assert by["evaluate --sets id,ood,ifeval"]["ifeval"]["prompts"] == 2
    assert json.loads((tmp_path / "round.json").read_text())["stages"] == result["stages"]
    out = capsys.readouterr().out
    assert "gpu round | tiny | cpu" in out and "distill" in out
    assert os.path.exists(tmp_path / "model" / "config.json")


def test_the_planned_round_by_hand():
    """Sokoban's deployment term: 12,800 games in lock-step turns of 64, 5 turns, 1024 decode steps each reading
    the 4B's bf16 weights and 64 sequences' keys and values (36 layers x 8 heads x 128 x 2 x 2 bytes a token)
    at an average context of 1000 + 512 tokens, over 4.8 TB/s."""
    shape, rows = gpu_round.plan("sokoban")
    deploy = dict((name, limit) for name, _, limit, _ in rows)["collect deploy"]
    step = (2 * 4_022_468_096 + 64 * 1512 * 36 * 8 * 128 * 2 * 2) / 4.8e12
    prefill = 2 * 4_022_468_096 * 12_800 * 5 * 1000 / 989e12
    assert shape == "qwen3-4b" and abs(deploy - (1000 * 1024 * step + prefill)) < 1e-6 * deploy
