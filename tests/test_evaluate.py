"""evaluate.py and oel/ifeval.py: the summary metrics against hand-computed values, IFEval's checker on
passing and failing answers, end-to-end runs with a tiny model, bad input. The statistics behind the
intervals and the report (`--report`) are oel/report.py's: tests/test_report.py."""

import json
import os

import pytest
import thinking_stub

import evaluate
from oel import cli, experience, ifeval, jsonl, lm, stats


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
    assert m["pass_rate_ci"] == pytest.approx(stats.wilson(2, 4))  # one episode a game: independent trials
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
    assert m["n"] == 4 and m["games"] == 2 and m["won"] == 2 and m["pass_rate"] == 0.5  # over episodes
    assert m["pass_rate_ci"] == stats.ratio_ci([1, 1], [2, 2])[1] == (0.5, 0.5)
    assert m["turns"] == 2.5 and m["turns_ci"] == stats.ratio_ci([6, 4], [2, 2])[1] == (2, 3)


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
        m["prompt_accuracy_ci"] == pytest.approx(stats.wilson(1, 3))
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
        records = jsonl.read_jsonl(str(out_dir / f"eval_{s['eval_set']}.jsonl"))
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

    monkeypatch.setattr(lm, "generate_ids", recorder)
    argv = ["--model", tiny_qwen3, "--sets", "ifeval", "--ifeval-n", "2", "--out-dir", str(tmp_path), "--quiet"]
    (s,) = evaluate.main(evaluate.parse_args(argv + ["--thinking", "--ifeval-max-new-tokens", "40"]))
    assert [sampling for _, sampling in calls] == [(0.7, 0.8, 20)]
    assert all(p.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") for p in calls[0][0])
    records = jsonl.read_jsonl(str(tmp_path / "eval_ifeval.jsonl"))[:-1]
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
    # with room for the reasoning, IFEval's checker reads the answer after </think>, never the reasoning
    read, check = [], ifeval.check
    monkeypatch.setattr(ifeval, "check", lambda p, text: read.append(text) or check(p, text))
    (s,) = evaluate.main(evaluate.parse_args(argv[:-3] + ["--ifeval-max-new-tokens", "200", "--force"]))
    records = jsonl.read_jsonl(str(tmp_path / "eval_ifeval.jsonl"))[:-1]
    assert all("</think>" in r["response"] for r in records) and s["cut"] == 0
    assert read == [r["response"].rsplit("</think>", 1)[1].strip() for r in records] == [r["answer"] for r in records]
    assert all("<think>" not in text and text for text in read)


def test_knowledge_in_context_and_the_curve(tiny_model, tiny_games, tmp_path):
    know = tmp_path / "knowledge.jsonl"
    jsonl.write_jsonl(
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
    played = [r for r in jsonl.read_jsonl(str(tmp_path / "eval_id_incontext.jsonl")) if r["kind"] == "game"]
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
    played = [r for r in jsonl.read_jsonl(str(tmp_path / "eval_id_incontext.jsonl")) if r["kind"] == "game"]
    assert (
        s["knowledge_id"] == "r1-c1-s2"
        and {r["knowledge"] for r in played} == {"- OTHER"}
        and "won_by_knowledge" not in s
    )
    summaries = evaluate.main(evaluate.parse_args(base + ["--knowledge", str(know), "--knowledge-curve", "0"]))
    steps = [(x["knowledge_id"], x["step"]) for x in summaries]
    assert steps == [("r1-c0-s0", 0), ("r1-c0-s1", 1), ("r1-c0-s2", 2)]  # in step order, from the empty start
    played = [r for r in jsonl.read_jsonl(str(tmp_path / "eval_id_curve0.jsonl")) if r["kind"] == "game"]
    assert len(played) == 9
    for r in played:  # step 0 plays without knowledge, the later snapshots with theirs
        shown = r["turns"][0]["messages"][-1]["content"]
        if r["knowledge_id"] == "r1-c0-s0":
            assert experience.KNOWLEDGE_BLOCK.split("{")[0] not in shown
        else:
            assert f"- TIP {r['knowledge_id'][-1]}" in shown


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
    with pytest.raises(SystemExit) as e:
        evaluate.parse_args([flag, bad])
    assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
    value = vars(evaluate.parse_args([flag, edge]))[flag[2:].replace("-", "_")]
    assert value == float(edge) and type(value) in (int, float)


def test_bad_input(tiny_model, tiny_games, tmp_path, capsys):
    run_ = lambda *argv: evaluate.main(evaluate.parse_args(["--out-dir", str(tmp_path), "--quiet", *argv]))
    with pytest.raises(cli.InputError, match="no such model folder"):
        run_("--model", str(tmp_path / "missing"), "--games", tiny_games)
    (tmp_path / "empty").mkdir()
    with pytest.raises(cli.InputError, match="no finished games"):
        run_("--model", tiny_model, "--games", str(tmp_path / "empty"))
    with pytest.raises(cli.InputError, match="--out names one file"):
        run_("--model", tiny_model, "--sets", "id,ood", "--out", str(tmp_path / "x.jsonl"))
    with pytest.raises(cli.InputError, match="not ifeval"):
        run_("--model", tiny_model, "--sets", "ifeval", "--knowledge", str(tmp_path / "k.jsonl"))
    with pytest.raises(cli.InputError, match="needs --knowledge"):
        run_("--model", tiny_model, "--games", tiny_games, "--knowledge-curve", "0")
    bad = tmp_path / "prompts.jsonl"
    jsonl.write_jsonl(
        str(bad), [dict(key=7, prompt="Say hi.", instruction_id_list=["punctuation:no_semicolons"], kwargs=[{}])]
    )
    with pytest.raises(
        cli.InputError, match=r"prompts.jsonl: prompt 7: unknown instruction\(s\) \['punctuation:no_semicolons'\]"
    ):
        run_("--model", tiny_model, "--sets", "ifeval", "--ifeval-file", str(bad))
    with pytest.raises(cli.InputError, match=r"--ifeval-n 600: the prompt file has 541 prompts"):
        run_("--model", tiny_model, "--sets", "ifeval", "--ifeval-n", "600")
    (tmp_path / "a_file").write_text("x\n")
    with pytest.raises(cli.InputError, match=r"a_file/eval_id.jsonl: .*a_file is a file, not a folder"):
        evaluate.main(evaluate.parse_args(["--out-dir", str(tmp_path / "a_file"), "--games", tiny_games]))
    with pytest.raises(cli.InputError, match=r"cannot write in /sys"):
        evaluate.main(evaluate.parse_args(["--out-dir", "/sys/oel-run/round_1", "--games", tiny_games]))
    (tmp_path / "k.txt").write_text("- open the chest first\n")
    with_text = ["--model", tiny_model, "--games", tiny_games, "--knowledge", str(tmp_path / "k.txt")]
    with pytest.raises(cli.InputError, match=r"k.txt: --knowledge-id 'r1-c0-s2' picks a record of a knowledge JSONL"):
        run_(*with_text, "--knowledge-id", "r1-c0-s2")
    with pytest.raises(cli.InputError, match=r"k.txt: --knowledge-curve needs a knowledge JSONL"):
        run_(*with_text, "--knowledge-curve", "0")
    with pytest.raises(SystemExit) as e:
        evaluate.parse_args(["--sets", "id,games"])
    assert e.value.code == 2 and "argument --sets" in capsys.readouterr().err
    assert not [f for f in os.listdir(tmp_path) if f.startswith("eval_")]  # nothing half-written
