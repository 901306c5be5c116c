"""collect.py, games.py and the shared helpers: the harness plays games correctly, batched play equals
one-at-a-time play, records round-trip, bad input fails clearly without touching earlier outputs."""

import json
import os
import random
import shutil

import pytest
import torch

import collect
import common
import games


def args_for(tiny_model, tiny_games, out, *extra):
    return collect.parse_args(
        ["--model", tiny_model, "--games", tiny_games, "--out", str(out), "--max-turns", "3", "--quiet", *extra]
    )


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("go north", ("go north", "ok")),
        ("Take the Key.", ("take the key", "ok")),
        ("Command: open door", ("open door", "ok")),
        ("I would [go east] now", ("go east", "ok")),
        ("[look] or maybe [take coin]", ("take coin", "ok")),
        ("open door then go east", ("open door", "multi")),
        ("go west, inventory, look", ("go west", "multi")),
        ("take key; unlock door", ("take key", "multi")),
        ("go north\ngo south", ("go north", "multi")),
        ("", ("", "empty")),
        ("   \n ...", ("", "empty")),
    ],
)
def test_parse_command(answer, expected):
    assert games.parse_command(answer) == expected


def test_thinking_is_split_off_before_parsing():
    assert common.split_thinking("<think>go north?</think>\ngo south") == ("<think>go north?</think>", "go south")
    assert common.split_thinking("<think>still thinking, no answer") == ("<think>still thinking, no answer", "")
    answer, command, status, valid = games.choose_command(
        "<think>maybe west</think> go east", ["go east", "look"], "exact"
    )
    assert (answer, command, status, valid) == ("go east", "go east", "ok", True)


def test_closest_command():
    admissible = ["go east", "go west", "take red key from table", "take key", "look"]
    assert games.closest_command("take the key", admissible) == "take key"  # ties go to the shorter one
    assert games.closest_command("walk west", admissible) == "go west"
    assert games.closest_command("dance", admissible) is None
    _, command, status, valid = games.choose_command("walk west", admissible, "closest")
    assert (command, status, valid) == ("go west", "closest", False)
    _, command, status, valid = games.choose_command("walk west", admissible, "exact")
    assert (command, status, valid) == ("walk west", "ok", False)


def test_clean_removes_banner_prompt_and_status_bar():
    raw = (
        "\n   ________  __\n  |  \\  |  \\\n \\$$$$$$$$| $$\n"
        "Welcome!\n\n-= Kitchen =-\nA kitchen.\n\n\n\n>    -= Kitchen =-0/1"
    )
    assert games.clean(raw) == "Welcome!\n\n-= Kitchen =-\nA kitchen."


def test_render_log_drops_oldest_turns():
    history = [(None, "intro")] + [(f"cmd{i}", f"reply{i}") for i in range(5)]
    log = games.render_log(history, max_turns=2)
    assert log == "(earlier turns not shown)\n\n> cmd3\nreply3\n\n> cmd4\nreply4"
    assert games.render_log(history, max_turns=0).startswith("intro\n\n> cmd0")


def test_knowledge_is_inserted_the_same_way_everywhere():
    history = [(None, "You are in a room."), ("go north", "You can't go that way.")]
    plain = games.render_turn("Take the coin.", history, ["go south", "look"])
    with_k = games.render_turn("Take the coin.", history, ["go south", "look"], knowledge="- open doors first")
    assert with_k == games.insert_knowledge(plain, "- open doors first")
    assert plain[:-1] == with_k[:-1] and with_k[-1]["content"].endswith(plain[-1]["content"])
    assert "- open doors first" in with_k[-1]["content"] and "- open doors first" not in plain[-1]["content"]
    assert games.insert_knowledge(plain, None) == plain and games.insert_knowledge(plain, "") == plain
    assert "Commands you can use: go south, look" in plain[-1]["content"]
    assert "Commands you can use" not in games.render_turn("x", history, None)[-1]["content"]


def test_seed_ranges_never_collide():
    ranges = [games.seed_range("eval"), games.seed_range("ood")]
    ranges += [games.seed_range("train", r, s) for r in range(20) for s in ("extract", "deploy")]
    seeds = [set(range(low, high)) for low, high in ranges]
    for i, s in enumerate(seeds):
        assert all(not s & t for t in seeds[i + 1 :])  # held-out apart, fresh games every round and split
    with pytest.raises(ValueError, match="at most 5000 training games"):
        games.make_set("unused", "train", 5001)


def test_jsonl_round_trip_and_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    records = [{"a": 1, "text": "ünïcode\nnewline"}, {"a": 2, "nested": {"b": [1, 2]}}]
    common.write_jsonl(str(path), records)
    assert common.read_jsonl(str(path), required=("a",)) == records
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    path.write_text('{"a": 1}\n{"a": 2\n')
    with pytest.raises(common.InputError, match=r"x.jsonl:2: not valid JSON"):
        common.read_jsonl(str(path))
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(common.InputError, match=r"x.jsonl:2: expected a JSON object"):
        common.read_jsonl(str(path))
    path.write_text('{"a": 1}\n{"b": 2}\n')
    with pytest.raises(common.InputError, match=r"x.jsonl:2: record lacks key\(s\) \['a'\]"):
        common.read_jsonl(str(path), required=("a",))


def test_model_argument_errors(tmp_path):
    with pytest.raises(common.InputError, match="no such model folder"):
        common.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(common.InputError, match="no config.json"):
        common.resolve_model(str(tmp_path))
    with pytest.raises(common.InputError, match="HF_HUB_OFFLINE"):  # fails at once, no minute of retries
        common.resolve_model("nobody-here/no-such-model-xyz")


# ----------------------------------------------------------------------------- the harness


def test_walkthrough_agent_wins_every_game(tiny_games, tmp_path):
    """An agent that types TextWorld's walkthrough through the same prompt/parse/step path must win."""

    def walkthrough(episodes, messages):
        return [(f"[{ep.walkthrough[len(ep.history) - 1]}]", 1) for ep in episodes]

    paths = games.list_games(tiny_games)
    records, stats = games.play(
        walkthrough, paths, max_turns=30, history=8, batch_size=64, list_commands=False, match="exact", quiet=True
    )
    assert len(records) == 3
    for r in records:
        assert r["won"] and not r["lost"], r["feedback"]
        assert r["score"] == r["max_score"] and r["turns_used"] == len(r["turns"]) >= 1
        assert r["feedback"].startswith("Result: WON")
        assert all(t["command_status"] == "ok" and t["valid"] for t in r["turns"])
        assert "$$" not in r["intro"] and r["objective"]


def test_a_random_agent_does_not_win_everything(tiny_games):
    """The harness is not trivially winning: answering 'look' forever wins nothing."""
    paths = games.list_games(tiny_games)
    records, _ = games.play(
        lambda eps, msgs: [("look", 1)] * len(eps), paths, max_turns=4, history=8, batch_size=64, quiet=True
    )
    assert not any(r["won"] for r in records)
    assert all(r["feedback"].startswith("Result: NOT FINISHED") for r in records)


def test_strange_answers_never_crash(tiny_games):
    answers = ["", "go north then take coin", "xyzzy plugh", "<think>unfinished", "!!!", "take coin and key"]
    paths = games.list_games(tiny_games)

    def agent(episodes, messages):
        return [(answers[len(ep.history) - 1], 0) for ep in episodes]

    records, _ = games.play(agent, paths, max_turns=len(answers), history=8, batch_size=64, match="exact", quiet=True)
    statuses = [t["command_status"] for t in records[0]["turns"]]
    assert statuses == ["empty", "multi", "ok", "empty", "empty", "ok"]
    assert records[0]["turns"][1]["command"] == "go north"
    assert records[0]["turns"][0]["reply"] == "(no command was given)"


def test_lockstep_equals_one_game_at_a_time(tiny_model, tiny_games, tmp_path):
    """Greedy decoding: batched lock-step play (left padding) sends the same commands as solo play."""
    model, tokenizer = common.load_model(tiny_model, "cpu", dtype=torch.float64, quiet=True)
    paths = games.list_games(tiny_games)
    runs = []
    agent = games.model_agent(model, tokenizer, thinking=False, max_new_tokens=8, temperature=0, top_p=1.0, top_k=0)
    for lockstep in (True, False):
        records, _ = games.play(agent, paths, max_turns=3, history=8, batch_size=64, lockstep=lockstep, quiet=True)
        runs.append([[(t["response"], t["command"]) for t in r["turns"]] for r in records])
    assert runs[0] == runs[1]
    assert any(resp for game in runs[0] for resp, _ in game)  # the model did say something


def test_collect_end_to_end(tiny_model, tiny_games, tmp_path):
    out = tmp_path / "round_1" / "extraction_trajectories.jsonl"
    know = tmp_path / "k.jsonl"
    common.write_jsonl(
        str(know),
        [
            {"knowledge_id": "r1-c0-s1", "knowledge": "- old", "in_pool": False},
            {"knowledge_id": "r1-c0-s2", "knowledge": "- take the coin first", "in_pool": True},
        ],
    )
    records, summary = collect.main(
        args_for(tiny_model, tiny_games, out, "--episodes", "2", "--round", "1", "--knowledge", str(know))
    )
    again = common.read_jsonl(str(out))
    assert again == json.loads(json.dumps(records))  # the file holds exactly what was played
    assert len(again) == 6 and {r["episode"] for r in again} == {0, 1}
    r = again[0]
    assert r["run"] == tmp_path.name and r["round"] == 1 and r["model"] == tiny_model
    assert r["knowledge_id"] == "r1-c0-s2" and r["knowledge"] == "- take the coin first"
    assert 1 <= r["turns_used"] <= 3 and r["feedback"].startswith("Result:")
    t = r["turns"][0]
    assert t["messages"][-1]["role"] == "user" and "- take the coin first" in t["messages"][-1]["content"]
    assert r["objective"] in t["messages"][-1]["content"]
    assert isinstance(t["response"], str) and t["response_tokens"] >= 1
    assert set(t) >= {
        "turn",
        "messages",
        "response",
        "response_tokens",
        "answer",
        "command",
        "command_status",
        "valid",
        "reply",
        "score",
    }
    assert 0 <= summary["won"] <= 1 and summary["games"] == 6


@pytest.mark.parametrize(
    "problem",
    [
        "missing_folder",
        "empty_folder",
        "corrupt_game",
        "truncated_game",
        "scrambled_body",
        "knowledge_missing",
        "knowledge_malformed",
        "knowledge_is_trajectories",
        "knowledge_empty",
    ],
)
def test_bad_input_is_a_clear_error_and_keeps_earlier_output(problem, tiny_model, tiny_games, tmp_path):
    out = tmp_path / "trajectories.jsonl"
    out.write_text('{"earlier": "output"}\n')
    games_dir, extra = tiny_games, []
    if problem == "missing_folder":
        games_dir = str(tmp_path / "nowhere")
    elif problem == "empty_folder":
        games_dir = str(tmp_path / "empty")
        os.makedirs(games_dir)
    elif problem == "corrupt_game":
        games_dir = str(tmp_path / "corrupt")
        shutil.copytree(tiny_games, games_dir)
        victim = games.list_games(games_dir)[0]
        with open(victim, "wb") as f:
            f.write(b"not a z-machine file")
    elif problem == "truncated_game":
        games_dir = str(tmp_path / "truncated")
        shutil.copytree(tiny_games, games_dir)
        victim = games.list_games(games_dir)[-1]
        with open(victim, "r+b") as f:
            f.truncate(4000)
    elif problem == "scrambled_body":  # a valid header, noise after it: the interpreter halts on every command
        games_dir = str(tmp_path / "scrambled")
        shutil.copytree(tiny_games, games_dir)
        victim = games.list_games(games_dir)[0]
        with open(victim, "rb") as f:
            data = f.read()
        rng = random.Random(0)
        with open(victim, "wb") as f:
            f.write(data[:64] + bytes(rng.randrange(256) for _ in range(len(data) - 64)))
    elif problem == "knowledge_missing":
        extra = ["--knowledge", str(tmp_path / "none.txt")]
    elif problem == "knowledge_malformed":
        (tmp_path / "k.jsonl").write_text('{"knowledge_id": "a", "knowledge": "x"}\nnot json\n')
        extra = ["--knowledge", str(tmp_path / "k.jsonl")]
    elif problem == "knowledge_is_trajectories":  # collect's own output records knowledge: null
        common.write_jsonl(
            str(tmp_path / "deployment_trajectories.jsonl"),
            [{"game": "g", "turns": [], "knowledge_id": None, "knowledge": None}],
        )
        extra = ["--knowledge", str(tmp_path / "deployment_trajectories.jsonl")]
    elif problem == "knowledge_empty":
        (tmp_path / "k.txt").write_text(" \n")
        extra = ["--knowledge", str(tmp_path / "k.txt")]
    args = collect.parse_args(
        ["--model", tiny_model, "--games", games_dir, "--out", str(out), "--max-turns", "2", "--quiet", *extra]
    )
    expected = {
        "missing_folder": "no such game folder",
        "empty_folder": "no finished games",
        "corrupt_game": "not a playable TextWorld game",
        "truncated_game": "not a complete z-machine story",
        "knowledge_missing": "cannot read knowledge file",
        "knowledge_malformed": r"k.jsonl:2: not valid JSON",
        "scrambled_body": r"scrambled/coin-l2-s1\.z8: the z-machine interpreter failed",
        "knowledge_is_trajectories": r"deployment_trajectories.jsonl: record 1 is not a knowledge record",
        "knowledge_empty": r"k.txt: the knowledge text is empty",
    }[problem]
    with pytest.raises(common.InputError, match=expected):
        collect.main(args)
    assert out.read_text() == '{"earlier": "output"}\n'


def test_malformed_arguments_exit_with_usage(capsys):
    bad = [["--max-turns", "0"], ["--episodes", "two"], ["--list-commands", "2"], ["--preset", "nope"]]
    bad += [["--history", "-1"], ["--round", "-1"], ["--n", "0"], ["--batch-size", "0"], ["--max-new-tokens", "0"]]
    for argv in bad:
        with pytest.raises(SystemExit) as e:
            collect.parse_args(argv)
        assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_game_cache_reuses_finished_games_and_ignores_half_written_ones(tiny_games, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    for f in os.listdir(tiny_games):
        if f.startswith("treasure-l1-s0"):
            shutil.copy(os.path.join(tiny_games, f), folder / f)
    (folder / "coin-l2-s1.z8").write_bytes(b"half written")  # no .json beside it: not a finished game
    assert [os.path.basename(p) for p in games.list_games(str(folder))] == ["treasure-l1-s0.z8"]
    stamp = os.path.getmtime(folder / "treasure-l1-s0.z8")
    paths = games.make_games(str(folder), [("treasure-l1-s0", "treasure", 1, 0), ("coin-l2-s1", "coin", 2, 1)])
    assert os.path.getmtime(folder / "treasure-l1-s0.z8") == stamp  # reused, not remade
    assert games.Episode(paths[1]).walkthrough  # the half-written game was made again, playable
    assert not [f for f in os.listdir(folder) if f.startswith(".make-")]
