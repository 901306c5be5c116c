"""evaluate.py and ifeval.py: metrics and intervals against hand-computed values, IFEval's checker on
passing and failing answers, end-to-end runs with a tiny model, the report on a fake run, bad input."""

import itertools
import json
import os
import random

import pytest
import thinking_stub

import common
import evaluate
import ifeval
import play


def game(won, score, max_score, tokens, name="g", episode=0):
    turns = [dict(response_tokens=t, valid=i % 2 == 0) for i, t in enumerate(tokens)]
    return dict(
        game=name, episode=episode, won=won, score=score, max_score=max_score, turns=turns, turns_used=len(turns)
    )


def test_game_metrics_by_hand():
    records = [
        game(True, 1, 1, [4, 6], "a"),
        game(False, 0, 2, [10, 10, 10, 10], "b"),
        game(True, 2, 2, [5], "c"),
        game(False, 1, 2, [1, 2, 3], "d"),
    ]
    m = evaluate.game_metrics(records)
    assert m["n"] == 4 and m["games"] == 4 and m["won"] == 2 and m["pass_rate"] == 0.5
    assert m["pass_rate_ci"] == pytest.approx(evaluate.wilson(2, 4))  # one episode a game: independent trials
    assert m["score"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert m["turns"] == pytest.approx(2.5)
    assert m["tokens_per_turn"] == pytest.approx(61 / 10)  # over all turns, not a mean of per-game means
    assert m["tokens_per_game"] == pytest.approx((10 + 40 + 5 + 6) / 4)
    assert m["valid"] == pytest.approx(6 / 10)
    assert 1 <= m["turns_ci"][0] < 2.5 < m["turns_ci"][1] <= 4  # a bootstrap of games with 1 to 4 turns
    low, high = m["tokens_per_turn_ci"]
    assert 1 <= low < m["tokens_per_turn"] < high <= 10  # the per-turn rate of the games lies in [1, 10]
    # two episodes of each game: the episodes of a game are not independent, so whole games are resampled
    m = evaluate.game_metrics([dict(r, episode=e, game=r["game"] in "ab") for e, r in enumerate(records)])
    assert m["n"] == 4 and m["games"] == 2 and m["pass_rate_ci"] == evaluate.ratio_ci([1, 1], [2, 2])[1] == (0.5, 0.5)
    assert m["turns"] == 2.5 and m["turns_ci"] == evaluate.ratio_ci([6, 4], [2, 2])[1] == (2, 3)


def test_wilson_interval_by_hand():
    low, high = evaluate.wilson(5, 10)  # p = .5, n = 10: centre .5, half 1.96*sqrt(.025+.0096)/1.384
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = evaluate.wilson(0, 10)  # centre (1.92/10)/1.384 = .1388 = half: (0, .2775)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)
    assert evaluate.wilson(10, 10)[1] == 1 and evaluate.wilson(0, 0) == (0.0, 0.0)


def test_per_turn_bootstrap_resamples_whole_games():
    # two games: 10 tokens in 2 turns (5/turn), 30 tokens in 2 turns (15/turn). Resampling two games gives
    # 5 (p=1/4), 10 (p=1/2) or 15 (p=1/4): the 2.5% and 97.5% points are 5 and 15.
    rate, (low, high) = evaluate.ratio_ci([10, 30], [2, 2])
    assert rate == 10 and (low, high) == (5, 15)
    assert evaluate.ratio_ci([12, 24, 6], [2, 4, 1]) == (6, (6, 6))  # every game at 6 tokens/turn: no spread
    assert evaluate.ratio_ci([10, 30], [2, 2], seed=1) == evaluate.ratio_ci([10, 30], [2, 2], seed=1)


def test_mcnemar_exact_known_values():
    assert evaluate.mcnemar_exact(0, 5) == 2 / 32  # all 5 discordant pairs one way
    assert evaluate.mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert evaluate.mcnemar_exact(9, 1) == evaluate.mcnemar_exact(1, 9)
    assert evaluate.mcnemar_exact(3, 3) == 1 and evaluate.mcnemar_exact(0, 0) == 1
    assert evaluate.mcnemar_exact(2, 12) == pytest.approx(0.012939, abs=1e-6)  # scipy.stats.binomtest(2, 14)


def brute_force_sign_flip(diffs):
    sums = [sum(s * d for s, d in zip(signs, diffs)) for signs in itertools.product([1, -1], repeat=len(diffs))]
    return sum(abs(x) >= abs(sum(diffs)) for x in sums) / len(sums)


def test_sign_flip_test_against_brute_force_and_mcnemar():
    rng = random.Random(0)
    for _ in range(50):
        diffs = [rng.randint(-3, 3) for _ in range(rng.randint(0, 10))]
        assert evaluate.sign_flip_p(diffs) == pytest.approx(brute_force_sign_flip(diffs))
    for _ in range(50):  # one episode a game: differences -1, 0, +1, and the test is McNemar's
        diffs = [rng.choice([-1, 0, 0, 1, 1]) for _ in range(rng.randint(1, 16))]
        assert evaluate.sign_flip_p(diffs) == pytest.approx(evaluate.mcnemar_exact(diffs.count(-1), diffs.count(1)))


def test_paired_difference_matches_game_and_episode():
    won = lambda game, episode, w: dict(game=game, episode=episode, won=w)
    before = [won(g, 0, g < 3) for g in range(10)]  # games 0-2 won
    after = [won(g, 0, g < 8) for g in reversed(range(10))] + [won(99, 0, True)]  # 0-7 won; game 99 has no pair
    d = evaluate.paired_difference(before, after)
    assert d["pairs"] == d["games"] == 10 and (d["better"], d["worse"]) == (5, 0) and d["diff"] == 0.5
    assert d["p"] == evaluate.mcnemar_exact(0, 5) and 0 < d["diff_ci"][0] < 0.5 < d["diff_ci"][1] <= 0.8
    # three episodes of two games: the test and the interval are over games, not over episodes
    before = [won(g, e, False) for g in "ab" for e in range(3)]
    after = [won("a", e, True) for e in range(3)] + [won("b", e, e == 0) for e in range(3)]
    d = evaluate.paired_difference(before, after)
    assert (d["pairs"], d["games"], d["better"], d["diff"]) == (6, 2, 4, 4 / 6)
    assert d["p"] == brute_force_sign_flip([3, 1]) == 0.5  # McNemar on 4 of 6 episodes would claim 0.125
    assert d["diff_ci"] == (1 / 3, 1.0)  # resamples of games a and b: 1/3, 2/3 or 1


def test_ifeval_metrics_by_hand():
    records = [
        dict(followed=[True, True], followed_loose=[True, True], response_tokens=4, cut=False),
        dict(followed=[True, False], followed_loose=[True, True], response_tokens=6, cut=True),
        dict(followed=[False], followed_loose=[False], response_tokens=2, cut=False),
    ]
    m = evaluate.ifeval_metrics(records)
    assert m["prompt_accuracy"] == pytest.approx(1 / 3) and m["instruction_accuracy"] == pytest.approx(3 / 5)
    assert m["prompt_accuracy_loose"] == pytest.approx(2 / 3) and m["instruction_accuracy_loose"] == pytest.approx(
        4 / 5
    )
    assert (
        m["prompt_accuracy_ci"] == pytest.approx(evaluate.wilson(1, 3))
        and m["tokens_per_response"] == 4
        and m["cut"] == pytest.approx(1 / 3)
    )


# ----------------------------------------------------------------------------- IFEval, offline


@pytest.fixture(scope="module")
def prompts():
    return {p["key"]: p for p in ifeval.load_prompts()}


def test_ifeval_prompt_set_is_ifeval(prompts):
    assert len(prompts) == 541 and next(iter(prompts)) == 1000  # 541 distinct keys, in the file's order
    kinds = {k for p in prompts.values() for k in p["instruction_id_list"]}
    assert len(kinds) == 25 and sum(len(p["instruction_id_list"]) for p in prompts.values()) == 834
    subset = ifeval.load_prompts(5)
    everything = ifeval.load_prompts()
    assert [p["key"] for p in subset] == [everything[i]["key"] for i in (0, 108, 216, 324, 432)]


@pytest.mark.parametrize(
    "key, passing, failing",
    [
        (1001, "Day one: Tokyo. Day two: Kyoto.", "Day one: Tokyo, then Kyoto."),  # no commas
        (1051, "dear sam, please go and vote on tuesday.", "Dear Sam, please go and vote."),  # lowercase
        (1094, '```json\n{"moms": ["Ann", "Bea"]}\n```', "Ann, Bea, Cat"),  # a JSON block
        (1322, "<<Kotlin vs Java>>\nKotlin is concise.", "Kotlin vs Java\nKotlin is concise."),  # a title
        (
            1220,
            "A poem.\nIs there anything else I can help with?",
            "Is there anything else I can help with? A poem.",
        ),  # end phrase
        (
            1381,
            "La la. We need a slide. Build it now.",
            " ".join(f"Line {i} of the song." for i in range(10)),
        ),  # fewer than 10 sentences
        (
            1000,
            "*Part one* and *part two* and *part three* " + "word " * 300,
            "*Part one* and *part two* " + "word " * 300,
        ),
    ],
)
def test_ifeval_checker_on_passing_and_failing_answers(prompts, key, passing, failing):
    strict, _ = ifeval.check(prompts[key], passing)
    assert all(strict) and len(strict) == len(prompts[key]["instruction_id_list"])
    assert not all(ifeval.check(prompts[key], failing)[0])


def test_ifeval_loose_forgives_a_preamble_strict_does_not(prompts):
    answer = 'Sure! Here it is:\n"The internet changed how teenagers learn and talk."'
    assert ifeval.check(prompts[122], answer) == ([False], [True])  # wrap the whole response in double quotes
    assert ifeval.check(prompts[122], '"The internet changed how teenagers learn."') == ([True], [True])


def test_sentence_counts_use_nltk_english_punkt(tmp_path):
    import nltk

    ifeval.install_punkt(str(tmp_path))
    assert sorted(os.listdir(tmp_path / "tokenizers" / "punkt_tab" / "english")) == [
        "abbrev_types.txt",
        "collocations.tab",
        "ortho_context.tab",
        "sent_starters.txt",
    ]
    text = "Dr. Smith came home at 5 p.m. yesterday. Mr. Brown stayed. It was late."
    assert nltk.sent_tokenize(text) == ["Dr. Smith came home at 5 p.m. yesterday.", "Mr. Brown stayed.", "It was late."]


# ----------------------------------------------------------------------------- end to end


def test_all_sets_in_one_call(tiny_model, tiny_games, tmp_path):
    out_dir = tmp_path / "run" / "round_1"
    argv = [
        "--model",
        tiny_model,
        "--games",
        tiny_games,
        "--max-turns",
        "2",
        "--round",
        "1",
        "--sets",
        "id,ood,ifeval",
        "--ifeval-n",
        "3",
        "--ifeval-max-new-tokens",
        "6",
        "--out-dir",
        str(out_dir),
        "--quiet",
    ]
    summaries = evaluate.main(evaluate.parse_args(argv))
    assert [s["eval_set"] for s in summaries] == ["id", "ood", "ifeval"]
    for s in summaries:
        records = common.read_jsonl(str(out_dir / f"eval_{s['eval_set']}.jsonl"))
        assert (
            records[-1] == json.loads(json.dumps(s))
            and s["kind"] == "summary"
            and s["round"] == 1
            and s["run"] == "run"
            and s["model"] == tiny_model
        )
        items = records[:-1]
        assert {r["eval_set"] for r in items} == {s["eval_set"]} and {r["round"] for r in items} == {1}
        if s["eval_set"] == "ifeval":
            assert [r["kind"] for r in items] == ["prompt"] * 3 and s["n"] == 3
            assert [r["key"] for r in items] == [p["key"] for p in ifeval.load_prompts(3)]
            assert all(0 < r["response_tokens"] <= 6 for r in items) and s["settings"]["ifeval_temperature"] == 0.7
            assert s["prompt_accuracy"] == sum(all(r["followed"]) for r in items) / 3
            assert all(r["followed"] == ifeval.check(r, r["answer"])[0] for r in items)
        else:
            assert len(items) == 3 and all(
                r["kind"] == "game" and r["knowledge_id"] is None and 1 <= r["turns_used"] <= 2 for r in items
            )
            assert s["pass_rate"] == sum(r["won"] for r in items) / 3 and s["settings"]["max_turns"] == 2
            assert s["tokens_per_turn"] == pytest.approx(
                sum(t["response_tokens"] for r in items for t in r["turns"]) / sum(r["turns_used"] for r in items)
            )
            assert "What you learned" not in items[0]["turns"][0]["messages"][-1]["content"]
    before = (out_dir / "eval_id.jsonl").read_bytes()
    assert evaluate.main(evaluate.parse_args(argv)) == []  # everything exists: skipped, nothing loaded or rewritten
    assert (out_dir / "eval_id.jsonl").read_bytes() == before


def test_ifeval_thinking_off_with_the_authors_sampling_whatever_thinking_says(tiny_qwen3, tmp_path, monkeypatch):
    calls = []

    def recorder(model, tokenizer, prompts, max_new_tokens, *sampling, **kwargs):
        calls.append((prompts, sampling))
        return thinking_stub.generate_ids(model, tokenizer, prompts, max_new_tokens, *sampling, **kwargs)

    monkeypatch.setattr(common, "generate_ids", recorder)
    argv = ["--model", tiny_qwen3, "--sets", "ifeval", "--ifeval-n", "2", "--out-dir", str(tmp_path), "--quiet"]
    (s,) = evaluate.main(evaluate.parse_args(argv + ["--thinking", "--ifeval-max-new-tokens", "40"]))
    assert [sampling for _, sampling in calls] == [(0.7, 0.8, 20)]
    assert all(p.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") for p in calls[0][0])
    records = common.read_jsonl(str(tmp_path / "eval_ifeval.jsonl"))[:-1]
    assert all(r["answer"] == "Here is my answer, in plain words, with no commas." for r in records)  # never cut
    settings = dict(ifeval_thinking=0, ifeval_temperature=0.7, ifeval_top_p=0.8, ifeval_top_k=20, seed=0)
    assert settings.items() <= s["settings"].items() and s["cut"] == 0
    # the switch turns thinking on, is recorded, and a short budget then cuts the answer inside <think>
    calls.clear()
    argv += ["--ifeval-thinking", "1", "--ifeval-temperature", "0", "--ifeval-max-new-tokens", "20", "--force"]
    (s,) = evaluate.main(evaluate.parse_args(argv))
    assert [sampling for _, sampling in calls] == [(0.0, 0.8, 20)]
    assert all(p.endswith("<|im_start|>assistant\n") for p in calls[0][0])
    assert s["settings"]["ifeval_thinking"] == 1 and s["cut"] == 1 and s["prompt_accuracy"] == 0


def test_knowledge_in_context_and_the_curve(tiny_model, tiny_games, tmp_path):
    know = tmp_path / "knowledge.jsonl"
    common.write_jsonl(
        str(know),
        [dict(knowledge_id=f"r1-c0-s{s}", chain=0, step=s, knowledge=f"- TIP {s}", in_pool=s == 2) for s in (2, 1)]
        + [dict(knowledge_id="r1-c1-s2", chain=1, step=2, knowledge="- OTHER", in_pool=True)]
        + [dict(knowledge_id="r1-c0-s0", chain=0, step=0, knowledge="", in_pool=False)]  # every chain starts empty
        + [dict(knowledge_id="r1-c2-s2", chain=2, step=2, knowledge=" ", in_pool=True)],  # a chain that wrote nothing
    )
    base = [
        "--model",
        tiny_model,
        "--games",
        tiny_games,
        "--max-turns",
        "1",
        "--round",
        "1",
        "--out-dir",
        str(tmp_path),
        "--quiet",
    ]
    (s,) = evaluate.main(evaluate.parse_args(base + ["--knowledge", str(know)]))
    played = [r for r in common.read_jsonl(str(tmp_path / "eval_id_incontext.jsonl")) if r["kind"] == "game"]
    pool = [("r1-c0-s2", "- TIP 2"), ("r1-c1-s2", "- OTHER")]  # the in_pool entries; the teacher draws from them
    drawn = {r["game"]: evaluate.draw(pool, r["game"], 0) for r in played}
    assert s["knowledge_id"] == "pool" and {r["game"]: (r["knowledge_id"], r["knowledge"]) for r in played} == drawn
    assert all(r["knowledge"] in r["turns"][0]["messages"][-1]["content"] for r in played)  # where the teacher sees it
    assert sum(n for _, n in s["won_by_knowledge"].values()) == 3 and set(s["won_by_knowledge"]) <= {
        "r1-c0-s2",
        "r1-c1-s2",
    }
    draws = [evaluate.draw(pool, f"game-{i}", 0)[0] for i in range(400)]
    assert 150 < draws.count("r1-c0-s2") < 250  # every entry is drawn, about equally often
    assert (
        draws
        == [evaluate.draw(pool, f"game-{i}", 0)[0] for i in range(400)]
        != [evaluate.draw(pool, f"game-{i}", 1)[0] for i in range(400)]
    )
    (s,) = evaluate.main(
        evaluate.parse_args(base + ["--knowledge", str(know), "--knowledge-id", "r1-c1-s2", "--force"])
    )
    played = [r for r in common.read_jsonl(str(tmp_path / "eval_id_incontext.jsonl")) if r["kind"] == "game"]
    assert (
        s["knowledge_id"] == "r1-c1-s2"
        and {r["knowledge"] for r in played} == {"- OTHER"}
        and "won_by_knowledge" not in s
    )
    summaries = evaluate.main(evaluate.parse_args(base + ["--knowledge", str(know), "--knowledge-curve", "0"]))
    steps = [(x["knowledge_id"], x["step"]) for x in summaries]
    assert steps == [("r1-c0-s0", 0), ("r1-c0-s1", 1), ("r1-c0-s2", 2)]  # in step order, from the empty start
    played = [r for r in common.read_jsonl(str(tmp_path / "eval_id_curve0.jsonl")) if r["kind"] == "game"]
    assert len(played) == 9
    for r in played:  # step 0 plays without knowledge, the later snapshots with theirs
        shown = r["turns"][0]["messages"][-1]["content"]
        if r["knowledge_id"] == "r1-c0-s0":
            assert play.KNOWLEDGE_BLOCK.split("{")[0] not in shown
        else:
            assert f"- TIP {r['knowledge_id'][-1]}" in shown


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
            settings=dict(episodes=1, max_turns=12),
        )
        common.write_jsonl(str(d / "eval_id.jsonl"), games_won(won) + [summary])
        common.write_jsonl(
            str(d / "eval_ood.jsonl"), [dict(summary, eval_set="ood", pass_rate=pass_rate / 2, pass_rate_ci=None)]
        )
        common.write_jsonl(
            str(d / "eval_ifeval.jsonl"),
            [dict(kind="prompt"), dict(kind="summary", round=r, prompt_accuracy=ifa, prompt_accuracy_ci=[0.3, 0.6])],
        )
        if r:
            incontext = dict(
                summary, pass_rate=0.5, pass_rate_ci=[0.4, 0.6], tokens_per_turn=11.0, tokens_per_turn_ci=[10.5, 11.5]
            )
            common.write_jsonl(str(d / "eval_id_incontext.jsonl"), games_won(range(5, 15)) + [incontext])
            (d / "model").mkdir()
            args = dict(mode=mode, teacher="frozen", lr=1e-5, out=f"{run}/round_{r}/model", quiet=True)
            (d / "model" / "args.json").write_text(json.dumps(args))
            common.write_jsonl(str(d / "knowledge.jsonl"), [dict(knowledge_id="k", source="knowledge", model="m")])
    common.write_jsonl(
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
    # what was drawn: the table's numbers, each at its round, with its interval
    rates, tokens, ifeval, diffs, curve = (plotted(ax) for ax in fig.axes)
    assert rates["held-out"] == [(0, 0.3, 0.2, 0.4), (1, 0.4, 0.3, 0.5), (2, 0.55, 0.45, 0.65)]
    assert rates["knowledge in context"] == [(1.06, 0.5, 0.4, 0.6), (2.06, 0.5, 0.4, 0.6)]
    assert [(x, y) for x, y, _, _ in rates["OOD"]] == [(0.12, 0.15), (1.12, 0.2), (2.12, 0.275)]
    assert [y for _, y, _, _ in tokens["held-out"]] == [12, 10, 8] and [y for _, y, _, _ in ifeval["IFEval"]] == [
        0.5,
        0.5,
        0.45,
    ]
    d = evaluate.paired_difference(games_won(range(6)), games_won(range(11)))
    assert diffs["vs round 0"][-1] == pytest.approx((2, 0.25, *d["diff_ci"])) and [
        x for x, *_ in diffs["vs round 0"]
    ] == [1, 2]
    assert [(x, round(y, 2)) for x, y, _, _ in diffs["vs in context"]] == [(1.06, -0.1), (2.06, 0.05)]
    assert [(x, y) for x, y, _, _ in curve["round 1"]] == [(1, 0.1), (2, 0.2)]


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
    assert [x for x, *_ in in_context["offpolicy"]] == [1.05, 2.05] and len(ifeval["onpolicy"]) == 3
    assert (tmp_path / "compare.png").exists() and not (runs[0] / "report.md").exists()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "flag, bad, edge",
    [
        ("--ifeval-n", "-3", "0"),  # -3 ran all 541 prompts before it was range-checked
        ("--ifeval-n", "x", "1"),
        ("--round", "-1", "0"),
        ("--n", "0", "1"),
        ("--n-ood", "0", "1"),
        ("--max-turns", "0", "1"),
        ("--history", "-1", "0"),
        ("--max-new-tokens", "0", "1"),
        ("--episodes", "0", "1"),
        ("--batch-size", "0", "1"),
        ("--knowledge-curve", "-1", "0"),
        ("--ifeval-max-new-tokens", "0", "1"),
        ("--ifeval-temperature", "-0.1", "0"),
        ("--ifeval-temperature", "nan", "0"),
        ("--ifeval-temperature", "inf", "2"),
        ("--ifeval-top-p", "0", "1"),
        ("--ifeval-top-p", "1.5", "0.01"),
        ("--ifeval-top-k", "-1", "0"),
        ("--ifeval-thinking", "2", "1"),
        ("--list-commands", "2", "0"),
    ],
)
def test_numeric_flags_are_range_checked(flag, bad, edge, capsys):
    with pytest.raises(SystemExit):
        evaluate.parse_args([flag, bad])
    assert f"argument {flag}" in capsys.readouterr().err
    value = vars(evaluate.parse_args([flag, edge]))[flag[2:].replace("-", "_")]
    assert value == float(edge) and type(value) in (int, float)


def test_bad_input(tiny_model, tiny_games, tmp_path):
    run_ = lambda *argv: evaluate.main(evaluate.parse_args(["--out-dir", str(tmp_path), "--quiet", *argv]))
    with pytest.raises(common.InputError, match="no such model folder"):
        run_("--model", str(tmp_path / "missing"), "--games", tiny_games)
    (tmp_path / "empty").mkdir()
    with pytest.raises(common.InputError, match="no finished games"):
        run_("--model", tiny_model, "--games", str(tmp_path / "empty"))
    with pytest.raises(common.InputError, match="--out names one file"):
        run_("--model", tiny_model, "--sets", "id,ood", "--out", str(tmp_path / "x.jsonl"))
    with pytest.raises(common.InputError, match="not ifeval"):
        run_("--model", tiny_model, "--sets", "ifeval", "--knowledge", str(tmp_path / "k.jsonl"))
    with pytest.raises(common.InputError, match="needs --knowledge"):
        run_("--model", tiny_model, "--games", tiny_games, "--knowledge-curve", "0")
    bad = tmp_path / "prompts.jsonl"
    common.write_jsonl(
        str(bad), [dict(key=7, prompt="Say hi.", instruction_id_list=["punctuation:no_semicolons"], kwargs=[{}])]
    )
    with pytest.raises(
        common.InputError, match=r"prompts.jsonl: prompt 7: unknown instruction\(s\) \['punctuation:no_semicolons'\]"
    ):
        run_("--model", tiny_model, "--sets", "ifeval", "--ifeval-file", str(bad))
    with pytest.raises(common.InputError, match=r"--ifeval-n 600: the prompt file has 541 prompts"):
        run_("--model", str(tmp_path / "missing"), "--sets", "ifeval", "--ifeval-n", "600")  # before the model loads
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--sets", "id,games"])
    assert not [f for f in os.listdir(tmp_path) if f.startswith("eval_")]  # nothing half-written
    run = fake_run(tmp_path)
    with open(run / "round_1" / "eval_id.jsonl", "a") as f:
        f.write("{broken\n")
    with pytest.raises(common.InputError, match=r"round_1/eval_id.jsonl:22: not valid JSON"):
        evaluate.write_report([str(run)])
    common.write_jsonl(str(run / "round_1" / "eval_id.jsonl"), [dict(kind="summary", round=1, pass_rate=0.5)])
    with pytest.raises(common.InputError, match=r"round_1/eval_id.jsonl: expected a summary record .* pass_rate_ci"):
        evaluate.write_report([str(run)])
    common.write_jsonl(
        str(run / "round_1" / "eval_id.jsonl"),
        [dict(kind="game", won=True), dict(kind="summary", pass_rate=0.5, pass_rate_ci=[0, 1])],
    )
    with pytest.raises(common.InputError, match=r"round_1/eval_id.jsonl: a game record without game, episode and won"):
        evaluate.write_report([str(run)])
    common.write_jsonl(
        str(run / "round_1" / "eval_id.jsonl"),
        games_won([1]) + [dict(kind="summary", pass_rate=0.5, pass_rate_ci=[0, 1])],
    )
    (run / "round_1" / "model" / "args.json").write_text("[1, 2]")
    with pytest.raises(common.InputError, match=r"round_1/model/args.json: expected a JSON object, got list"):
        evaluate.write_report([str(run)])
    (run / "round_1" / "model" / "args.json").write_text("{")
    with pytest.raises(common.InputError, match=r"round_1/model/args.json: expected a JSON object \(Expecting"):
        evaluate.write_report([str(run)])
    with pytest.raises(common.InputError, match="no evaluations found"):
        evaluate.write_report([str(tmp_path / "empty")])
