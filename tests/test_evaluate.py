"""evaluate.py and ifeval.py: metrics against hand-computed values, the instruction checks on passing
and failing answers, end-to-end runs with a tiny model, the report on a fake run, bad input."""
import os

import pytest

import common
import evaluate
import ifeval


def game(won, score, max_score, tokens):
    turns = [dict(response_tokens=t, valid=i % 2 == 0) for i, t in enumerate(tokens)]
    return dict(won=won, score=score, max_score=max_score, turns=turns, turns_used=len(turns))


def test_game_metrics_by_hand():
    records = [game(True, 1, 1, [4, 6]), game(False, 0, 2, [10, 10, 10, 10]), game(True, 2, 2, [5]), game(False, 1, 2, [1, 2, 3])]
    m = evaluate.game_metrics(records)
    assert m["n"] == 4 and m["pass_rate"] == 0.5
    assert m["score"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert m["turns"] == pytest.approx(2.5)
    assert m["tokens_per_turn"] == pytest.approx(61 / 10)  # over all turns, not a mean of per-game means
    assert m["tokens_per_game"] == pytest.approx((10 + 40 + 5 + 6) / 4)
    assert m["valid"] == pytest.approx(6 / 10)
    # turns 2, 4, 1, 3: sd = sqrt(5/3); half width = 1.96 * sd / 2
    low, high = m["turns_ci"]
    assert (high - low) / 2 == pytest.approx(1.96 * (5 / 3) ** 0.5 / 2)


def test_wilson_interval_by_hand():
    low, high = evaluate.wilson(5, 10)  # p = .5, n = 10: centre .5, half 1.96*sqrt(.025+.0096)/1.384
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert evaluate.wilson(0, 10)[0] == 0 and 0.25 < evaluate.wilson(0, 10)[1] < 0.35
    assert evaluate.wilson(10, 10)[1] == 1 and evaluate.wilson(0, 0) == (0.0, 0.0)


@pytest.mark.parametrize("kind, args, passing, failing", [
    ("lowercase", {}, "all small here.", "Not all small."),
    ("uppercase", {}, "FRESH BREAD DAILY!", "Fresh bread"),
    ("no_comma", {}, "A cat sleeps. It purrs.", "A cat, a dog."),
    ("max_words", {"n": 5}, "Rain falls from clouds.", "Rain is water falling from the clouds."),
    ("min_words", {"n": 3}, "one two three", "one two"),
    ("include_keywords", {"words": ["snow", "quiet"]}, "Quiet snow falls.", "Snowy and quiet."),
    ("exclude_keywords", {"words": ["light"]}, "The city glows.", "Lights? No: the light shines."),
    ("keyword_count", {"word": "green", "n": 2}, "Green grass, green trees.", "Green grass."),
    ("end_phrase", {"phrase": "See you soon."}, "Thanks! See you soon.", "See you soon. Thanks!"),
    ("start_word", {"words": ["Yes", "No"]}, "Yes, it is.", "Well, yes."),
    ("bullet_count", {"n": 3}, "* apple\n* pear\n- plum", "* apple\n* pear"),
    ("json", {}, '```json\n{"name": "Ann", "age": 3}\n```', "name: Ann"),
    ("title", {}, "<<Moon>>\nThe moon is bright.", "Moon\nThe moon is bright."),
    ("quoted", {}, '"Mondays are fine."', 'Mondays "are" fine.'),
    ("paragraphs", {"n": 2}, "Dogs bark.\n***\nDogs run.", "Dogs bark.\n\nDogs run."),
    ("postscript", {}, "Come to lunch.\nP.S. Bring cake.", "Come to lunch. PS bring cake."),
    ("placeholders", {"n": 2}, "Dear [name], happy [age]th!", "Dear [name], happy birthday!"),
    ("highlights", {"n": 2}, "Plants *need light* to make *sugar*.", "Plants *need light* to grow."),
    ("max_sentences", {"n": 2}, "The sun is hot. It is big.", "The sun is hot. It is big. It is far."),
])
def test_instruction_checks(kind, args, passing, failing):
    assert ifeval.check(passing, [(kind, args)]) == [True]
    assert ifeval.check(failing, [(kind, args)]) == [False]


def test_every_prompt_is_checkable_and_prompt_level_is_strict():
    for prompt, instructions in ifeval.PROMPTS:
        assert all(kind in ifeval.CHECKS for kind, _ in instructions), prompt
        assert len(ifeval.check("x", instructions)) == len(instructions)
    records = [dict(followed=[True, True], response_tokens=4), dict(followed=[True, False], response_tokens=6), dict(followed=[False], response_tokens=2)]
    m = evaluate.ifeval_metrics(records)
    assert m["prompt_accuracy"] == pytest.approx(1 / 3) and m["instruction_accuracy"] == pytest.approx(3 / 5) and m["tokens_per_response"] == 4


def test_games_end_to_end(tiny_model, tiny_games, tmp_path):
    know = tmp_path / "knowledge.jsonl"
    common.write_jsonl(str(know), [dict(knowledge_id=f"r1-c0-s{s}", chain=0, step=s, knowledge="- tip" * s, in_pool=s == 2) for s in range(3)])
    out = tmp_path / "eval_curve.jsonl"
    args = evaluate.parse_args(["--model", tiny_model, "--games", tiny_games, "--max-turns", "2", "--round", "1", "--out", str(out),
                                "--knowledge", str(know), "--knowledge-curve", "0"])
    summaries = evaluate.main(args)
    assert [s["knowledge_id"] for s in summaries] == ["r1-c0-s0", "r1-c0-s1", "r1-c0-s2"]
    records = common.read_jsonl(str(out))
    played = [r for r in records if r["kind"] == "game"]
    assert len(played) == 9 and {r["eval_set"] for r in played} == {"id"} and {r["round"] for r in played} == {1}
    for s in summaries:
        mine = [r for r in played if r["knowledge_id"] == s["knowledge_id"]]
        assert s["pass_rate"] == sum(r["won"] for r in mine) / 3 and s["n"] == 3 and 1 <= s["turns"] <= 2
    assert "- tip- tip" in played[-1]["turns"][0]["messages"][-1]["content"]
    assert evaluate.main(args) is None  # exists: skipped


def test_ifeval_end_to_end(tiny_model, tmp_path):
    out = tmp_path / "eval_ifeval.jsonl"
    args = evaluate.parse_args(["--model", tiny_model, "--set", "ifeval", "--ifeval-n", "3", "--temperature", "0",
                                "--ifeval-max-new-tokens", "8", "--out", str(out), "--round", "2"])
    (summary,) = evaluate.main(args)
    records = common.read_jsonl(str(out))
    assert [r["kind"] for r in records] == ["prompt"] * 3 + ["summary"]
    assert records[0]["prompt"] == ifeval.PROMPTS[0][0] and records[0]["instructions"] == ["lowercase"]
    assert summary["prompt_accuracy"] == sum(all(r["followed"]) for r in records[:3]) / 3 and summary["round"] == 2


def fake_run(tmp_path):
    run = tmp_path / "run"
    for r, (pass_rate, tokens, ifa) in enumerate([(0.3, 12.0, 0.5), (0.4, 10.0, 0.5), (0.55, 8.0, 0.45)]):
        d = run / f"round_{r}"
        d.mkdir(parents=True)
        summary = dict(kind="summary", round=r, pass_rate=pass_rate, pass_rate_ci=[pass_rate - 0.1, pass_rate + 0.1], tokens_per_turn=tokens, turns=9.0)
        common.write_jsonl(str(d / "eval_id.jsonl"), [dict(kind="game", won=True), summary])
        common.write_jsonl(str(d / "eval_ood.jsonl"), [dict(summary, pass_rate=pass_rate / 2)])
        common.write_jsonl(str(d / "eval_ifeval.jsonl"), [dict(kind="summary", round=r, prompt_accuracy=ifa)])
        if r:
            common.write_jsonl(str(d / "eval_id_incontext.jsonl"), [dict(summary, pass_rate=0.5)])
    return run


def test_report_on_a_fake_run(tmp_path):
    run = fake_run(tmp_path)
    evaluate.main(evaluate.parse_args(["--report", str(run)]))
    table = (run / "report.md").read_text()
    assert "| 0 | 0.30 [0.20, 0.40] | - | 12.00 | 9.00 | 0.15 | 0.50 |" in table
    assert "| 2 | 0.55 [0.45, 0.65] | 0.50 | 8.00 | 9.00 | 0.28 | 0.45 |" in table
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(run / "report.png") > 10_000


def test_bad_input(tiny_model, tmp_path):
    with pytest.raises(common.InputError, match="no such model folder"):
        evaluate.main(evaluate.parse_args(["--model", str(tmp_path / "missing"), "--set", "ifeval", "--out", str(tmp_path / "x.jsonl")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(common.InputError, match="no finished games"):
        evaluate.main(evaluate.parse_args(["--model", tiny_model, "--games", str(tmp_path / "empty"), "--out", str(tmp_path / "y.jsonl")]))
    run = fake_run(tmp_path)
    with open(run / "round_1" / "eval_id.jsonl", "a") as f:
        f.write("{broken\n")
    with pytest.raises(common.InputError, match=r"round_1/eval_id.jsonl:3: not valid JSON"):
        evaluate.write_report(str(run))
    with pytest.raises(common.InputError, match="no evaluation summaries"):
        evaluate.write_report(str(tmp_path / "empty"))
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "y.jsonl").exists()
