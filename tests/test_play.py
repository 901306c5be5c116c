"""oel/play.py: the turn prompt is rendered and the command read as documented, knowledge goes in one way
everywhere, and the play loop plays games correctly (a walkthrough wins, batched play equals one-at-a-time
play, strange answers never crash it)."""

import pytest
import torch

from oel import cli, experience, jsonl, lm, play, textworld_games

# ----------------------------------------------------------------------------- the turn prompt and the command


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
    assert textworld_games.parse_command(answer) == expected


def test_thinking_is_split_off_before_parsing():
    assert lm.split_thinking("<think>go north?</think>\ngo south") == ("<think>go north?</think>", "go south")
    assert lm.split_thinking("<think>still thinking, no answer") == ("<think>still thinking, no answer", "")
    answer, command, status, valid = textworld_games.choose_command(
        "<think>maybe west</think> go east", ["go east", "look"], "exact"
    )
    assert (answer, command, status, valid) == ("go east", "go east", "ok", True)


def test_closest_command():
    admissible = ["go east", "go west", "take red key from table", "take key", "look"]
    assert textworld_games.closest_command("take the key", admissible) == "take key"  # ties go to the shorter one
    assert textworld_games.closest_command("walk west", admissible) == "go west"
    assert textworld_games.closest_command("dance", admissible) is None
    _, command, status, valid = textworld_games.choose_command("walk west", admissible, "closest")
    assert (command, status, valid) == ("go west", "closest", False)
    _, command, status, valid = textworld_games.choose_command("walk west", admissible, "exact")
    assert (command, status, valid) == ("walk west", "ok", False)


def test_render_log_drops_oldest_turns():
    history = [(None, "intro")] + [(f"cmd{i}", f"reply{i}") for i in range(5)]
    log = textworld_games.render_log(history, max_turns=2)
    assert log == "(earlier turns not shown)\n\n> cmd3\nreply3\n\n> cmd4\nreply4"
    assert textworld_games.render_log(history, max_turns=0).startswith("intro\n\n> cmd0")


def test_knowledge_is_inserted_the_same_way_everywhere():
    history = [(None, "You are in a room."), ("go north", "You can't go that way.")]
    plain = textworld_games.render_turn("Take the coin.", history, ["go south", "look"])
    with_k = experience.insert_knowledge(plain, "- open doors first")  # what play.play and distill's teacher both do
    assert plain[:-1] == with_k[:-1] and with_k[-1]["content"].endswith(plain[-1]["content"])
    assert "- open doors first" in with_k[-1]["content"] and "- open doors first" not in plain[-1]["content"]
    assert experience.insert_knowledge(plain, None) == plain and experience.insert_knowledge(plain, "") == plain
    assert "Commands you can use: go south, look" in plain[-1]["content"]
    assert "Commands you can use" not in textworld_games.render_turn("x", history, None)[-1]["content"]


def test_knowledge_file_checks(tmp_path):
    traj = tmp_path / "deploy.jsonl"
    jsonl.write_jsonl(str(traj), [{"game": "g", "turns": [], "won": False, "knowledge_id": None, "knowledge": None}])
    with pytest.raises(cli.InputError, match=r"deploy.jsonl: record 1 is not a knowledge record"):
        experience.load_knowledge(str(traj))
    empty = tmp_path / "k.jsonl"
    jsonl.write_jsonl(str(empty), [{"knowledge_id": "a", "knowledge": "  \n"}])
    with pytest.raises(cli.InputError, match=r"k.jsonl: knowledge 'a' is empty"):
        experience.load_knowledge(str(empty))
    blank = tmp_path / "k.txt"
    blank.write_text("\n\n")
    with pytest.raises(cli.InputError, match=r"k.txt: the knowledge text is empty"):
        experience.load_knowledge(str(blank))
    good = tmp_path / "good.txt"
    good.write_text("- open the chest first\n")
    assert experience.load_knowledge(str(good)) == ("good.txt", "- open the chest first\n")


# ----------------------------------------------------------------------------- the play loop


def test_walkthrough_agent_wins_every_game(tiny_games, tmp_path):
    """An agent that types TextWorld's walkthrough through the same prompt/parse/step path must win."""

    def walkthrough(episodes, messages):
        return [(f"[{ep.walkthrough[len(ep.history) - 1]}]", 1) for ep in episodes]

    paths = textworld_games.list_games(tiny_games)
    records, stats = play.play(
        walkthrough, paths, max_turns=30, history=8, batch_size=64, list_commands=False, match="exact", quiet=True
    )
    assert len(records) == 3
    for r in records:
        assert r["won"] and not r["lost"], r["feedback"]
        assert r["score"] == r["max_score"] and r["turns_used"] == len(r["turns"]) >= 1
        assert r["feedback"].startswith("Result: WON") and r["ended"] == "won"
        assert all(t["command_status"] == "ok" and t["valid"] and t["refusal"] is None for t in r["turns"])
        assert "$$" not in r["intro"] and r["objective"]
    looking = lambda episodes, messages: [("[look]", 1) for _ in episodes]
    stuck, _ = play.play(looking, paths[:1], max_turns=2, history=8, batch_size=4, quiet=True)
    assert stuck[0]["ended"] == "turn limit" and "NOT FINISHED" in stuck[0]["feedback"]


def test_a_random_agent_does_not_win_everything(tiny_games):
    """The harness is not trivially winning: answering 'look' forever wins nothing."""
    paths = textworld_games.list_games(tiny_games)
    records, _ = play.play(
        lambda eps, msgs: [("look", 1)] * len(eps), paths, max_turns=4, history=8, batch_size=64, quiet=True
    )
    assert not any(r["won"] for r in records)
    assert all(r["feedback"].startswith("Result: NOT FINISHED") for r in records)


def test_strange_answers_never_crash(tiny_games):
    answers = ["", "go north then take coin", "xyzzy plugh", "<think>unfinished", "!!!", "take coin and key"]
    paths = textworld_games.list_games(tiny_games)

    def agent(episodes, messages):
        return [(answers[len(ep.history) - 1], 0) for ep in episodes]

    records, _ = play.play(agent, paths, max_turns=len(answers), history=8, batch_size=64, match="exact", quiet=True)
    statuses = [t["command_status"] for t in records[0]["turns"]]
    assert statuses == ["empty", "multi", "ok", "no move", "no move", "ok"]  # empty: nothing said; no move: words
    assert records[0]["turns"][1]["command"] == "go north"
    assert records[0]["turns"][0]["reply"] == "(no command was given)"


def test_lockstep_equals_one_game_at_a_time(tiny_model, tiny_games, tmp_path):
    """Greedy decoding: batched lock-step play (left padding) sends the same commands as solo play."""
    model, tokenizer = lm.load_model(tiny_model, "cpu", dtype=torch.float64, quiet=True)
    paths = textworld_games.list_games(tiny_games)
    runs = []
    agent = play.model_agent(model, tokenizer, thinking=False, max_new_tokens=8, temperature=0, top_p=1.0, top_k=0)
    for lockstep in (True, False):
        records, _ = play.play(agent, paths, max_turns=3, history=8, batch_size=64, lockstep=lockstep, quiet=True)
        runs.append([[(t["response"], t["command"]) for t in r["turns"]] for r in records])
    assert runs[0] == runs[1]
    assert any(resp for game in runs[0] for resp, _ in game)  # the model did say something
