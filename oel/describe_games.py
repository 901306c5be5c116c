"""A game set by hand: make (or reuse) it and describe it, before any model plays it.

    python -m oel.describe_games --set id --n 20                              # TextWorld: make it, count distinct games
    python -m oel.describe_games --family frozenlake --game-split paper --n 128  # boards, the solver, a random agent

For the paper's games it plays the solver and a random agent through the real harness (oel/play.py): the solver's
pass rate is the ceiling of any policy's, the random agent's its floor.
"""

import argparse
import random

from oel import arena_games, cli, games, play, textworld_games


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Make (or reuse) a game set and describe it.")
    p.add_argument("--family", default="textworld", type=games.family_arg, help=games.FAMILY_HELP)
    p.add_argument("--set", default="id", choices=games.SETS, help=games.SET_HELP)
    p.add_argument("--n", type=cli.positive_int, help="number of games (default: 20, or all a family's split holds)")
    p.add_argument("--round", type=cli.nonneg_int, default=1, help="training round (extract and deploy sets)")
    p.add_argument("--games-dir", default="games", help="TextWorld's game cache (GAMES_DIR/eval, ...)")
    p.add_argument("--game-split", default="disjoint", choices=games.SPLITS, help=games.SPLIT_HELP)
    p.add_argument("--max-turns", type=cli.positive_int, default=arena_games.TURN_CAP, help="turn cap (the paper's: 5)")
    p.add_argument(
        "--training", default=None, help="the paper's games: ROUNDS,N_EXTRACT,N_DEPLOY training sets to compare with"
    )
    p.add_argument("--episodes", type=cli.positive_int, default=10, help="the paper's games: random agent's episodes")
    cli.renamed(p, "--preset", "--set (--preset eval is --set id; --preset train --split deploy is --set deploy)")
    cli.renamed(p, "--split", "--set extract or --set deploy")
    return p.parse_args(argv)


def describe_arena(games_, max_turns, episodes, training):
    """Boards, the share the solver wins within the cap (the ceiling of a pass rate), the solver and a random
    agent played through the harness, and how many of these games share a board with a training set."""
    boards = {g: arena_games.Episode(g).board for g in games_}
    plans = {g: arena_games.solve(g, max_turns) for g in games_}
    solvable = [g for g in games_ if plans[g]]
    lines = [f"{len(games_)} games, {len(set(boards.values()))} distinct boards"]
    lines.append(
        f"solvable within {max_turns} moves: {len(solvable)}/{len(games_)} ({len(solvable) / len(games_):.1%})"
    )
    solver = lambda eps, _: [(plans[ep.game][len(ep.history) - 1], 0) for ep in eps]
    won, _ = play.play(solver, solvable, max_turns=max_turns, history=0, batch_size=64, quiet=True)
    lines.append(f"solver through the harness: won {sum(r['won'] for r in won)}/{len(solvable)} solvable")
    rng = random.Random(0)
    randomly = lambda eps, _: [(rng.choice(arena_games.MOVES[:4]), 0) for _ in eps]
    played, _ = play.play(
        randomly, games_, max_turns=max_turns, history=0, batch_size=64, episodes=episodes, quiet=True
    )
    lines.append(
        f"random agent ({episodes} episodes a game): pass rate {sum(r['won'] for r in played) / len(played):.3f}"
    )
    for family, rounds, n_extract, n_deploy, split in training:
        train = set()
        for r in range(1, rounds + 1):
            for part, n in (("extract", n_extract), ("deploy", n_deploy)):
                train |= {
                    arena_games.Episode(g).board for g in arena_games.make_set(family, "train", n, r, part, split)
                }
        shared = sum(boards[g] in train for g in games_)
        lines.append(
            f"training boards ({rounds} rounds): {len(train)}; held-out games sharing one: {shared}/{len(games_)}"
        )
    return "\n".join(lines)


def main(args):
    games.check_family(args.family, args.max_turns)
    games_ = games.game_set(
        args.family, args.set, args.n or 20, round_=args.round, games_dir=args.games_dir, game_split=args.game_split,
        fewer_ok=args.n is None,
    )  # fmt: skip
    if not games.is_arena(args.family):
        return print(f"games | {args.set} | {textworld_games.describe(games_)} | {args.games_dir}")
    training = []
    if args.training:
        rounds, n_extract, n_deploy = map(int, args.training.split(","))
        training = [(args.family, rounds, n_extract, n_deploy, args.game_split)]
    print(f"games | {args.family} {args.set} ({args.game_split}) |")
    print(describe_arena(games_, args.max_turns, args.episodes, training))


if __name__ == "__main__":
    cli.run_main(main, parse_args())
