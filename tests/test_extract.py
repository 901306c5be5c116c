"""extract.py: item parsing, the token budget against a brute force, accumulation order, chains that
differ only by randomness, an end-to-end run with a tiny model, and bad input."""

import itertools
import json

import pytest
import thinking_stub

import extract
from oel import cli, jsonl, lm

count_words = lambda text: len(text.split())


@pytest.mark.parametrize(
    "output, expected",
    [
        ("- EXPERIENCE ITEM: take the key first.", ["take the key first."]),
        ("Some talk\n- EXPERIENCE ITEM: a\nmore talk\n- experience item:   b  c ", ["a", "b c"]),
        ("- EXPERIENCE ITEM: one - EXPERIENCE ITEM: two", ["one", "two"]),
        ("<think>- EXPERIENCE ITEM: not this</think>\n- EXPERIENCE ITEM: this", ["this"]),
        ("<think>- EXPERIENCE ITEM: unfinished thought", []),
        ("no marker at all, just advice", []),
        ("- EXPERIENCE ITEM:   ", []),
    ],
)
def test_parse_items(output, expected):
    assert extract.parse_items(output, "structured-v2") == expected


def test_parse_free_text():
    assert extract.parse_items("<think>hm</think>  Open doors\n before going through. ", "freetext-v1") == [
        "Open doors before going through."
    ]
    assert extract.parse_items("<think>only thinking</think>", "freetext-v1") == []


def brute_force_budget(items, max_tokens):
    """The longest suffix of items (the newest ones) whose rendering fits."""
    for start in range(len(items) + 1):
        if count_words(extract.render_knowledge(items[start:])) <= max_tokens:
            return items[start:]


def test_budget_matches_brute_force():
    pool = ["a", "b c", "d e f", "g h i j", "k"]
    for n in range(len(pool) + 1):
        for items in itertools.permutations(pool, n):
            for budget in range(0, 16):
                assert extract.fit_budget(list(items), budget, count_words) == brute_force_budget(list(items), budget)


def test_accumulation_appends_dedups_and_drops_oldest_whole_items():
    items = extract.add_items([], ["first lesson", "second lesson", "third lesson"], 2, 100, count_words)
    assert items == ["first lesson", "second lesson"]  # at most two new items a step
    items = extract.add_items(items, ["Second Lesson", "fourth lesson"], 2, 100, count_words)
    assert items == ["first lesson", "second lesson", "fourth lesson"]  # a repeat is not added
    items = extract.add_items(items, ["fifth lesson here"], 2, 10, count_words)
    assert items == ["second lesson", "fourth lesson", "fifth lesson here"]  # oldest gone, none cut
    assert extract.render_knowledge(items) == "- second lesson\n- fourth lesson\n- fifth lesson here"


def trajectory(game, won):
    turns = [
        dict(turn=0, messages=[], response="go north", command="go north", reply="You can't go that way."),
        dict(turn=1, messages=[], response="take the coin", command="take coin", reply="You take the coin."),
    ]
    feedback = (
        "Result: WON in 2 turns (score 1/1). The game said: You win"
        if won
        else "Result: NOT FINISHED, the turn limit of 2 turns ran out"
    )
    return dict(
        game=game,
        episode=0,
        objective=f"Take the coin{'' if game == 'g' else ' in ' + game}.",
        intro="-= Room =-",
        turns=turns,
        feedback=feedback,
        knowledge_id=None,  # collect.py records say which knowledge was in context (none here)
        knowledge=None,
    )


def test_trajectory_text_shows_every_turn_and_the_result():
    text = extract.format_trajectory(trajectory("g", True), 1000, count_words)
    assert text.startswith("Goal: Take the coin.\nStart: -= Room =-")
    assert "Turn 1. You: go north\nGame: You can't go that way." in text
    assert "Turn 2. You: take the coin (sent: take coin)" in text and text.endswith("The game said: You win")


def thinking_trajectory(n_turns, reasoning_words=120):
    """A trajectory whose responses are Qwen3-style: a long reasoning, then the command."""
    record = trajectory("g", False)
    reasoning = " ".join(f"step{i} of my reasoning about where the coin is" for i in range(reasoning_words // 8))
    record["turns"] = [
        dict(
            turn=t,
            response=f"\n<think>\nturn {t}: {reasoning}\nso I go.\n</think>\n\n[go north]",
            command="go north",
            reply=f"Reply {t}.",
        )
        for t in range(n_turns)
    ]
    return record


def test_trajectory_text_shows_whole_responses_with_their_reasoning():
    record = thinking_trajectory(3)
    text = extract.format_trajectory(record, 10_000, count_words)
    for t in record["turns"]:  # every response whole, newlines and all (it was cut at 200 characters)
        assert f"Turn {t['turn'] + 1}. You: {t['response'].strip()} (sent: go north)\nGame: Reply {t['turn']}." in text
    assert "not shown" not in text and text.endswith("turn limit of 2 turns ran out")


def test_trajectory_over_budget_keeps_the_newest_turns_whole_and_the_result():
    record = thinking_trajectory(6)
    full = extract.format_trajectory(record, 10**6, count_words)
    turn_texts = ["".join(extract.render_turn(t)) for t in record["turns"]]
    for budget in range(1, count_words(full) + 2):
        text = extract.format_trajectory(record, budget, count_words)
        assert count_words(text) <= budget and (full.endswith(text) or text.endswith(record["feedback"]))
        base = count_words(full.split("\nTurn 1.")[0] + record["feedback"]) + 10  # goal, start, note, result
        assert text.startswith("Goal: ") and text.endswith(record["feedback"]) or budget < base
        kept = [i for i, t in enumerate(turn_texts) if t in text]
        assert kept == list(range(len(turn_texts) - len(kept), len(turn_texts)))  # a suffix of whole turns
        if len(kept) < len(turn_texts):
            # brute force: one more whole turn would not fit
            n_more = len(kept) + 1
            bigger = "\n".join(
                [full.split("\nTurn 1.")[0], "(x earlier turns not shown: over the x-token budget)"]
                + turn_texts[-n_more:]
                + [record["feedback"]]
            )
            assert count_words(bigger) > budget
            if kept:
                assert f"({6 - len(kept)} earlier turns not shown: over the {budget}-token budget)" in text


def test_trajectory_with_a_real_tokenizer_and_a_turn_over_the_budget(tiny_qwen3):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    count = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)
    record = thinking_trajectory(4, reasoning_words=400)
    full = extract.format_trajectory(record, 10**6, count)
    newest = "".join(extract.render_turn(record["turns"][-1]))
    base = count(full.split("\nTurn 1.")[0] + "(4 earlier turns not shown: over the 100-token budget)\n")
    base += count(record["feedback"]) + 80  # goal, start, the note, the result, and a little of a turn
    for budget in (count(full), count(full) - 1, count(full) // 2, count(newest) // 2, base):
        text = extract.format_trajectory(record, budget, count)
        assert count(text) <= budget and text.endswith(record["feedback"]) and text.startswith("Goal: ")
        assert "(sent: go north)\nGame: Reply 3." in text  # the newest turn's end always stays
    assert extract.format_trajectory(record, count(full), count) == full
    text = extract.format_trajectory(record, count(newest) // 2, count)
    assert "(3 earlier turns not shown" in text and "Turn 4. You: (start cut) ..." in text


def test_keep_tail_against_brute_force():
    text = "a bb ccc dddd eeeee f"
    for budget in range(0, 8):
        tail = extract.keep_tail(text, budget, count_words)
        best = next(text[s:] for s in range(len(text) + 1) if count_words(text[s:]) <= budget)
        assert tail == best


def run(tiny_model, tmp_path, *extra):
    traj = tmp_path / "extract_in.jsonl"
    jsonl.write_jsonl(str(traj), [trajectory(f"g{i}", i % 2 == 0) for i in range(3)])
    out = tmp_path / "knowledge.jsonl"
    args = extract.parse_args(
        [
            "--model",
            tiny_model,
            "--trajectories",
            str(traj),
            "--out",
            str(out),
            "--chains",
            "3",
            "--max-new-tokens",
            "12",
            "--round",
            "2",
            "--force",
            *extra,
        ]
    )
    return extract.main(args), out


def test_end_to_end_with_a_tiny_model(tiny_model, tmp_path, monkeypatch):
    # the tiny random model writes gibberish; make every third output carry marked items so the
    # bookkeeping is checked on real model calls
    real = lm.generate_ids
    calls = []

    def generate_ids(model, tokenizer, prompts, *a, **k):
        outs = real(model, tokenizer, prompts, *a, **k)
        calls.append(prompts)
        lesson = lambda c: tokenizer(f" lesson {len(calls)}.{c}", add_special_tokens=False).input_ids
        return [lesson(c) + [tokenizer.eos_token_id] if c != 1 else ids for c, ids in enumerate(outs)]

    monkeypatch.setattr(lm, "generate_ids", generate_ids)
    snapshots, out = run(tiny_model, tmp_path, "--use-steps", "2", "--chain-data", "shared")
    assert len(calls) == 3 and all(len(p) == 3 for p in calls)  # one batched call per step over all chains
    assert all(
        p.endswith("<|im_start|>assistant\n- EXPERIENCE ITEM:") for p in calls[0]
    )  # the answer starts with the marker
    assert "Lessons you already know:\n- lesson 1.0" in calls[1][0]  # chain 0 sees its own knowledge
    records = jsonl.read_jsonl(str(out))
    assert records == snapshots and len(records) == 3 * 4  # chains x (steps + the empty start)
    by_id = {r["knowledge_id"]: r for r in records}
    assert by_id["r2-c0-s0"]["knowledge"] == "" and by_id["r2-c0-s3"]["items"] == [
        "lesson 1.0",
        "lesson 2.0",
        "lesson 3.0",
    ]
    assert (
        by_id["r2-c0-s3"]["trajectory_ids"] == ["g0#0", "g1#0", "g2#0"]
        and by_id["r2-c2-s1"]["knowledge"] == "- lesson 1.2"
    )
    assert [r["knowledge_id"] for r in records if r["in_pool"]] == ["r2-c0-s2", "r2-c1-s2", "r2-c2-s2"]
    assert all(
        r["round"] == 2
        and r["prompt_version"] == "structured-v2"
        and r["source"] == "knowledge"
        and r["n_tokens"] >= r["n_items"]
        for r in records
    )


def test_chains_differ_only_by_randomness(tiny_model, tmp_path, monkeypatch):
    # greedy, the tiny model writes only newlines (an empty answer): record the raw outputs, and start
    # each answer with a word so the knowledge is not empty
    real, seen = lm.generate_ids, []

    def generate_ids(model, tokenizer, prompts, *a, **k):
        outs = real(model, tokenizer, prompts, *a, **k)
        seen.append((prompts, outs))
        return [tokenizer("Open", add_special_tokens=False).input_ids + ids for ids in outs]

    monkeypatch.setattr(lm, "generate_ids", generate_ids)
    shared = ("--chain-data", "shared")
    greedy, _ = run(tiny_model, tmp_path, "--temperature", "0", "--prompt-version", "freetext-v1", *shared)
    assert all(len(set(prompts)) == 1 and all(o == outs[0] for o in outs) for prompts, outs in seen)
    last = [r for r in greedy if r["step"] == 3]
    assert len({r["knowledge"] for r in last}) == 1  # same prompt, no randomness: same knowledge
    seen.clear()
    sampled, _ = run(
        tiny_model, tmp_path, "--temperature", "1.0", "--prompt-version", "freetext-v1", "--seed", "5", *shared
    )
    # each chain is shown its own knowledge so far, never another chain's (one batched call per step)
    knowledge = {(r["chain"], r["step"]): r["knowledge"] for r in sampled}
    for step, (prompts, _) in enumerate(seen, 1):
        for c, prompt in enumerate(prompts):
            own = knowledge[c, step - 1]
            assert (own in prompt) if own else ("Lessons you already know" not in prompt)
            others = {knowledge[o, step - 1] for o in range(3)} - {"", own}
            assert not [o for o in others if o in prompt]
    assert len(seen) == 3 and len({knowledge[c, 2] for c in range(3)}) > 1
    again, _ = run(
        tiny_model, tmp_path, "--temperature", "1.0", "--prompt-version", "freetext-v1", "--seed", "5", *shared
    )
    assert sampled == again  # a seed fixes everything
    assert len({r["knowledge"] for r in sampled if r["step"] == 3}) > 1


def test_raw_trajectory_pool(tiny_model, tmp_path):
    snapshots, _ = run(
        tiny_model, tmp_path, "--source", "raw", "--max-knowledge-tokens", "100000", "--chain-data", "shared"
    )
    pool = [s for s in snapshots if s["in_pool"]]
    assert len(pool) == 3 and all(s["source"] == "raw" and s["n_items"] == 3 for s in pool)
    assert "Turn 1. You: go north" in pool[0]["knowledge"] and "Result: WON" in pool[0]["knowledge"]


def test_raw_pool_keeps_the_most_recent_part_of_a_long_trajectory(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    count = lambda text: len(AutoTokenizer.from_pretrained(tiny_model)(text, add_special_tokens=False).input_ids)
    records = [thinking_trajectory(20, reasoning_words=60) for _ in range(2)]
    for i, r in enumerate(records):
        r.update(game=f"g{i}", feedback=f"Result: LOST game {i}")
    assert count(extract.format_trajectory(records[0], 10**6, count)) > 2048  # one alone is over the budget
    traj, out = tmp_path / "long.jsonl", tmp_path / "knowledge.jsonl"
    jsonl.write_jsonl(str(traj), records)
    argv = ["--model", tiny_model, "--trajectories", str(traj), "--out", str(out), "--source", "raw"]
    snapshots = extract.main(extract.parse_args(argv + ["--max-knowledge-tokens", "2048", "--chains", "1"]))
    pool = [s for s in snapshots if s["in_pool"]]
    assert len(pool) == 1 and all(s["n_items"] == 1 and 0 < s["n_tokens"] <= 2048 for s in pool)
    text = pool[0]["items"][0]  # the newest trajectory, its most recent turns whole, and its result
    assert text.endswith("Game: Reply 19.\nResult: LOST game 1") and "earlier turns not shown" in text
    assert "".join(extract.render_turn(records[1]["turns"][-1])) in text
    assert "Goal: Take the coin.\nStart: -= Room =-" in text


def test_slice_chains_read_disjoint_trajectories(tiny_model, tmp_path, monkeypatch):
    real, seen = lm.generate_ids, []

    def generate_ids(model, tokenizer, prompts, *a, **k):
        seen.append(prompts)
        marked = tokenizer(" EXPERIENCE ITEM: lesson", add_special_tokens=False).input_ids
        return [marked + ids for ids in real(model, tokenizer, prompts, *a, **k)]

    monkeypatch.setattr(lm, "generate_ids", generate_ids)
    traj, out = tmp_path / "seven.jsonl", tmp_path / "knowledge.jsonl"
    jsonl.write_jsonl(str(traj), [trajectory(f"g{i}", True) for i in range(7)])
    argv = ["--model", tiny_model, "--trajectories", str(traj), "--out", str(out), "--chains", "3"]
    snapshots = extract.main(extract.parse_args(argv + ["--max-new-tokens", "4"]))  # slice: the default
    assert len(seen) == 2 and all(len(p) == 3 for p in seen)  # 7 // 3 = 2 steps, one batched call each
    for step, prompts in enumerate(seen):  # chain c reads trajectory c + 3 * step, and no other
        for c, prompt in enumerate(prompts):
            assert [g for g in range(7) if f"Take the coin in g{g}." in prompt] == [c + 3 * step]
    last = {s["chain"]: s["trajectory_ids"] for s in snapshots if s["in_pool"]}
    assert last == {0: ["g0#0", "g3#0"], 1: ["g1#0", "g4#0"], 2: ["g2#0", "g5#0"]}  # g6 is left over
    assert all(s["chain_data"] == "slice" for s in snapshots)
    assert extract.chain_plan(8, 4, "slice") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert extract.chain_plan(3, 2, "shared", steps=2) == [[0, 1], [0, 1]]
    with pytest.raises(cli.InputError, match="each chain needs one of its own"):
        extract.chain_plan(3, 4, "slice")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "no trajectories"),
        ('{"turns": [], "feedback": "x"}\n{"turns": [\n', r"t.jsonl:2: not valid JSON"),
        ('{"turns": []}\n', r"t.jsonl:1: record lacks key\(s\) \['feedback'\]"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"t.jsonl: a binary file, not text"),  # UnicodeDecodeError, once
        (b'{"turns": []}\n\xff\xfe\n', r"t.jsonl:2: not UTF-8 text"),
    ],
)
def test_bad_input_is_clear_and_keeps_earlier_output(content, expected, tiny_model, tmp_path):
    traj = tmp_path / "t.jsonl"
    traj.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "knowledge.jsonl"
    out.write_text("earlier\n")
    args = extract.parse_args(["--model", tiny_model, "--trajectories", str(traj), "--out", str(out), "--force"])
    with pytest.raises(cli.InputError, match=expected):
        extract.main(args)
    assert out.read_text() == "earlier\n"
    with pytest.raises(cli.InputError, match=r"knowledge.jsonl/k.jsonl: .*knowledge.jsonl is a file, not a folder"):
        extract.main(
            extract.parse_args(["--model", tiny_model, "--trajectories", str(traj), "--out", f"{out}/k.jsonl"])
        )
    with pytest.raises(cli.InputError, match="file not found"):
        extract.main(
            extract.parse_args(
                ["--model", tiny_model, "--trajectories", str(tmp_path / "none.jsonl"), "--out", str(out), "--force"]
            )
        )


def thinking_run(tiny_qwen3, tmp_path, monkeypatch, *extra, n=4):
    """extract.py --thinking on the tiny Qwen3 (its real chat template), answers from the thinking stub."""
    monkeypatch.setattr(lm, "generate_ids", thinking_stub.generate_ids)
    traj = tmp_path / "extract_in.jsonl"
    jsonl.write_jsonl(str(traj), [trajectory(f"g{i}", i % 2 == 0) for i in range(n)])
    out = tmp_path / "knowledge.jsonl"
    argv = ["--model", tiny_qwen3, "--trajectories", str(traj), "--out", str(out), "--chains", "2", "--thinking"]
    return extract.main(extract.parse_args(argv + list(extra))), out


def test_the_output_cap_follows_the_thinking_switch():
    base = ["--trajectories", "t.jsonl", "--out", "k.jsonl"]
    assert extract.parse_args(base).max_new_tokens == 96
    assert extract.parse_args(base + ["--thinking"]).max_new_tokens == 2048
    assert extract.parse_args(base + ["--thinking", "--max-new-tokens", "300"]).max_new_tokens == 300


def test_thinking_extraction_keeps_the_items_after_think(tiny_qwen3, tmp_path, monkeypatch, capsys):
    snapshots, out = thinking_run(tiny_qwen3, tmp_path, monkeypatch)
    pool = [s for s in snapshots if s["in_pool"]]
    assert len(pool) == 2 and all(s["n_items"] >= 2 for s in pool)
    items = [i for s in pool for i in s["items"]]
    assert all(i.startswith("Lesson ") and "let me think" not in i and "think>" not in i for i in items)
    assert jsonl.read_jsonl(str(out)) == snapshots
    assert "outputs cut at --max-new-tokens 2048: 0/4 (0 of them inside <think>)" in capsys.readouterr().out


def test_a_cap_inside_the_reasoning_is_a_clear_error(tiny_qwen3, tmp_path, monkeypatch, capsys):
    with pytest.raises(cli.InputError, match=r"4 ended inside an unclosed <think>.*Raise --max-new-tokens"):
        thinking_run(tiny_qwen3, tmp_path, monkeypatch, "--max-new-tokens", "40")
    assert "outputs cut at --max-new-tokens 40: 4/4 (4 of them inside <think>)" in capsys.readouterr().out
    assert not (tmp_path / "knowledge.jsonl").exists()  # an empty pool is never written


def test_no_item_at_all_is_a_clear_error(tiny_model, tmp_path):
    # the tiny random model never writes a marked item
    with pytest.raises(cli.InputError, match=r"every pool entry is empty \(3/3 extractor outputs had no item"):
        run(tiny_model, tmp_path, "--answer-prefix", "0")


@pytest.mark.parametrize(
    "flag",
    [
        "--steps",
        "--use-steps",
        "--round",
        "--chains",
        "--max-new-tokens",
        "--max-knowledge-tokens",
        "--max-new-items",
        "--max-trajectory-tokens",
    ],
)
def test_every_numeric_flag_is_range_checked(flag, capsys):
    with pytest.raises(SystemExit) as e:
        extract.parse_args(["--trajectories", "t.jsonl", "--out", "k.jsonl", flag, "-1"])
    assert e.value.code == 2 and f"argument {flag}: expected" in capsys.readouterr().err


@pytest.mark.parametrize(
    "record, expected",
    [
        (
            dict(knowledge_id="r1-c0-s1", knowledge="- a", items=["a"]),
            r"t.jsonl:3: this is an extract.py knowledge",
        ),
        (dict(kind="game", eval_set="id", turns=[], feedback="x"), r"t.jsonl:3: this is an evaluate.py output"),
        (dict(kind="summary", n=3, pass_rate=0.5), r"t.jsonl:3: this is an evaluate.py output"),
        (dict(turns=[dict(turn=0, response="go")], feedback="x"), r"t.jsonl:3: expected 'turns' as a list"),
        (dict(turns="go north", feedback="x"), r"t.jsonl:3: expected 'turns' as a list"),
    ],
)
def test_input_of_the_wrong_kind_fails_before_the_model_loads(record, expected, tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model must not load before the input is checked")

    monkeypatch.setattr(lm, "load_model", no_model)
    monkeypatch.setattr(lm, "resolve_model", no_model)
    traj = tmp_path / "t.jsonl"
    traj.write_text(json.dumps(trajectory("g", True)) + "\n\n" + json.dumps(record) + "\n")
    args = extract.parse_args(["--trajectories", str(traj), "--out", str(tmp_path / "k.jsonl")])
    with pytest.raises(cli.InputError, match=expected):
        extract.main(args)


def test_steps_and_use_steps_beyond_the_data_fail_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(lm, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    traj = tmp_path / "t.jsonl"
    jsonl.write_jsonl(str(traj), [trajectory(f"g{i}", True) for i in range(4)])
    base = ["--trajectories", str(traj), "--out", str(tmp_path / "k.jsonl"), "--chains", "2"]
    with pytest.raises(cli.InputError, match="--steps 3: each chain has only 2 trajectories"):
        extract.main(extract.parse_args(base + ["--steps", "3"]))
    with pytest.raises(cli.InputError, match="--use-steps 5: each chain reads only 4"):
        extract.main(extract.parse_args(base + ["--chain-data", "shared", "--use-steps", "5"]))
