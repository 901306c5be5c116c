"""oel/games.py: seed ranges never collide, held-out sets never repeat a game, training sets never hold a game
whose walkthrough wins a held-out one, the cache reuses finished games only, every game is won by its own
walkthrough, game text is cleaned, damaged games are refused."""

import os
import random
import shutil
import sys

import pytest

from oel import cli, play, textworld_games


def copy_game(src, folder, name=None):
    """Copy a finished game (.z8 + .json) into folder, optionally renamed (so no tw-make is needed)."""
    os.makedirs(folder, exist_ok=True)
    name = name or os.path.basename(src)[:-3]
    for ext in (".z8", ".json"):
        shutil.copy(src[:-3] + ext, os.path.join(folder, name + ext))
    return os.path.join(folder, name + ".z8")


def scramble_body(path, seed=0):
    """Keep the 64-byte z-machine header (so the file still looks like a story), replace the rest with noise."""
    with open(path, "rb") as f:
        data = f.read()
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(data[:64] + bytes(rng.randrange(256) for _ in range(len(data) - 64)))


def test_seed_ranges_never_collide():
    ranges = [textworld_games.seed_range("eval"), textworld_games.seed_range("ood")]
    ranges += [textworld_games.seed_range("train", r, s) for r in range(20) for s in ("extract", "deploy")]
    seeds = [set(range(low, high)) for low, high in ranges]
    for i, s in enumerate(seeds):
        assert all(not s & t for t in seeds[i + 1 :])  # held-out apart, fresh games every round and split
    with pytest.raises(ValueError, match="at most 5000 training games"):
        textworld_games.make_set("unused", "train", 5001)


def test_every_game_is_won_by_its_own_walkthrough(tiny_games):
    """TextWorld's walkthrough, typed through Episode, wins each game: a free check of the harness."""
    for path in textworld_games.list_games(tiny_games):
        textworld_games.check_game(path)  # the game's own policy_commands win it through Episode.step
        # the .json's walkthrough (cooking's adds `inventory`, `examine cookbook`...) wins it as well
        assert textworld_games.solved_by([textworld_games.walkthrough(path)], [path]) == [
            (textworld_games.walkthrough(path), path)
        ]


def test_solved_by_replays_rather_than_compares(tiny_games):
    """A different command list can win a game too: the check replays, it does not compare lists."""
    path = [p for p in textworld_games.list_games(tiny_games) if "treasure" in p][0]
    solution = textworld_games.walkthrough(path)
    longer = ("look", "inventory") + solution
    assert textworld_games.solved_by([longer], [path]) == [(longer, path)]
    assert textworld_games.solved_by([("look",), solution[:-1] + ("take nothing-here",)], [path]) == []


def test_held_out_and_training_sets_are_disjoint_by_content(tiny_games, tmp_path, monkeypatch):
    """Treasure hunter level 1, seeds from 0: seeds 0 and 1 make the same game. Training seeds are made to
    start at 0 as well, so every held-out game is offered to the training set and must be refused."""
    monkeypatch.setitem(textworld_games.PRESETS, "eval", [("treasure", 1)])
    monkeypatch.setitem(textworld_games.PRESETS, "train", [("treasure", 1)])
    monkeypatch.setitem(textworld_games.SEED_RANGES, "train", (0, 10**9))
    root = str(tmp_path / "games")
    copy_game(os.path.join(tiny_games, "treasure-l1-s0.z8"), f"{root}/eval")  # seed 0, already made

    held_out = textworld_games.make_set(root, "eval", 2)
    walkthroughs = [textworld_games.walkthrough(p) for p in held_out]
    assert len(set(walkthroughs)) == 2  # never repeats a game
    made = sorted(textworld_games.list_games(f"{root}/eval"), key=lambda p: int(p.split("-s")[-1][:-3]))
    first_distinct = []  # brute force: the first distinct games of the seed range, in seed order
    for p in made:
        if textworld_games.walkthrough(p) not in [textworld_games.walkthrough(q) for q in first_distinct]:
            first_distinct.append(p)
    assert held_out == first_distinct[:2]
    assert textworld_games.make_set(root, "eval", 1) == held_out[:1]  # a smaller set is a prefix of a bigger one
    assert open(f"{root}/eval/.checked").read().split() == [os.path.basename(p) for p in held_out]

    for p in made:  # the training range starts with the same seeds: reuse the files instead of remaking
        copy_game(p, f"{root}/train")
    train = textworld_games.make_set(root, "train", 2)
    assert not {textworld_games.walkthrough(p) for p in train} & set(walkthroughs)
    assert (
        textworld_games.solved_by([textworld_games.walkthrough(p) for p in train], held_out) == []
    )  # the exact property
    skipped = [p for p in textworld_games.list_games(f"{root}/train") if p not in train]
    assert skipped and all(textworld_games.solved_by([textworld_games.walkthrough(p)], held_out) for p in skipped)
    assert all(os.path.exists(p[:-3] + textworld_games.SOLVES_HELD_OUT) for p in skipped)  # marked: never trained on
    assert not any(os.path.exists(p[:-3] + textworld_games.SOLVES_HELD_OUT) for p in train)
    os.remove(f"{root}/eval/.checked")  # a full check of the held-out set: the marked games are not training games
    assert textworld_games.make_set(root, "eval", 2) == held_out

    replayed = []  # a held-out set already checked is not replayed again
    real = textworld_games.solved_by
    monkeypatch.setattr(textworld_games, "solved_by", lambda ws, paths: replayed.extend(paths) or real(ws, paths))
    assert textworld_games.make_set(root, "eval", 2) == held_out and replayed == []
    # the held-out set grows onto a game the training set already holds: refused, naming both files
    for p in train:
        copy_game(p, f"{root}/eval")
    with pytest.raises(ValueError, match=r"won by a training game's walkthrough .*train/treasure-l1-s\d+\.z8"):
        textworld_games.make_set(root, "eval", 2 + len(train))


def test_a_level_with_too_few_distinct_games_is_an_error(tiny_games, tmp_path, monkeypatch):
    monkeypatch.setitem(textworld_games.PRESETS, "eval", [("treasure", 1)])
    monkeypatch.setitem(textworld_games.SEED_RANGES, "eval", (0, 2))  # seeds 0 and 1: one distinct game
    root = str(tmp_path / "games")
    copy_game(os.path.join(tiny_games, "treasure-l1-s0.z8"), f"{root}/eval")
    copy_game(os.path.join(tiny_games, "treasure-l1-s0.z8"), f"{root}/eval", "treasure-l1-s1")  # a repeat
    assert len(textworld_games.make_set(root, "eval", 1)) == 1
    with pytest.raises(ValueError, match=r"treasure-l1: only 1 of 2 games .*too few distinct games"):
        textworld_games.make_set(root, "eval", 2)


def test_game_cache_reuses_finished_games_and_ignores_half_written_ones(tiny_games, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    for f in os.listdir(tiny_games):
        if f.startswith("treasure-l1-s0"):
            shutil.copy(os.path.join(tiny_games, f), folder / f)
    (folder / "coin-l2-s1.z8").write_bytes(b"half written")  # no .json beside it: not a finished game
    assert [os.path.basename(p) for p in textworld_games.list_games(str(folder))] == ["treasure-l1-s0.z8"]
    stamp = os.path.getmtime(folder / "treasure-l1-s0.z8")
    paths = textworld_games.make_games(
        str(folder), [("treasure-l1-s0", "treasure", 1, 0), ("coin-l2-s1", "coin", 2, 1)]
    )
    assert os.path.getmtime(folder / "treasure-l1-s0.z8") == stamp  # reused, not remade
    assert textworld_games.Episode(paths[1]).walkthrough  # the half-written game was made again, playable
    assert not [f for f in os.listdir(folder) if f.startswith(".make-")]


def test_tw_make_is_found_beside_the_interpreter_without_path(tmp_path, monkeypatch):
    """A virtual environment's python called directly (not activated) has tw-make beside it, not on PATH: games
    are still made, with that tw-make; with none beside it and none on PATH, a clear error."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    real = textworld_games.tw_make()
    assert os.path.dirname(real) == os.path.dirname(sys.executable) and os.access(real, os.X_OK)
    bin_dir = tmp_path / "env" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "tw-make"  # writes the two files a game is, and what it was asked
    fake.write_text(
        '#!/bin/sh\nout=""\nwhile [ $# -gt 0 ]; do [ "$1" = --output ] && out="$2"; shift; done\n'
        'echo z8 > "$out"; echo "{}" > "${out%.z8}.json"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    (tmp_path / "games").mkdir()
    path = textworld_games.make_game(str(tmp_path / "games"), "g0", "simple", 1, 7)
    assert open(path).read() == "z8\n" and os.path.isfile(path[:-3] + ".json")
    fake.unlink()
    with pytest.raises(cli.InputError, match=r"tw-make is neither beside .*env/bin/python nor on PATH"):
        textworld_games.make_game(str(tmp_path / "games"), "g1", "simple", 1, 8)


def test_clean_removes_banner_prompt_and_status_bar():
    raw = (
        "\n   ________  __\n  |  \\  |  \\\n \\$$$$$$$$| $$\n"
        "Welcome!\n\n-= Kitchen =-\nA kitchen.\n\n\n\n>    -= Kitchen =-0/1"
    )
    assert textworld_games.clean(raw) == "Welcome!\n\n-= Kitchen =-\nA kitchen."


def test_a_damaged_game_is_an_error_naming_it(tiny_games, tmp_path):
    """Header intact, body scrambled: the interpreter halts; that is an error naming the file, never a reply."""
    victim = copy_game(textworld_games.list_games(tiny_games)[-1], str(tmp_path / "bad"))
    scramble_body(victim)
    textworld_games.check_story_file(victim)  # the header still passes
    with pytest.raises(cli.InputError, match=r"bad/treasure-l1-s0\.z8: the z-machine interpreter failed"):
        textworld_games.game_paths(str(tmp_path / "bad"), None, None, None)
    with pytest.raises(cli.InputError, match="interpreter failed"):  # the seam names it as the user's input
        play.play(lambda eps, msgs: [("look", 1)] * len(eps), [victim], max_turns=2, history=4, batch_size=4)
