"""collect.py and the shared helpers: records round-trip, the stage writes what it played, bad input
fails clearly without touching earlier outputs. (The play loop itself is tested in test_play.py.)"""

import json
import os
import random
import shutil

import pytest

import collect
from oel import cli, jsonl, lm, textworld_games


def args_for(tiny_model, tiny_games, out, *extra):
    return collect.parse_args(
        ["--model", tiny_model, "--games", tiny_games, "--out", str(out), "--max-turns", "3", "--quiet", *extra]
    )


# ----------------------------------------------------------------------------- shared helpers


def test_jsonl_round_trip_and_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    records = [{"a": 1, "text": "ünïcode\nnewline"}, {"a": 2, "nested": {"b": [1, 2]}}]
    jsonl.write_jsonl(str(path), records)
    assert jsonl.read_jsonl(str(path), required=("a",)) == records
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    path.write_text('{"a": 1}\n{"a": 2\n')
    with pytest.raises(cli.InputError, match=r"x.jsonl:2: not valid JSON"):
        jsonl.read_jsonl(str(path))
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(cli.InputError, match=r"x.jsonl:2: expected a JSON object"):
        jsonl.read_jsonl(str(path))
    path.write_text('{"a": 1}\n{"b": 2}\n')
    with pytest.raises(cli.InputError, match=r"x.jsonl:2: record lacks key\(s\) \['a'\]"):
        jsonl.read_jsonl(str(path), required=("a",))


def test_model_argument_errors(tmp_path):
    with pytest.raises(cli.InputError, match="no such model folder"):
        lm.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(cli.InputError, match="no config.json"):
        lm.resolve_model(str(tmp_path))
    with pytest.raises(cli.InputError, match="HF_HUB_OFFLINE"):  # fails at once, no minute of retries
        lm.resolve_model("nobody-here/no-such-model-xyz")


# ----------------------------------------------------------------------------- the stage


def test_collect_end_to_end(tiny_model, tiny_games, tmp_path):
    out = tmp_path / "round_1" / "extraction_trajectories.jsonl"
    know = tmp_path / "k.jsonl"
    jsonl.write_jsonl(
        str(know),
        [
            {"knowledge_id": "r1-c0-s1", "knowledge": "- old", "in_pool": False},
            {"knowledge_id": "r1-c0-s2", "knowledge": "- take the coin first", "in_pool": True},
        ],
    )
    records, summary = collect.main(
        args_for(tiny_model, tiny_games, out, "--episodes", "2", "--round", "1", "--knowledge", str(know))
    )
    again = jsonl.read_jsonl(str(out))
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
    turns = [t for r in again for t in r["turns"]]
    assert summary["games"] == 6 and summary["won"] == sum(r["won"] for r in again) / 6
    assert summary["valid"] == sum(t["valid"] for t in turns) / len(turns)
    assert summary["turns"] == sum(len(r["turns"]) for r in again) / 6


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
        "knowledge_binary",
        "knowledge_id_with_text",
        "out_under_a_file",
        "out_is_a_folder",
        "out_unwritable",
    ],
)
def test_bad_input_is_a_clear_error_and_keeps_earlier_output(problem, tiny_model, tiny_games, tmp_path, monkeypatch):
    out = tmp_path / "trajectories.jsonl"
    out.write_text('{"earlier": "output"}\n')
    games_dir, extra, target = tiny_games, [], out
    if problem == "missing_folder":
        games_dir = str(tmp_path / "nowhere")
    elif problem == "empty_folder":
        games_dir = str(tmp_path / "empty")
        os.makedirs(games_dir)
    elif problem == "corrupt_game":
        games_dir = str(tmp_path / "corrupt")
        shutil.copytree(tiny_games, games_dir)
        victim = textworld_games.list_games(games_dir)[0]
        with open(victim, "wb") as f:
            f.write(b"not a z-machine file")
    elif problem == "truncated_game":
        games_dir = str(tmp_path / "truncated")
        shutil.copytree(tiny_games, games_dir)
        victim = textworld_games.list_games(games_dir)[-1]
        with open(victim, "r+b") as f:
            f.truncate(4000)
    elif problem == "scrambled_body":  # a valid header, noise after it: the interpreter halts on every command
        games_dir = str(tmp_path / "scrambled")
        shutil.copytree(tiny_games, games_dir)
        victim = textworld_games.list_games(games_dir)[0]
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
        jsonl.write_jsonl(
            str(tmp_path / "deployment_trajectories.jsonl"),
            [{"game": "g", "turns": [], "knowledge_id": None, "knowledge": None}],
        )
        extra = ["--knowledge", str(tmp_path / "deployment_trajectories.jsonl")]
    elif problem == "knowledge_empty":
        (tmp_path / "k.txt").write_text(" \n")
        extra = ["--knowledge", str(tmp_path / "k.txt")]
    elif problem == "knowledge_binary":  # a model's weights given as knowledge
        (tmp_path / "k.jsonl").write_bytes(bytes(range(256)) * 64)
        extra = ["--knowledge", str(tmp_path / "k.jsonl")]
    elif problem == "knowledge_id_with_text":  # used to be ignored without a word
        (tmp_path / "k.txt").write_text("- open the chest first\n")
        extra = ["--knowledge", str(tmp_path / "k.txt"), "--knowledge-id", "r1-c0-s2"]
    elif problem == "out_under_a_file":  # FileExistsError from makedirs, once
        target = out / "t.jsonl"
    elif problem == "out_is_a_folder":
        target = tmp_path
    elif problem == "out_unwritable":  # /sys refuses new files even to root (permission bits do not stop root)
        target = "/sys/oel-run/round_1/t.jsonl"
    monkeypatch.setattr(lm, "load_model", lambda *a, **k: pytest.fail("the model loaded before the check"))
    args = collect.parse_args(
        ["--model", tiny_model, "--games", games_dir, "--out", str(target), "--max-turns", "2", "--quiet", "--force"]
        + extra
    )  # --force: the output exists, and would be kept without it
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
        "knowledge_binary": r"k.jsonl: a binary file, not text; expected JSON Lines",
        "knowledge_id_with_text": r"k.txt: --knowledge-id 'r1-c0-s2' picks a record of a knowledge JSONL",
        "out_under_a_file": r"trajectories.jsonl/t.jsonl: .*trajectories.jsonl is a file, not a folder",
        "out_is_a_folder": r"exists and is a folder; expected a file to write",
        "out_unwritable": r"/sys/oel-run/round_1/t.jsonl: cannot write in /sys",
    }[problem]
    with pytest.raises(cli.InputError, match=expected):
        collect.main(args)
    assert out.read_text() == '{"earlier": "output"}\n'


def test_malformed_arguments_exit_with_usage(capsys):
    bad = [["--max-turns", "0"], ["--episodes", "two"], ["--list-commands", "2"], ["--set", "nope"]]
    bad += [["--history", "-1"], ["--round", "-1"], ["--n", "0"], ["--batch-size", "0"], ["--max-new-tokens", "0"]]
    for argv in bad:
        with pytest.raises(SystemExit) as e:
            collect.parse_args(argv)
        assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_a_stage_run_by_hand_plays_its_familys_defaults():
    """Run by hand, collect and evaluate play the paper's games as the paper does (5 turns, the whole log) and
    TextWorld as the default run does (12 turns, the last 4); a value given always wins."""
    import evaluate

    for parse in (collect.parse_args, evaluate.parse_args):
        for family, turns, history in (("frozenlake", 5, 0), ("sokoban-7x7", 5, 0), ("textworld", 12, 4)):
            args = parse(["--family", family])
            assert (args.max_turns, args.history) == (turns, history), (parse.__module__, family)
        args = parse(["--family", "frozenlake", "--max-turns", "3", "--history", "2"])
        assert (args.max_turns, args.history) == (3, 2)


def test_a_refused_start_makes_no_games_and_leaves_nothing_behind(tiny_model, tmp_path):
    """A model that cannot load is refused before the game set is made (TextWorld: seconds of tw-make) and
    before the run folder and its lock exist."""
    run, cache = tmp_path / "run", tmp_path / "games"
    out = run / "round_1" / "extraction_trajectories.jsonl"
    argv = ["--model", str(tmp_path / "no-such-model"), "--set", "id", "--n", "2", "--games-dir", str(cache)]
    with pytest.raises(cli.InputError, match="no-such-model: no such model folder"):
        collect.main(collect.parse_args([*argv, "--out", str(out)]))
    assert not cache.exists() and not run.exists()
    bad_knowledge = ["--model", tiny_model, "--knowledge", str(tmp_path / "none.txt"), "--out", str(out)]
    with pytest.raises(cli.InputError, match="cannot read knowledge file"):
        collect.main(collect.parse_args(bad_knowledge))
    assert sorted(os.listdir(tmp_path)) == []
