"""The statistics behind every interval and paired test. A game is the unit everywhere: its turns and its episodes
are not independent, so intervals resample whole games and paired tests flip whole games' differences.
"""

import collections
import math
import random


def wilson(successes, n, z=1.96):
    """95% Wilson interval of a proportion: sound for small n and for rates near 0 or 1."""
    if n == 0:
        return (0.0, 0.0)
    p, d = successes / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def ratio_ci(numerators, denominators, resamples=2000, seed=0):
    """(sum(num) / sum(den), 95% percentile bootstrap over units). A unit is a game: its turns and its
    episodes are not independent, so whole games are resampled (a cluster bootstrap)."""
    n, rng = len(numerators), random.Random(seed)
    ratio = lambda idx: sum(numerators[i] for i in idx) / max(sum(denominators[i] for i in idx), 1)
    stats = sorted(ratio([rng.randrange(n) for _ in range(n)]) for _ in range(resamples)) if n else [0.0]
    return ratio(range(n)), (stats[int(0.025 * (len(stats) - 1))], stats[int(0.975 * (len(stats) - 1))])


def mcnemar_exact(b, c):
    """Two-sided exact McNemar p-value from the discordant pairs (b one way, c the other): with no
    difference, each discordant pair goes either way with probability 1/2 (a binomial)."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


def sign_flip_p(diffs):
    """Two-sided exact p-value of the paired randomisation test on per-game integer differences: with no
    difference each game's difference is as likely negative as positive, so all 2^G sign flips are
    equally likely; their sums are counted exactly. With one episode a game it is McNemar's exact test."""
    counts = {0: 1}  # sum of flipped differences -> number of flip patterns giving it
    for d in diffs:
        flipped = collections.Counter()
        for total, k in counts.items():
            flipped[total + d] += k
            flipped[total - d] += k
        counts = flipped
    observed = abs(sum(diffs))
    return sum(k for total, k in counts.items() if abs(total) >= observed) / 2 ** len(diffs)


def paired_difference(before, after):
    """Change in pass rate between two evaluations of the same games, paired by (game, episode):
    the difference, its 95% bootstrap interval over games, and the exact sign-flip p-value over games."""
    won = {(r["game"], r["episode"]): bool(r["won"]) for r in before}
    pairs = [
        (r["game"], int(r["won"]) - won[(r["game"], r["episode"])]) for r in after if (r["game"], r["episode"]) in won
    ]
    diffs, counts = collections.Counter(), collections.Counter()
    for game, d in pairs:
        diffs[game] += d
        counts[game] += 1
    per_game = [diffs[g] for g in counts]
    diff, ci = ratio_ci(per_game, [counts[g] for g in counts])
    better, worse = sum(d > 0 for _, d in pairs), sum(d < 0 for _, d in pairs)
    return dict(
        diff=diff, diff_ci=ci, p=sign_flip_p(per_game), games=len(counts), pairs=len(pairs), better=better, worse=worse
    )
