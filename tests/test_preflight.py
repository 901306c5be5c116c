"""loop.sh checks every knob before its first stage runs (oel/preflight.py, through the stages' own argument
parsers): a bad value is one line and a non-zero exit within seconds, and nothing is written, so the corrected
rerun is never refused as "made with other settings"."""

import json
import os
import subprocess
import sys

import pytest

from oel import cli

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
        (dict(N_EXTRACT="1", CHAINS="2"), "extract.py: 1 trajectories for 2 chains"),
        (dict(N_EXTRACT="2", CHAINS="2", USE_STEPS="15"), "extract.py: --use-steps 15: each chain reads only 1"),
        (dict(MODE="sideways"), "distill.py: argument --mode: invalid choice: 'sideways'"),
        (dict(IFEVAL_NEW="0"), "evaluate.py: argument --ifeval-max-new-tokens: expected a positive integer"),
        (dict(N_EVALS="50"), "N_EVALS is not a knob; did you mean N_EVAL? (loop.sh would run without it)"),
        (dict(THINKING="1"), "its chat template has no thinking switch; use THINKING=0"),
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


def test_a_knob_name_one_letter_off_is_named(tmp_path, monkeypatch):
    from oel import preflight

    knobs = {"N_EVAL", "N_OOD", "MODEL", "MODE", "STEPS", "BATCH", "TEACHER", "EXTRACTOR", "RUN", "PY"}
    environ = {"N_EVALS": "50", "HOME": "/root", "PATH": "/bin", "MODEL": "m", "TERM": "x", "EXTRACTR": "m", "PWD": "/"}
    assert preflight.misspelt_knobs(environ, knobs) == [("EXTRACTR", "EXTRACTOR"), ("N_EVALS", "N_EVAL")]
    monkeypatch.setenv("N_EVALS", "50")
    with pytest.raises(cli.InputError, match=r"N_EVALS is not a knob; did you mean N_EVAL\? .*nothing was run"):
        preflight.main(["--run", str(tmp_path / "run"), "--rounds", "1", "--model", "m", "--knobs", "N_EVAL MODEL"])


def test_inputs_of_another_run_are_refused_before_any_stage(tiny_model, tmp_path, monkeypatch):
    """THINKING=1 with a template that has no thinking switch, and trajectories of another family or model in
    the run folder: refused at the start, naming the knob and the file, instead of minutes later in a stage."""
    from oel import preflight

    run = tmp_path / "run"
    base = ["--run", str(run), "--rounds", "1", "--model", tiny_model]
    with pytest.raises(cli.InputError, match=r"THINKING=1: MODEL=.*: its chat template has no thinking switch"):
        preflight.main([*base, "--switch", "THINKING=1"])
    (run / "round_1").mkdir(parents=True)
    traj = run / "round_1" / "extraction_trajectories.jsonl"
    traj.write_text(json.dumps({"family": "textworld", "model": tiny_model, "turns": []}) + "\n")
    with pytest.raises(cli.InputError, match=r"FAMILY=frozenlake: .*extraction_trajectories.jsonl holds textworld"):
        preflight.main([*base, "--family", "frozenlake"])
    preflight.main([*base, "--family", "textworld"])  # the run's own family and model: nothing to say
    preflight.main([*base, "--family", "frozenlake", "--switch", "NEW_SETTINGS=1"])  # set aside, then redone
    traj.write_text(json.dumps({"family": "textworld", "model": "Qwen/Qwen3-1.7B", "turns": []}) + "\n")
    with pytest.raises(cli.InputError, match=r"MODEL=.*extraction_trajectories.jsonl was played by Qwen/Qwen3-1.7B"):
        preflight.main([*base, "--family", "textworld"])


@pytest.mark.parametrize("fork", [True, False])
def test_each_stage_answers_for_its_own_flags(fork, monkeypatch):
    """`STAGE.py --check FLAGS`, asked of every stage at once (a forked child each, or a fresh interpreter where
    there is no fork): the stages that take their flags say nothing, a refusal is one line naming its stage."""
    from oel import preflight

    if not fork:
        monkeypatch.delattr(os, "fork")
    monkeypatch.chdir(ROOT)
    preflight.ask_stages(
        [["collect.py", "--n", "2"], ["distill.py", "--trajectories", "t", "--knowledge", "k", "--out", "m"]]
    )
    with pytest.raises(cli.InputError, match=r"^distill.py: argument --lr: expected a number in \[0, 0.001\], got 7"):
        preflight.ask_stages(
            [["collect.py"], ["distill.py", "--trajectories", "t", "--knowledge", "k", "--out", "m", "--lr", "7"]]
        )
    with pytest.raises(cli.InputError, match=r"^extract.py: 3 trajectories for 4 chains"):
        preflight.ask_stages([["extract.py", "--trajectories", "t", "--out", "k", "--chains", "4"]], extraction_games=3)
