"""loop.sh checks every knob before its first stage runs (oel/preflight.py, through the stages' own argument
parsers): a bad value is one line and a non-zero exit within seconds, and nothing is written, so the corrected
rerun is never refused as "made with other settings"."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loop(run, **knobs):
    env = dict(os.environ, SETTING="smoke", RUN=str(run), GAMES=str(run.parent / "games"), PY=sys.executable)
    env.update(HF_HUB_OFFLINE="1", **{k: str(v) for k, v in knobs.items()})
    return subprocess.run(["bash", "loop.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "knobs, expected",
    [
        (dict(LR="-1"), r"distill.py: argument --lr: expected a number in [0, 0.001], got -1"),
        (dict(LR="1e6"), r"distill.py: argument --lr: expected a number in [0, 0.001], got 1e6"),
        (dict(ROUNDS="abc"), "ROUNDS: expected an integer, got 'abc'"),
        (dict(ROUNDS="0"), "ROUNDS: expected a positive integer, got 0"),
        (dict(MODEL="typo"), "MODEL: typo: no such model folder"),
        (dict(EXTRACTOR="nowhere"), "EXTRACTOR: nowhere: no such model folder"),
        (dict(MAX_TURNS="x"), "collect.py: argument --max-turns: expected an integer, got 'x'"),
        (dict(THINKING="yes"), "THINKING=yes: expected 0 or 1"),
        (dict(N_EXTRACT="1", CHAINS="2"), "N_EXTRACT=1, CHAINS=2: 1 trajectories for 2 chains"),
        (dict(MODE="sideways"), "distill.py: argument --mode: invalid choice: 'sideways'"),
        (dict(IFEVAL_NEW="0"), "evaluate.py: argument --ifeval-max-new-tokens: expected a positive integer"),
    ],
)
def test_a_bad_knob_stops_the_loop_before_anything_is_written(knobs, expected, tiny_model, tmp_path):
    run = tmp_path / "run"
    done = loop(run, **{"MODEL": tiny_model, **knobs})
    assert done.returncode != 0
    last = (done.stdout + done.stderr).strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, last
    assert not run.exists()  # no settings.json, no lock, no round folder: the corrected rerun starts clean


def test_a_bad_knob_on_an_existing_run_leaves_its_settings_alone(tiny_model, tmp_path):
    run = tmp_path / "run"
    (run / "round_1").mkdir(parents=True)
    (run / "round_1" / "knowledge.jsonl").write_text("{}\n")
    (run / "round_2").mkdir()
    (run / "round_2" / "extraction_trajectories.jsonl").write_text("{}\n")
    settings = {"SETTING": "smoke", "LR": "1e-5", "ROUNDS": "2"}
    (run / "settings.json").write_text(json.dumps(settings))
    bad = loop(run, MODEL=tiny_model, LR="-1")
    assert bad.returncode != 0 and "argument --lr" in bad.stderr
    assert "other settings" not in bad.stderr  # refused for the value, not for differing from settings.json
    fewer = loop(run, MODEL=tiny_model, ROUNDS="1")  # used to redraw the report under "ROUNDS: 1"
    assert fewer.returncode != 0
    assert "ROUNDS=1: " in fewer.stderr and "already holds rounds up to 2" in fewer.stderr
    assert json.loads((run / "settings.json").read_text()) == settings
    assert sorted(os.listdir(run)) == ["round_1", "round_2", "settings.json"]
