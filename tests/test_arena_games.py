"""The paper's games (oel/arena_games.py) behind the seam (oel/games.py): each family's episode with scripted
moves (a win, a hole or a wall, two invalid moves, the 5-turn cap), the rules never in a prompt, a seed's board
the same in another process, the solver winning every game it says it can, the splits, bad input."""

import json
import random
import subprocess
import sys

import pytest

from oel import arena_games, cli, games, play

FL, SOKOBAN = "frozenlake/468460046", "sokoban/468460046"  # the authors' first held-out games (boards below)
LEGEND_WORDS = ["Grid symbols", "= Hole", "Frozen surface", "Walls are represented", "Boxes are marked", "Sokoban"]


def scripted(moves):
    """An agent that answers each game's turn t with moves[t] (a reply of text, as a model would give)."""

    def act(episodes, messages):
        return [(f"I think so.\n{moves[len(ep.history) - 1]}", 3) for ep in episodes]

    return act


def run(game, moves, max_turns=arena_games.TURN_CAP):
    records, _ = play.play(scripted(moves), [game], max_turns=max_turns, history=0, batch_size=8, quiet=True)
    return records[0]


def test_frozenlake_win_hole_and_walls():
    win = run(FL, ["[right]", "[down]", "[down]", "[right]"])  # P . H / H . . / . . G
    assert win["won"] and win["turns_used"] == 4 and win["score"] == 1 and "reached the goal" in win["feedback"]
    hole = run(FL, ["[down]"])
    assert not hole["won"] and hole["lost"] and hole["turns_used"] == 1 and "fell into a hole" in hole["feedback"]
    walls = run(FL, ["[up]", "[left]", "[down]"])  # two wall bumps in a row end the game at the second
    assert walls["turns_used"] == 2 and walls["lost"] and "Invalid Move" in walls["feedback"]
    spaced = run(FL, ["[up]", "[right]", "[up]", "[left]", "[right]", "[left]", "[right]"])  # never twice in a row
    assert spaced["turns_used"] == 5 and not spaced["won"] and not spaced["lost"]  # the authors' cap: 5 turns
    assert "NOT FINISHED" in spaced["feedback"]
    # every record says what happened, in the words every family uses
    assert [r["ended"] for r in (win, hole, walls, spaced)] == ["won", "hole", "invalid moves", "turn limit"]
    bump, last = walls["turns"]
    assert (bump["valid"], bump["refusal"]) == (False, "You tried to move up but hit a wall!")
    assert (last["valid"], last["refusal"]) == (False, "You tried to move left but hit a wall!")
    assert [t["valid"] for t in win["turns"]] == [True] * 4 and {t["refusal"] for t in win["turns"]} == {None}
    assert "+-----+-----+-----+\n|  P  |" in walls["feedback"]  # the last board, still a board


def test_a_reply_without_a_move_is_an_invalid_move_and_the_last_move_counts():
    ep = games.open_episode(FL)
    assert ep.choose("<think>maybe [down], no: [right]</think> so [d] then", None) == ("so [d] then", "[d]", "ok", True)
    assert ep.choose("go right", None) == ("go right", "[no valid action]", "no move", False)  # words, no move
    assert ep.choose(" \n", None) == ("", "[no valid action]", "empty", False)
    assert ep.choose("[UP] [Right]", None)[1] == "[no valid action]"  # the authors match exactly
    two = run(FL, ["right", "[d]"], max_turns=2)  # an invalid move, then a valid one: the game goes on
    assert [t["command"] for t in two["turns"]] == ["[no valid action]", "[d]"] and not two["lost"]
    assert "Invalid action format" in two["turns"][0]["reply"] and "You moved right" in two["turns"][1]["reply"]


def test_sokoban_win_and_walls():
    assert run(SOKOBAN, ["[right]", "[right]"])["won"]  # the box one step from its target, twice pushed
    walls = run(SOKOBAN, ["[down]", "[down]"])
    assert walls["lost"] and walls["turns_used"] == 2 and "cannot move into a wall" in walls["feedback"]


def test_the_rules_are_never_in_a_prompt():
    for game in (FL, SOKOBAN, "frozenlake-random-3x3-h2/900001000", "sokoban-7x7/900002000"):
        record = run(game, ["[up]", "[right]", "[down]", "[left]", "[right]"])
        for turn in record["turns"]:
            text = json.dumps(turn["messages"])
            assert not [w for w in LEGEND_WORDS if w in text] and "You are the player, shown as 'P'" in text
            assert turn["messages"][0]["role"] == "user" and len(turn["messages"]) == 1  # one message, no past turns


def test_a_textarena_whose_legend_changed_is_refused(monkeypatch):
    monkeypatch.setitem(arena_games.LEGENDS, "FrozenLake-v0-raw", "Welcome to Frozen Lake! (another version)")
    with pytest.raises(cli.InputError, match="not the legend this project removes"):
        games.game_set("frozenlake", "id", 2, game_split="paper")


def test_a_seed_gives_the_same_board_in_another_process_and_leaves_random_alone():
    seeds = [468460046, 468461046, 468462046]
    here = [arena_games.Episode(f"{f}/{s}").board for f in ("frozenlake", "sokoban") for s in seeds]
    code = "from oel import arena_games; import json; print(json.dumps([arena_games.Episode(f'{f}/{s}').board "
    code += f"for f in ('frozenlake', 'sokoban') for s in {seeds}]))"
    there = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    assert here == there and len(set(here[:3])) == 3
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    arena_games.Episode(FL), arena_games.Episode(SOKOBAN)  # each reset reseeds the global random: restored
    assert [random.random() for _ in range(3)] == expected


def test_the_solver_wins_every_game_it_solves_through_the_harness():
    for family in ("frozenlake", "sokoban"):
        games_ = arena_games.make_set(family, "eval", 12, game_split="paper")
        plans = {g: arena_games.solve(g) for g in games_}
        solvable = [g for g, moves in plans.items() if moves]
        if family == "frozenlake":
            assert len(solvable) == 12 and all(len(m) == 4 for m in plans.values())  # every shortest path: 4
        for game in solvable:
            assert run(game, plans[game])["won"]
        assert all(plans[g] is None or len(plans[g]) <= arena_games.TURN_CAP for g in games_)


def test_the_disjoint_split_holds_out_boards_and_the_paper_split_does_not():
    held = arena_games.make_set("frozenlake", "eval", 7)
    boards = {arena_games.Episode(g).board for g in held}
    assert len(boards) == 7  # 3x3 FrozenLake with 2 holes has 19 boards; 7 fall in the held-out share
    for split in ("extract", "deploy"):
        train = arena_games.make_set("frozenlake", "train", 30, round_=1, split=split)
        assert not boards & {arena_games.Episode(g).board for g in train}
    with pytest.raises(ValueError, match="too few distinct boards"):
        arena_games.make_set("frozenlake", "eval", 8)
    paper_held = arena_games.make_set("frozenlake", "eval", 128, game_split="paper")
    paper_train = arena_games.make_set("frozenlake", "train", 30, round_=1, game_split="paper")
    assert paper_held[0] == "frozenlake/468460046" and paper_held[1] == "frozenlake/468461046"
    assert paper_train[0] == f"frozenlake/{468460046 + 500_000 + 1000 * 128}"  # the authors' formulas
    deploy = arena_games.make_set("sokoban", "train", 2, round_=2, split="deploy", game_split="paper")
    assert deploy == [f"sokoban/{505209463 + 10**7 + 1000 * 128}", f"sokoban/{505209463 + 10**7 + 1000 * 129}"]


@pytest.mark.parametrize(
    "family, max_turns, expected",
    [
        ("chess", 5, "not a game family"),
        ("frozenlake-2x2-h3", 5, "leave no path to the goal"),
        ("frozenlake-4x4-h3", 5, "shortest path takes 6 moves, more than the turn cap 5"),
        ("sokoban-3x3", 5, "no floor"),
    ],
)
def test_a_family_no_game_of_which_can_be_won_is_refused(family, max_turns, expected):
    with pytest.raises(cli.InputError, match=expected):
        games.check_family(family, max_turns)


def no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the input was checked")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--family", "frozenlake-2x2-h3"], "leave no path to the goal"),
        (["--family", "frozenlake-4x4-h3", "--max-turns", "5"], "takes 6 moves, more than the turn cap 5"),
        (["--family", "textworld", "--game-split", "paper"], "--game-split paper is the paper's seeds"),
        (["--family", "frozenlake", "--games", "somewhere"], "--games FOLDER is for TextWorld"),
    ],
)
def test_collect_refuses_a_family_it_cannot_play(argv, expected, tmp_path, monkeypatch, capsys):
    import collect
    from oel import lm

    out = tmp_path / "t.jsonl"
    out.write_text("earlier\n")
    monkeypatch.setattr(lm, "load_model", no_model)
    with pytest.raises(cli.InputError, match=expected):
        collect.main(collect.parse_args(["--out", str(out), "--set", "id", "--n", "2", "--force", *argv]))
    assert out.read_text() == "earlier\n"
    with pytest.raises(SystemExit) as e:
        collect.parse_args(["--family", "chess"])
    assert e.value.code == 2 and "argument --family: unknown game family 'chess'" in capsys.readouterr().err


def test_knowledge_of_another_family_is_refused(tiny_model, tmp_path, monkeypatch):
    """A FrozenLake pool given to a TextWorld run (or the reverse) would put rules of one game in the prompts
    of another: distill, collect and evaluate refuse it before a model loads."""
    import distill
    import evaluate
    from oel import jsonl, lm

    monkeypatch.setattr(lm, "load_model", no_model)
    records, _ = play.play(scripted(["[right]"] * 5), [FL], max_turns=1, history=0, batch_size=8, quiet=True)
    traj, know = str(tmp_path / "deploy.jsonl"), str(tmp_path / "knowledge.jsonl")
    jsonl.write_jsonl(traj, records)
    jsonl.write_jsonl(know, [dict(knowledge_id="k", knowledge="- open doors", in_pool=True, family="textworld")])
    with pytest.raises(
        cli.InputError, match=r"knowledge.jsonl: knowledge of textworld games; .*deploy.jsonl is of frozenlake"
    ):
        distill.main(
            distill.parse_args(
                ["--model", tiny_model, "--trajectories", traj, "--knowledge", know, "--out", str(tmp_path / "m")]
            )
        )
    with pytest.raises(cli.InputError, match="knowledge of textworld games; --family frozenlake is of frozenlake"):
        evaluate.main(
            evaluate.parse_args(["--family", "frozenlake", "--knowledge", know, "--n", "2", "--out-dir", str(tmp_path)])
        )
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob("eval_*"))


def test_describe_games_by_hand_works_for_every_family_with_its_defaults(capsys):
    """`python -m oel.describe_games --family F`, as docs/games.md writes it: FrozenLake's disjoint split holds 7
    held-out boards, fewer than the default 20, so the default is every board it has (an explicit --n still
    asks for exactly that many)."""
    from oel import describe_games

    describe_games.main(describe_games.parse_args(["--family", "frozenlake", "--episodes", "1"]))
    out = capsys.readouterr().out
    assert "7 games, 7 distinct boards" in out and "solver through the harness: won" in out
    with pytest.raises(cli.InputError, match="only 7 of 20 eval games found"):
        describe_games.main(describe_games.parse_args(["--family", "frozenlake", "--n", "20"]))
