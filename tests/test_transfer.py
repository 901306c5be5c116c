"""bench/transfer.py: the transfer ratio against hand-computed values, an entry with no in-context effect said
plainly (never divided by), and the whole measurement on a tiny random model: a ratio near 1 after enough steps
of distillation, exactly 0 with a learning rate of 0."""

import json
import math

import pytest
import torch

from bench import transfer
from oel import experience, jsonl, lm

MESSAGES = [{"role": "user", "content": "You are in a kitchen. There is a coin on the floor. Your command:"}]
ENTRY = "- open containers before taking things from them; read the goal first"


def test_transfer_ratio_by_hand():
    before, teacher = [0.0] * 10 + [0.5] * 10, [1.0] * 20
    full = transfer.transfer_ratio(before, teacher, teacher)
    assert full["ratio"] == pytest.approx(1.0) and full["ratio_ci"] == pytest.approx((1.0, 1.0))
    assert full["effect"] == pytest.approx(0.75) and full["effect_ci"][0] > 0
    assert transfer.transfer_ratio(before, teacher, before)["ratio"] == 0.0
    half = transfer.transfer_ratio(before, teacher, [0.5] * 10 + [0.75] * 10)
    assert half["ratio"] == pytest.approx(0.5)


def test_an_entry_that_changes_nothing_has_no_ratio():
    """No in-context effect: the ratio is undefined and said so, not a division by zero (or by noise)."""
    same = [0.0, 1.0] * 10
    result = transfer.transfer_ratio(same, same, [1.0] * 20)
    assert result["ratio"] is None and result["effect"] == 0.0
    noisy = transfer.transfer_ratio([0.0, 1.0] * 10, [1.0, 0.0] * 9 + [1.0, 1.0], [1.0] * 20)  # +0.05, within noise
    assert noisy["ratio"] is None and noisy["effect_ci"][0] < 0 < noisy["effect_ci"][1]
    row = transfer.compare([dict(noisy, entry="e", distill="-", before=0.5, teacher=0.55, after=1.0, seconds=1)])
    assert "undefined: no in-context effect" in row


def test_measures():
    assert transfer.measure_fn(r"regex:\[[^\]]+\]")("I will [open door]") == 1
    assert [transfer.measure_fn("max-words:2")(r) for r in ("go north", "go north now", "")] == [1, 0, 0]
    assert [transfer.measure_fn("min-words:3")(r) for r in ("go north", "go north now")] == [0, 1]
    assert transfer.measure_fn("starts:look")("Look around") == 1 and transfer.measure_fn("absent:go")("go") == 0
    with pytest.raises(Exception, match="expected regex:PATTERN"):
        transfer.measure_fn("words:3")


def exact_behaviour(target):
    """A behaviour without sampling noise, for a random model: the probability of `target` as the reply's first
    token. The entry in context changes it (the teacher's level), and so can distillation."""

    def behaviour(model, tokenizer, prompts, knowledge, args):
        texts = [lm.chat_text(tokenizer, experience.insert_knowledge(m, knowledge)) for _, m in prompts]
        values = []
        with torch.no_grad():
            for text in texts:
                ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
                probs = model(ids).logits[0, -1].float().softmax(-1)
                values.append(probs[target].item())
        return values, [[""] for _ in texts]

    return behaviour


@pytest.mark.parametrize("lr, expected", [("1e-3", (0.7, 1.3)), ("0", (0.0, 0.0))])
def test_a_tiny_model_takes_on_its_teacher(lr, expected, tiny_model, tmp_path, monkeypatch):
    """Distilled on the same turn prompts with enough steps, the student's first-token probability moves to the
    teacher's (ratio near 1); with a learning rate of 0 it does not move at all (ratio 0)."""
    prompts = [(f"g{i}#0:0", [{"role": "user", "content": MESSAGES[0]["content"] + " " * i}]) for i in range(4)]
    traj = tmp_path / "train.jsonl"
    turns = [dict(turn=0, messages=m, response="go", command="go") for _, m in prompts]
    jsonl.write_jsonl(str(traj), [dict(game=f"g{i}", episode=0, turns=[t]) for i, t in enumerate(turns)])
    model, tokenizer = lm.load_model(tiny_model, quiet=True)
    with torch.no_grad():  # the token whose probability the entry raises the most
        logits = lambda k: model(
            tokenizer(lm.chat_text(tokenizer, experience.insert_knowledge(MESSAGES, k)), return_tensors="pt").input_ids
        ).logits[0, -1]
        target = int((logits(ENTRY).softmax(-1) - logits(None).softmax(-1)).argmax())
    monkeypatch.setattr(transfer, "behaviour", exact_behaviour(target))
    monkeypatch.setattr(transfer, "turn_prompts", lambda args: ({"train": str(traj)}, prompts))
    argv = ["--knowledge", ENTRY, "--measure", "starts:x", "--model", tiny_model, "--out-dir", str(tmp_path / "run")]
    argv += ["--prompts-dir", str(tmp_path / "prompts")]
    argv += ["--save-every", "20", "--distill", "--lr", lr, "--steps", "60", "--batch-size", "4"]
    argv += ["--max-new-tokens", "6", "--loss-topk", "0"]
    result = transfer.main(transfer.parse_args(argv))
    assert result["effect"] > 0 and result["ratio"] is not None
    assert expected[0] <= result["ratio"] <= expected[1], result
    assert [step for step, _ in result["curve"]] == [0, 20, 40, 60]
    saved = json.loads((tmp_path / "run" / "transfer.json").read_text())
    assert saved["ratio"] == result["ratio"] and (tmp_path / "run" / "transfer.png").read_bytes()[:4] == b"\x89PNG"


def test_held_out_prompts_are_made_before_training_prompts(tmp_path, monkeypatch):
    """Training games are made disjoint from the held-out games that exist, so the held-out set comes first (made
    the other way round, the held-out set is refused as solvable by a training game's walkthrough)."""
    made = []

    def fake_collect(args):
        made.append(args.set)
        turns = [dict(turn=t, messages=MESSAGES, response="go", command="go") for t in range(6)]
        jsonl.write_jsonl(args.out, [dict(game=f"{args.set}-g0", episode=0, set=args.set, turns=turns)])  # as collect

    monkeypatch.setattr(transfer.collect, "main", fake_collect)
    args = transfer.parse_args(["--screen", "--prompts-dir", str(tmp_path)])
    files, held_out = transfer.turn_prompts(args)
    assert made == ["id", "deploy"]
    assert len(held_out) == 6 and sorted(files) == ["held_out", "train"]
    args.held_out_prompts = 3  # made once, then reused; a subset evenly spaced
    assert [pid for pid, _ in transfer.turn_prompts(args)[1]] == [held_out[i][0] for i in (0, 2, 4)]
    assert made == ["id", "deploy"]


def test_screen_measures_each_entry_and_reuses_the_base_replies(tiny_model, tmp_path, monkeypatch):
    """The screen's table, one row per entry asked for; the base model's replies are kept, so a second screen (or a
    run's before/teacher) samples nothing again."""
    calls = []

    def fake_behaviour(model, tokenizer, prompts, knowledge, args):
        calls.append(knowledge)
        replies = [["[go north]"] if knowledge else ["go north"] for _ in prompts]
        follows = transfer.measure_fn(args.measure)
        return [follows(r[0]) for r in replies], replies

    prompts = [(f"g{i}#0:0", MESSAGES) for i in range(12)]
    monkeypatch.setattr(transfer, "behaviour", fake_behaviour)
    monkeypatch.setattr(transfer, "turn_prompts", lambda args: ({}, prompts))
    argv = ["--screen", "bracket", "short", "--model", tiny_model, "--prompts-dir", str(tmp_path)]
    table = transfer.screen(transfer.parse_args(argv))
    rows = table.splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| bracket", "| short"]
    assert "| 0.00 | 1.00 | +1.00 [+1.00, +1.00] |" in rows[0] and "| 1.00 | 1.00 | +0.00" in rows[1]
    assert len(calls) == 3  # no knowledge once, then each entry: the replies without it are shared
    assert transfer.screen(transfer.parse_args(argv)) == table and len(calls) == 3


def test_compare_prints_a_row_per_run_and_draws_their_curves(tmp_path, capsys):
    base = dict(entry="rambling", measure="min-words:5", before=0.42, teacher=0.26, seconds=60, effect=-0.16, prompts=4)
    base.update(effect_ci=[-0.24, -0.08], ratio_ci=[0.4, 1.2])
    runs = []
    for name, after in (("defaults", 0.30), ("--lr=1e-4", 0.20)):
        folder = tmp_path / name
        folder.mkdir()
        curve = [[0, 0.42], [10, (0.42 + after) / 2], [20, after]]
        run = dict(base, distill=name, after=after, ratio=(after - 0.42) / -0.16, curve=curve)
        if name == "defaults":  # a run that kept each prompt's share at every step: its points get intervals
            run["per_step"] = {"0": [0.2, 0.4, 0.4, 0.68], "10": [0.2, 0.3, 0.4, 0.54], "20": [0.1, 0.3, 0.3, 0.5]}
        (folder / "transfer.json").write_text(json.dumps(run))
        runs.append(str(folder))
    transfer.main(transfer.parse_args(["--compare", *runs, "--out-dir", str(tmp_path / "both")]))
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| rambling")]
    assert [r.split(" | ")[1] for r in rows] == ["defaults", "--lr=1e-4"] and "| 0.75 [+0.40, +1.20] |" in rows[0]
    assert (tmp_path / "both" / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    # what a reader sees without the text: words on the axis, n, each run's ratio, ticks at the data, every
    # marker visible (both runs start at the same share), intervals where per-prompt values were kept
    ax = transfer.plot([json.loads((tmp_path / n / "transfer.json").read_text()) for n in ("defaults", "--lr=1e-4")],
                       str(tmp_path / "again.png")).axes[0]  # fmt: skip
    assert ax.get_ylabel() == "share of replies of 5 words or more" and "n = 4 held-out turn prompts" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().texts]
    assert "student: defaults (transfer ratio 0.75 [0.40, 1.20])" in legend and any("--lr=1e-4" in t for t in legend)
    assert list(ax.get_xticks()) == [0, 10, 20]
    points = [(round(x, 6), round(y, 6)) for c in ax.containers for x, y in zip(*c.lines[0].get_data())]
    assert len(points) == 6 and len(set(points)) == 6
    # and apart on the figure: any two markers are at least a marker's width apart in pixels
    fig = ax.figure
    fig.draw_without_rendering()  # the constrained layout places the axes
    size = max(c.lines[0].get_markersize() for c in ax.containers) * fig.dpi / 72
    shown = [tuple(ax.transData.transform(p)) for p in points]
    assert min(math.dist(a, b) for i, a in enumerate(shown) for b in shown[i + 1 :]) >= size
    bars = [[seg[:, 1].tolist() for seg in c.lines[2][0].get_segments()] for c in ax.containers]
    assert all(hi > lo for lo, hi in bars[0]) and all(hi == lo for lo, hi in bars[1])
