"""Paired statistics: two models measured on the same prompts, compared prompt by prompt.

- `bootstrap_ci(values)`: a 95% percentile interval of one mean (resampling items).
- `paired_bootstrap(a, b)`: the difference of the means (b - a) with a 95% percentile
  interval from resampling prompts (both models' values of a prompt move together).
- `mcnemar(a, b)`: exact two-sided McNemar test on paired 0/1 values (only the prompts
  where the two disagree count).
- `sign_flip(a, b)`: two-sided sign-flip permutation test on paired scores (exact for up
  to 16 differing prompts, else `resamples` random flips).
- `compare(a, b)`: all of it, and `separated`: whether the interval excludes zero. A
  difference whose interval includes zero is "not separated", whatever its size.

Pure functions of number lists; fixed seeds, so a report is the same on every run. The
McNemar test is scipy's binomial test; the bootstrap and the sign-flip test stay written
here: scipy's `bootstrap` and `permutation_test` draw their resamples another way (and
`bootstrap` defaults to BCa), so every interval and p-value on record would move.

    compare([1, 0, 1, 0], [1, 1, 1, 1])   # {"difference": 0.5, "ci95": [...], "p": ...}
"""

from __future__ import annotations

import itertools
import random
from typing import Any

RESAMPLES = 2000


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def bootstrap_ci(values: list[float], resamples: int = RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:  # fmt: skip
    """Percentile bootstrap interval of the mean of `values` (None when empty)."""
    if not values:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return round(lo, 4), round(hi, 4)


def paired_bootstrap(a: list[float], b: list[float], resamples: int = RESAMPLES,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """Percentile interval of mean(b) - mean(a): the bootstrap over the pairs' differences."""
    if len(a) != len(b) or not a:
        raise ValueError("paired values need the same, non-zero length")
    interval = bootstrap_ci([y - x for x, y in zip(a, b, strict=True)], resamples, seed, level)
    assert interval is not None
    return interval


def mcnemar(a: list[float], b: list[float]) -> float:
    """Exact two-sided McNemar p-value for paired 0/1 values (1.0 when none disagree): a
    binomial test of the discordant pairs (scipy's `binomtest`)."""
    from scipy.stats import binomtest

    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    if only_a + only_b == 0:
        return 1.0
    return round(float(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue), 6)


def sign_flip(a: list[float], b: list[float], resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of mean(b - a) (1.0 when all equal)."""
    diff = [y - x for x, y in zip(a, b, strict=True) if y != x]
    if not diff:
        return 1.0
    observed = abs(sum(diff))
    if len(diff) <= 16:
        flips = itertools.product((1, -1), repeat=len(diff))
        hits = total = 0
        for signs in flips:
            total += 1
            hits += abs(sum(s * d for s, d in zip(signs, diff, strict=True))) >= observed - 1e-12
        return round(hits / total, 6)
    rng = random.Random(seed)
    hits = sum(abs(sum(d if rng.random() < 0.5 else -d for d in diff)) >= observed - 1e-12
               for _ in range(resamples))  # fmt: skip
    return round((hits + 1) / (resamples + 1), 6)


def binary(values: list[float]) -> bool:
    return all(v in (0, 1, 0.0, 1.0) for v in values)


def compare(a: list[float], b: list[float], resamples: int = RESAMPLES) -> dict[str, Any]:
    """b against a on the same items: difference of means, paired interval, paired test
    (McNemar for 0/1 values, sign-flip permutation otherwise), and whether the interval
    excludes zero."""
    lo, hi = paired_bootstrap(a, b, resamples)
    test = "mcnemar" if binary(a) and binary(b) else "sign_flip"
    p = mcnemar(a, b) if test == "mcnemar" else sign_flip(a, b)
    return {
        "difference": round(_mean(b) - _mean(a), 4),
        "ci95": [lo, hi],
        "p": p,
        "test": test,
        "n": len(a),
        "separated": lo > 0 or hi < 0,
    }


def direction(result: dict[str, Any], better: str = "higher") -> str:
    """How a report says it: 'lifts' / 'lowers' only where the interval excludes zero."""
    if not result["separated"]:
        return "not separated"
    up = result["difference"] > 0
    return "lifts" if up == (better == "higher") else "lowers"
