"""The paper setting end to end, as a user runs it on a GPU (`SETTING=paper MODEL=Qwen/Qwen3-1.7B bash loop.sh`),
at smoke sizes on a CPU: loop.sh with SETTING=paper and its own defaults for everything that is not a size
(thinking on, response and extractor caps, lr, knowledge budget), a tiny random Qwen3 with Qwen3's real chat
template, and a sampler that answers the way Qwen3 does with thinking on (tests/thinking_stub.py:
`<think>...</think>` first, some responses starting with a newline). Every stage's prompts and samples are
logged by the stub, so the test checks what each stage asked for, not just that files exist."""

import json
import math
import os
import subprocess
import sys

import pytest

from oel import experience

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNOWLEDGE_HEADER = "What you learned from earlier games:"


def read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def paper_run(tiny_qwen3, tmp_path_factory):
    base = tmp_path_factory.mktemp("paper")
    run, log = base / "run", base / "stub.jsonl"
    sizes = dict(
        ROUNDS="1",
        N_EXTRACT="2",
        N_DEPLOY="2",
        N_EVAL="2",
        N_OOD="1",
        CHAINS="2",
        STEPS="2",
        BATCH="2",
        MAX_TURNS="3",
        IFEVAL_N="2",
        IFEVAL_NEW="64",
        CURVE="0",
    )  # sizes only: every other knob is the paper's
    env = dict(
        os.environ,
        SETTING="paper",
        MODEL=tiny_qwen3,
        RUN=str(run),
        GAMES=str(base / "games"),
        PY=f"{sys.executable} tests/thinking_stub.py",
        OEL_STUB_LOG=str(log),
        HF_HUB_OFFLINE="1",
        **sizes,
    )
    done = subprocess.run(["bash", "loop.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    return run, read(log), done.stdout


def test_the_paper_setting_runs_with_thinking_on_and_its_own_caps(paper_run):
    run, log, stdout = paper_run
    assert "THINKING=1" in stdout.replace(" ", "") or '"THINKING": "1"' in (run / "settings.json").read_text()
    caps = {(r["stage"], r["max_new_tokens"]) for r in log if r["event"] == "generate"}
    assert ("collect.py", 1024) in caps, caps  # the authors' 1024 tokens with thinking on
    assert ("extract.py", 2048) in caps, caps  # the extractor's cap follows the setting
    args = json.loads((run / "round_1" / "model" / "args.json").read_text())
    assert args["lr"] == 5e-6 and args["thinking"]  # the authors' lr at 1.7B (the default paper model)


def test_the_pool_is_written_from_the_answers_after_think(paper_run):
    run, _, _ = paper_run
    pool = [k for k in read(run / "round_1" / "knowledge.jsonl") if k["in_pool"]]
    assert len(pool) == 2 and all(k["knowledge"].strip() for k in pool)
    for k in pool:
        assert "<think>" not in k["knowledge"] and "let me think" not in k["knowledge"]
        assert "open a container before taking what is inside" in k["knowledge"]


def test_commands_are_read_from_the_final_answers(paper_run):
    run, _, _ = paper_run
    turns = [t for r in read(run / "round_1" / "deployment_trajectories.jsonl") for t in r["turns"]]
    assert turns and all(t["response"].lstrip("\n").startswith("<think>") for t in turns)
    for t in turns:
        answer = t["response"].rsplit("</think>", 1)[1].strip()
        assert t["answer"] == answer and answer == f"[{t['command']}]" and t["valid"], t


def test_the_teacher_sees_the_pool_and_the_student_does_not(paper_run):
    run, log, _ = paper_run
    pool = {k["knowledge"].strip() for k in read(run / "round_1" / "knowledge.jsonl") if k["in_pool"]}
    student = [r["prompt"] for r in log if r["stage"] == "distill.py" and r["event"] == "generate"]
    rendered = [r["text"] for r in log if r["stage"] == "distill.py" and r["event"] == "chat_text"]
    teacher = [t for t in rendered if KNOWLEDGE_HEADER in t]
    assert student and len(teacher) >= len(student)  # a teacher prompt for every student prompt
    assert not any(KNOWLEDGE_HEADER in s for s in student)
    blocks = [experience.KNOWLEDGE_BLOCK.format(knowledge=k) for k in pool]
    for t in teacher:  # every teacher prompt holds exactly one pool entry
        assert sum(b in t for b in blocks) == 1
    for s in student:  # every student prompt has its teacher: the same prompt with one pool entry inserted
        assert any(t.replace(b, "", 1) == s for t in teacher for b in blocks if b in t)
    # a sampled response that starts with a newline was distilled (Qwen3's template ends the marker with one)
    samples = [r["response"] for r in log if r["stage"] == "distill.py" and r["event"] == "generate"]
    assert any(s.startswith("\n") for s in samples), samples
    steps = read(run / "round_1" / "model.metrics.jsonl")
    assert [s["step"] for s in steps] == [1, 2] and all(s["responses"] == 2 and not s["skipped"] for s in steps)
    assert all(math.isfinite(s["kl"]) and s["kl"] != 0 and 0 < s["grad_norm"] < math.inf for s in steps)


def test_ifeval_is_answered_with_thinking_off_and_the_authors_sampling(paper_run):
    _, log, _ = paper_run
    ifeval = [
        r
        for r in log
        if r["stage"] == "evaluate.py" and r["event"] == "generate" and "Your command:" not in r["prompt"]
    ]
    assert ifeval
    for r in ifeval:
        assert r["prompt"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert (r["temperature"], r["top_p"], r["top_k"]) == (0.7, 0.8, 20)
