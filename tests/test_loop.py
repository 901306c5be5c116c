"""loop.sh end to end in the smoke setting with a tiny model: every artifact of every round has
content; a run killed mid-stage resumes, and nothing finished before the kill is touched; the run folder keeps
its settings. tests/test_run_folder.py covers the lock and the signals with stand-in stages."""

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from oel import runfolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loop_env(tiny_model, run, games_dir):
    env = dict(
        os.environ,
        SETTING="smoke",
        MODEL=tiny_model,
        RUN=str(run),
        GAMES=str(games_dir),
        ROUNDS="2",
        IFEVAL_N="2",
        STEPS="2",
        PY=sys.executable,
        HF_HUB_OFFLINE="1",
    )
    return env


def digest(path):
    if os.path.isdir(path):
        return {f: digest(os.path.join(path, f)) for f in sorted(os.listdir(path))}
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def finished_run(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("loop")
    run, games_dir = base / "run", base / "games"
    done = subprocess.run(
        ["bash", "loop.sh"],
        cwd=ROOT,
        env=loop_env(tiny_model, run, games_dir),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run, games_dir, done.stdout


def test_every_artifact_of_every_round_has_content(finished_run, tiny_model):
    run, _, stdout = finished_run
    assert "loop.sh done" in stdout
    for r in (0, 1, 2):
        d = run / f"round_{r}"
        for name in ("eval_id.jsonl", "eval_ood.jsonl", "eval_ifeval.jsonl"):
            records = read(d / name)
            summaries = [x for x in records if x.get("kind") == "summary"]
            assert len(summaries) == 1 and summaries[0]["round"] == r, name
        if r == 0:
            continue
        extract, deploy = read(d / "extraction_trajectories.jsonl"), read(d / "deployment_trajectories.jsonl")
        assert len(extract) == 2 and len(deploy) == 4
        assert all(t["messages"] and "response" in t for x in deploy for t in x["turns"])
        assert {x["round"] for x in extract + deploy} == {r}
        knowledge = read(d / "knowledge.jsonl")
        assert {k["chain"] for k in knowledge} == {0, 1} and sum(k["in_pool"] for k in knowledge) == 2
        assert all(k["round"] == r for k in knowledge)
        assert {x["run"] for x in extract + deploy + knowledge + read(d / "model.metrics.jsonl")} == {
            run.name
        }  # traceable to the run
        assert os.path.isfile(d / "model" / "config.json") and os.path.isfile(d / "model" / "args.json")
        steps = read(d / "model.metrics.jsonl")
        assert [s["step"] for s in steps][-1] >= 1 and all("kl" in s for s in steps)
        assert read(d / "eval_id_incontext.jsonl")
    # fresh training games every round, the same held-out games every round
    g = lambda r, name: {x["game"] for x in read(run / f"round_{r}" / name) if x.get("kind") != "summary"}
    assert not g(1, "extraction_trajectories.jsonl") & g(2, "extraction_trajectories.jsonl") and not g(
        1, "deployment_trajectories.jsonl"
    ) & g(2, "deployment_trajectories.jsonl")
    assert g(0, "eval_id.jsonl") == g(1, "eval_id.jsonl") == g(2, "eval_id.jsonl")
    assert not (g(1, "extraction_trajectories.jsonl") | g(1, "deployment_trajectories.jsonl")) & (
        g(0, "eval_id.jsonl") | g(0, "eval_ood.jsonl")
    )
    report = (run / "report.md").read_text()
    assert "| 2 " in report or "|2|" in report.replace(" ", "")
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (run / "loop.log").read_text()
    assert "SETTING=smoke" in log and "distill.py" in log  # the arguments of every stage are logged


def test_a_killed_run_resumes_without_corruption(finished_run, tiny_model):
    run, games_dir, _ = finished_run
    # delete round 2's model and everything after it, then kill a rerun in the middle of distillation
    r2 = run / "round_2"
    for name in os.listdir(r2):
        if name.startswith("eval") or name == "model":
            subprocess.run(["rm", "-rf", str(r2 / name)], check=True)
    (run / "report.md").unlink()
    before = {
        p: digest(run / p)
        for p in ("round_0", "round_1", "round_2/knowledge.jsonl", "round_2/deployment_trajectories.jsonl")
    }
    env = loop_env(tiny_model, run, games_dir)
    proc = subprocess.Popen(
        ["bash", "loop.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 600
        seen = ""
        while "-- distill r2:" not in seen and time.time() < deadline:
            seen += proc.stdout.readline()
        time.sleep(2)  # inside the distillation stage
        # a crash: the driver and its stage (its own process group, found by the lock it holds) die at once
        stage_pids = [p for p in runfolder.lock_holders(os.path.realpath(run / ".lock")) if p != proc.pid]
        assert stage_pids, "no stage holds the run folder's lock"
    finally:  # killed whatever happened above, so that a failure here leaves no driver behind for later tests
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in runfolder.lock_holders(os.path.realpath(run / ".lock")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    lock = os.path.realpath(run / ".lock")
    for _ in range(600):  # a crash takes down everything the run started, a stage's own child processes too
        subprocess.run(["fuser", "-k", "-9", lock], capture_output=True)
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.2)
        finally:
            os.close(fd)
    deadline = time.time() + 60  # a killed process lets go of its files a moment after the signal
    while runfolder.lock_holders(os.path.realpath(run / ".lock")) and time.time() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(r2 / "model"), "a killed distillation left a model folder that looks finished"
    done = subprocess.run(["bash", "loop.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "collect deploy r2: " in done.stdout and "exists, skipped" in done.stdout
    assert "took over the lock" in done.stdout  # the dead driver's holder line is replaced, and said so
    assert {p: digest(run / p) for p in before} == before  # finished outputs untouched by the kill and the rerun
    assert os.path.isfile(r2 / "model" / "config.json") and (run / "report.md").exists()


def test_a_rerun_with_a_changed_knob_is_refused(finished_run, tiny_model):
    run, games_dir, _ = finished_run
    settings = json.loads((run / "settings.json").read_text())
    assert settings["MODEL"] == tiny_model and settings["STEPS"] == "2" and settings["ROUNDS"] == "2"
    log = (run / "loop.log").read_text()
    env = dict(loop_env(tiny_model, run, games_dir), STEPS="5", LR="5e-5")
    t0 = time.time()
    done = subprocess.run(["bash", "loop.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and time.time() - t0 < 60
    assert "STEPS: 2 -> 5" in done.stderr and "LR: 1e-5 -> 5e-5" in done.stderr and "NEW_SETTINGS=1" in done.stderr
    assert (run / "loop.log").read_text() == log  # refused before anything ran


def test_a_restarted_distillation_holds_one_attempt_of_metrics(finished_run):
    run, _, _ = finished_run
    steps = [s["step"] for s in read(run / "round_2" / "model.metrics.jsonl")]
    assert steps == [1, 2]


def test_the_loop_runs_on_frozenlake(tiny_model, tmp_path):
    """The paper's FrozenLake through every stage unchanged, with a tiny model: the authors' seeds (paper split),
    their 5-turn cap and whole-log prompt; every record names the family and its board; the pool, the
    distillation and the report follow; the report counts the held-out games whose board training saw."""
    run = tmp_path / "run"
    env = dict(loop_env(tiny_model, run, tmp_path / "games"), FAMILY="frozenlake", GAME_SPLIT="paper", ROUNDS="1")
    env.update(MAX_TURNS="5", HISTORY="0", N_EVAL="6", N_OOD="2", N_EXTRACT="2", N_DEPLOY="3", IFEVAL_N="1")
    done = subprocess.run(["bash", "loop.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r1 = run / "round_1"
    deploy = read(r1 / "deployment_trajectories.jsonl")
    assert {x["family"] for x in deploy} == {"frozenlake"} and all(x["board"] and x["seed"] for x in deploy)
    assert [x["game_id"] for x in deploy] == [f"frozenlake/{505209463 + 1000 * (128 + k)}" for k in range(3)]
    assert all(len(t["messages"]) == 1 and "You are the player, shown as 'P'" in t["messages"][0]["content"]
               for x in deploy for t in x["turns"])  # fmt: skip
    assert {k["family"] for k in read(r1 / "knowledge.jsonl")} == {"frozenlake"}
    held = [x for x in read(run / "round_0" / "eval_id.jsonl") if x.get("kind") == "game"]
    assert [x["game_id"] for x in held] == [f"frozenlake/{468460046 + 1000 * i}" for i in range(6)]
    assert all(x["turns_used"] <= 5 for x in held)
    assert {x["family"] for x in read(run / "round_0" / "eval_ood.jsonl") if x.get("kind") == "game"} == {
        "frozenlake-random-3x3-h2"
    }
    assert os.path.isfile(r1 / "model" / "config.json") and read(r1 / "model.metrics.jsonl")
    report = (run / "report.md").read_text()
    assert "Held-out games: 6 on " in report and "share a board with a game played for training" in report
