"""oel/report.py: the statistics against hand-computed values, known values and brute force; the report of a
fake run and of runs side by side (through `evaluate.py --report`, the command loop.sh runs), read back from
the table and the figure; bad run folders."""

import itertools
import json
import random
import shutil

import pytest

import evaluate
from oel import cli, jsonl, report, stats

# ----------------------------------------------------------------------------- statistics


def test_wilson_interval_by_hand():
    low, high = stats.wilson(5, 10)  # p = .5, n = 10: centre .5, half 1.96*sqrt(.025+.0096)/1.384
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = stats.wilson(0, 10)  # centre (1.92/10)/1.384 = .1388 = half: (0, .2775)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)
    assert stats.wilson(10, 10)[1] == 1 and stats.wilson(0, 0) == (0.0, 0.0)


def test_per_turn_bootstrap_resamples_whole_games():
    # two games: 10 tokens in 2 turns (5/turn), 30 tokens in 2 turns (15/turn). Resampling two games gives
    # 5 (p=1/4), 10 (p=1/2) or 15 (p=1/4): the 2.5% and 97.5% points are 5 and 15.
    rate, (low, high) = stats.ratio_ci([10, 30], [2, 2])
    assert rate == 10 and (low, high) == (5, 15)
    assert stats.ratio_ci([12, 24, 6], [2, 4, 1]) == (6, (6, 6))  # every game at 6 tokens/turn: no spread
    assert stats.ratio_ci([10, 30], [2, 2], seed=1) == stats.ratio_ci([10, 30], [2, 2], seed=1)


def test_mcnemar_exact_known_values():
    assert stats.mcnemar_exact(0, 5) == 2 / 32  # all 5 discordant pairs one way
    assert stats.mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert stats.mcnemar_exact(9, 1) == stats.mcnemar_exact(1, 9)
    assert stats.mcnemar_exact(3, 3) == 1 and stats.mcnemar_exact(0, 0) == 1
    assert stats.mcnemar_exact(2, 12) == pytest.approx(0.012939, abs=1e-6)  # scipy.stats.binomtest(2, 14)


def brute_force_sign_flip(diffs):
    sums = [sum(s * d for s, d in zip(signs, diffs)) for signs in itertools.product([1, -1], repeat=len(diffs))]
    return sum(abs(x) >= abs(sum(diffs)) for x in sums) / len(sums)


def test_sign_flip_test_against_brute_force_and_mcnemar():
    rng = random.Random(0)
    for _ in range(50):
        diffs = [rng.randint(-3, 3) for _ in range(rng.randint(0, 10))]
        assert stats.sign_flip_p(diffs) == pytest.approx(brute_force_sign_flip(diffs))
    for _ in range(50):  # one episode a game: differences -1, 0, +1, and the test is McNemar's
        diffs = [rng.choice([-1, 0, 0, 1, 1]) for _ in range(rng.randint(1, 16))]
        assert stats.sign_flip_p(diffs) == pytest.approx(stats.mcnemar_exact(diffs.count(-1), diffs.count(1)))


def test_paired_difference_matches_game_and_episode():
    won = lambda game, episode, w: dict(game=game, episode=episode, won=w)
    before = [won(g, 0, g < 3) for g in range(10)]  # games 0-2 won
    after = [won(g, 0, g < 8) for g in reversed(range(10))] + [won(99, 0, True)]  # 0-7 won; game 99 has no pair
    d = stats.paired_difference(before, after)
    assert d["pairs"] == d["games"] == 10 and (d["better"], d["worse"]) == (5, 0) and d["diff"] == 0.5
    assert d["p"] == stats.mcnemar_exact(0, 5) and 0 < d["diff_ci"][0] < 0.5 < d["diff_ci"][1] <= 0.8
    # three episodes of two games: the test and the interval are over games, not over episodes
    before = [won(g, e, False) for g in "ab" for e in range(3)]
    after = [won("a", e, True) for e in range(3)] + [won("b", e, e == 0) for e in range(3)]
    d = stats.paired_difference(before, after)
    assert (d["pairs"], d["games"], d["better"], d["diff"]) == (6, 2, 4, 4 / 6)
    assert d["p"] == brute_force_sign_flip([3, 1]) == 0.5  # McNemar on 4 of 6 episodes would claim 0.125
    assert d["diff_ci"] == (1 / 3, 1.0)  # resamples of games a and b: 1/3, 2/3 or 1


# ----------------------------------------------------------------------------- the report


def games_won(won):
    """Game records of 20 held-out games, one episode each: game g is won if g is in `won`."""
    return [dict(kind="game", game=f"g{g}", episode=0, won=g in won) for g in range(20)]


def fake_run(tmp_path, name="run", mode="on-policy"):
    run = tmp_path / name
    rounds = [(0.3, 12.0, 0.5, range(6)), (0.4, 10.0, 0.5, range(8)), (0.55, 8.0, 0.45, range(11))]
    for r, (pass_rate, tokens, ifa, won) in enumerate(rounds):
        d = run / f"round_{r}"
        d.mkdir(parents=True)
        summary = dict(
            kind="summary",
            eval_set="id",
            round=r,
            pass_rate=pass_rate,
            pass_rate_ci=[pass_rate - 0.1, pass_rate + 0.1],
            tokens_per_turn=tokens,
            tokens_per_turn_ci=[tokens - 1, tokens + 1],
            turns=9.0,
            score=pass_rate + 0.1,
            games=20,
            n=20,
            settings=dict(episodes=1, max_turns=12, max_new_tokens=24),
        )
        jsonl.write_jsonl(str(d / "eval_id.jsonl"), games_won(won) + [summary])
        jsonl.write_jsonl(
            str(d / "eval_ood.jsonl"), [dict(summary, eval_set="ood", pass_rate=pass_rate / 2, pass_rate_ci=None)]
        )
        jsonl.write_jsonl(
            str(d / "eval_ifeval.jsonl"),
            [dict(kind="prompt"), dict(kind="summary", round=r, prompt_accuracy=ifa, prompt_accuracy_ci=[0.3, 0.6])],
        )
        if r:
            incontext = dict(
                summary, pass_rate=0.5, pass_rate_ci=[0.4, 0.6], tokens_per_turn=11.0, tokens_per_turn_ci=[10.5, 11.5]
            )
            jsonl.write_jsonl(str(d / "eval_id_incontext.jsonl"), games_won(range(5, 15)) + [incontext])
            (d / "model").mkdir()
            args = dict(mode=mode, teacher="frozen", lr=1e-5, out=f"{run}/round_{r}/model", quiet=True)
            (d / "model" / "args.json").write_text(json.dumps(args))
            jsonl.write_jsonl(str(d / "knowledge.jsonl"), [dict(knowledge_id="k", source="knowledge", model="m")])
    jsonl.write_jsonl(
        str(run / "round_1" / "eval_id_curve0.jsonl"),
        [dict(summary, knowledge_id=f"r1-c0-s{s}", step=s, pass_rate=0.1 * s) for s in (1, 2)],
    )
    return run


def plotted(ax):
    """{label: [(x, y, low, high)]} of a panel's error-bar lines, read back from the figure."""
    out = {}
    for c in ax.containers:
        line, _, (bars,) = c.lines
        xs, ys = line.get_data()
        bounds = [(seg[0][1], seg[1][1]) for seg in bars.get_segments()]
        out[c.get_label()] = [
            tuple(round(float(v), 6) for v in (x, y, lo, hi)) for x, y, (lo, hi) in zip(xs, ys, bounds)
        ]
    return out


def test_report_on_a_fake_run(tmp_path):
    run = fake_run(tmp_path)
    fig = evaluate.main(evaluate.parse_args(["--report", str(run)]))
    table = (run / "report.md").read_text()
    assert (
        "| 0 | 0.30 [0.20, 0.40] | - | 0.40 | 12.00 [11.00, 13.00] | - | 9.00 | 0.15 | 0.50 [0.30, 0.60] | - | - |"
        in table
    )
    row = next(line for line in table.splitlines() if line.startswith("| 2 | "))
    assert row.startswith(
        "| 2 | 0.55 [0.45, 0.65] | 0.50 [0.40, 0.60] | 0.65 | 8.00 [7.00, 9.00] | 11.00 [10.50, 11.50] |"
    )
    vs_round0, vs_context = row.split(" | ")[-2:]
    assert vs_round0.startswith("+0.25 [+") and vs_round0.endswith("] p=0.06")  # 5 games won more, none lost: 2/2^5
    assert vs_context.startswith("+0.05 [-") and vs_context.endswith("] p=1.00 |")  # 5 more, 4 fewer
    assert "| 1 | id_curve0 | r1-c0-s2 | 2 | 0.20 [0.45, 0.65] |" in table
    assert "- distill.mode: on-policy" in table and "- distill.out: RUN/round_R/model" in table
    assert "distill.quiet" not in table and "- eval.episodes: 1" in table
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # what was drawn: the table's numbers, each at its round, with its interval, series spread around the round
    rates, tokens, ifeval, diffs, curve, spare = fig.axes
    assert not spare.get_visible()
    rates, tokens, ifeval, diffs, curve = map(plotted, (rates, tokens, ifeval, diffs, curve))
    held_out, in_context, ood = (
        next(v for k, v in rates.items() if word in k) for word in ("held-out", "in context", "OOD")
    )
    assert held_out == [(-0.12, 0.3, 0.2, 0.4), (0.88, 0.4, 0.3, 0.5), (1.88, 0.55, 0.45, 0.65)]
    assert in_context == [(1.0, 0.5, 0.4, 0.6), (2.0, 0.5, 0.4, 0.6)]
    assert [(x, y) for x, y, _, _ in ood] == [(0.12, 0.15), (1.12, 0.2), (2.12, 0.275)]
    assert [y for _, y, _, _ in next(iter(tokens.values()))] == [12, 10, 8]
    assert [y for _, y, _, _ in next(iter(ifeval.values()))] == [0.5, 0.5, 0.45]
    d = stats.paired_difference(games_won(range(6)), games_won(range(11)))
    minus_base, minus_teacher = (next(v for k, v in diffs.items() if word in k) for word in ("theta_0", "theta_{r-1}"))
    assert minus_base[-1] == pytest.approx((1.88, 0.25, *d["diff_ci"])) and [x for x, *_ in minus_base] == [0.88, 1.88]
    assert [(x, round(y, 2)) for x, y, _, _ in minus_teacher] == [(1.12, -0.1), (2.12, 0.05)]
    assert [(x, y) for x, y, _, _ in next(iter(curve.values()))] == [(1, 0.1), (2, 0.2)]
    for ax in fig.axes[:5]:  # a reader's figure: y labels, whole rounds, legends off the data
        assert ax.get_ylabel() and ax.get_legend() and ax.get_legend().get_bbox_to_anchor().y0 < ax.bbox.y0
    assert [t.get_text() for t in fig.axes[3].get_xticklabels()] == ["1", "2"]  # no round without a difference
    assert "minus" in fig.axes[3].get_title() and list(fig.axes[0].get_xticks()) == [0, 1, 2]


def test_report_puts_runs_side_by_side(tmp_path):
    runs = [fake_run(tmp_path, "onpolicy"), fake_run(tmp_path, "offpolicy", mode="off-policy")]
    fig = evaluate.main(evaluate.parse_args(["--report", *map(str, runs), "--out-dir", str(tmp_path)]))
    lines = (tmp_path / "compare.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| run |"))
    assert header.startswith(
        "| run | distill.mode | rounds | held-out round 0 | in context (last round) |"
    )  # the knob that differs
    row = next(line for line in lines if line.startswith("| offpolicy |"))
    assert row.startswith(
        "| offpolicy | off-policy | 2 | 0.30 [0.20, 0.40] | 0.50 [0.40, 0.60] | 0.55 [0.45, 0.65] | +0.25 ["
    )
    assert row.endswith("| 0.28 | 0.45 [0.30, 0.60] |")
    consolidated, in_context, ifeval = (plotted(ax) for ax in fig.axes)
    assert [y for _, y, _, _ in consolidated["offpolicy"]] == [0.3, 0.4, 0.55] and set(consolidated) == {
        "onpolicy",
        "offpolicy",
    }
    assert [x for x, *_ in in_context["offpolicy"]] == [1.15, 2.15] and len(ifeval["onpolicy"]) == 3
    assert [x for x, *_ in in_context["onpolicy"]] == [0.85, 1.85]  # identical runs side by side, never on top
    assert all(list(ax.get_xticks()) == [0, 1, 2] for ax in fig.axes) and [
        t.get_text() for t in fig.legends[0].texts
    ] == [
        "onpolicy",
        "offpolicy",
    ]
    assert (tmp_path / "compare.png").exists() and not (runs[0] / "report.md").exists()


def test_bad_run_folders(tmp_path):
    run = fake_run(tmp_path)
    with open(run / "round_1" / "eval_id.jsonl", "a") as f:
        f.write("{broken\n")
    with pytest.raises(cli.InputError, match=r"round_1/eval_id.jsonl:22: not valid JSON"):
        report.write_report([str(run)])
    jsonl.write_jsonl(str(run / "round_1" / "eval_id.jsonl"), [dict(kind="summary", round=1, pass_rate=0.5)])
    with pytest.raises(cli.InputError, match=r"round_1/eval_id.jsonl: expected a summary record .* pass_rate_ci"):
        report.write_report([str(run)])
    jsonl.write_jsonl(
        str(run / "round_1" / "eval_id.jsonl"),
        [dict(kind="game", won=True), dict(kind="summary", pass_rate=0.5, pass_rate_ci=[0, 1])],
    )
    with pytest.raises(cli.InputError, match=r"round_1/eval_id.jsonl: a game record without game, episode and won"):
        report.write_report([str(run)])
    jsonl.write_jsonl(
        str(run / "round_1" / "eval_id.jsonl"),
        games_won([1]) + [dict(kind="summary", pass_rate=0.5, pass_rate_ci=[0, 1])],
    )
    (run / "round_1" / "model" / "args.json").write_text("[1, 2]")
    with pytest.raises(cli.InputError, match=r"round_1/model/args.json: expected a JSON object, got list"):
        report.write_report([str(run)])
    (run / "round_1" / "model" / "args.json").write_text("{")
    with pytest.raises(cli.InputError, match=r"round_1/model/args.json: expected a JSON object \(Expecting"):
        report.write_report([str(run)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(cli.InputError, match="no evaluations found"):
        report.write_report([str(tmp_path / "empty")])


def test_a_moved_run_folder_compares_equal_to_where_it_was(tmp_path):
    # recorded paths name the run folder where it was made (distill's --out, --trajectories, ...): a copy must
    # not show them as knobs that differ from the original
    run = fake_run(tmp_path, "made_here")
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(run, copy)
    evaluate.main(evaluate.parse_args(["--report", str(run), str(copy), "--out-dir", str(tmp_path)]))
    header = next(line for line in (tmp_path / "compare.md").read_text().splitlines() if line.startswith("| run |"))
    assert header.startswith("| run | rounds | held-out round 0 |")  # no knob differs
    assert report.run_knobs(str(copy), {})["distill.out"] == "RUN/round_R/model"


def test_the_report_says_what_was_cut_and_dropped(tmp_path):
    """Per round: replies and answers at their token cap, extractor outputs and distillation samples at theirs,
    pool entries dropped as empty; the distillation's defaults as they resolved, not None; and a held-out set too
    small to measure anything is said under the table."""
    run = fake_run(tmp_path)
    r1 = run / "round_1"
    for name, cut in (("eval_id.jsonl", 0.25), ("eval_ifeval.jsonl", 0.5)):
        records = jsonl.read_jsonl(str(r1 / name))
        records[-1]["cut"] = cut
        jsonl.write_jsonl(str(r1 / name), records)
    snapshot = dict(knowledge_id="k", source="knowledge", model="m", knowledge="- a")
    jsonl.write_jsonl(
        str(r1 / "knowledge.jsonl"),
        [dict(snapshot, output_cut=None, in_pool=False)]  # step 0: no output yet
        + [dict(snapshot, output_cut=c, in_pool=True) for c in (True, True, False)]
        + [dict(snapshot, knowledge=" ", output_cut=True, in_pool=True)],  # a chain that wrote nothing
    )
    jsonl.write_jsonl(str(r1 / "model.metrics.jsonl"), [dict(step=s, responses=4, capped=s) for s in (1, 2)])
    args = json.loads((r1 / "model" / "args.json").read_text())
    (r1 / "model" / "args.json").write_text(json.dumps(dict(args, optimizer=None, resolved=dict(optimizer="adamw"))))
    evaluate.main(evaluate.parse_args(["--report", str(run)]))
    text = (run / "report.md").read_text()
    assert "| 1 | 25% | 50% | 3/4 (75%) | 3/8 (38%) | 1/4 (25%) |" in text
    assert "| 0 | - | - | - | - | - |" in text  # round 0 recorded no cut: said as unknown, not as 0
    assert "- distill.optimizer: adamw" in text and "None" not in text
    assert "too few to measure anything" not in text  # 15 held-out games
    small = fake_run(tmp_path / "small")
    for path in small.glob("round_*/eval_id*.jsonl"):
        records = jsonl.read_jsonl(str(path))
        jsonl.write_jsonl(str(path), [r for r in records if r.get("kind") != "game" or r["game"] in ("g0", "g1")])
    evaluate.main(evaluate.parse_args(["--report", str(small)]))
    assert "**2 held-out games are too few to measure anything**" in (small / "report.md").read_text()


def markers(ax):
    """Every marker a panel draws, as (x, y): from its error-bar series and its plain lines."""
    points = [(x, y) for c in ax.containers for x, y in zip(*c.lines[0].get_data())]
    return [(round(float(x), 6), round(float(y), 6)) for x, y in points]


def test_every_panel_says_its_n_and_hides_nothing(tmp_path):
    """A reader needs no text: each series' legend says its n, the length axis starts at 0 with the cap drawn,
    no marker sits on another, and the x ticks are the rounds that have data."""
    run = fake_run(tmp_path)
    path = str(run / "round_1" / "eval_id_incontext.jsonl")  # the teacher's rate equal to the student's: one place
    jsonl.write_jsonl(path, [dict(r, pass_rate=0.4) if r["kind"] == "summary" else r for r in jsonl.read_jsonl(path)])
    fig = report.write_report([str(run)])
    rates, tokens, ifeval, diffs = fig.axes[:4]
    for ax, unit in ((rates, "games"), (tokens, "games"), (ifeval, "prompts"), (diffs, "games")):
        labels = [t.get_text() for t in ax.get_legend().texts]
        assert all("(n = " in label and label.endswith(f" {unit})") for label in labels if "cap" not in label), labels
    assert any("(n = 20 games)" in t.get_text() for t in rates.get_legend().texts)
    assert tokens.get_ylim()[0] == 0
    caps = [line for line in tokens.get_lines() if "cap" in line.get_label()]
    assert (
        len(caps) == 1 and list(caps[0].get_ydata()) == [24, 24] and caps[0].get_label() == "the cap: 24 tokens a reply"
    )
    for ax in (rates, tokens, ifeval, diffs):
        drawn = markers(ax)
        assert drawn and len(drawn) == len(set(drawn)), ax.get_title()
    assert list(rates.get_xticks()) == [0, 1, 2] and list(diffs.get_xticks()) == [1, 2]


def test_a_report_says_what_the_run_lacks(tmp_path, capsys):
    """A run whose round 1 failed: the report says which rounds and files are missing and draws no empty panel."""
    run = fake_run(tmp_path)
    shutil.rmtree(run / "round_1")
    shutil.rmtree(run / "round_2")
    (run / "settings.json").write_text(json.dumps({"ROUNDS": "2"}))
    fig = report.write_report([str(run)])
    text = (run / "report.md").read_text()
    assert "**Missing: round 1: no eval_id.jsonl, eval_ood.jsonl, eval_ifeval.jsonl, knowledge.jsonl, model, " in text
    assert "(the round never ran).**" in text and "**Missing: round 2: " in text
    assert "missing round 1: no eval_id.jsonl" in capsys.readouterr().out
    diffs = fig.axes[3]
    assert not diffs.axison and not markers(diffs) and "No paired difference" in diffs.texts[0].get_text()
    assert report.missing(str(fake_run(tmp_path, "whole")), {}) == []
