"""Paired statistics on known answers."""

from __future__ import annotations

import pytest

from saferinstruct.measures.stats import compare, direction, mcnemar, paired_bootstrap, sign_flip


def test_identical_vectors_are_not_separated():
    a = [1, 0, 1, 1, 0, 0, 1, 0] * 25
    r = compare(a, list(a))
    assert r["difference"] == 0.0 and r["ci95"] == [0.0, 0.0] and r["p"] == 1.0
    assert not r["separated"] and direction(r) == "not separated"


def test_a_30_point_difference_on_200_prompts_is_found():
    a = [1] * 60 + [0] * 140        # base refuses 30%
    b = [1] * 120 + [0] * 80        # the other refuses the same 60 and 60 more: 60%
    r = compare(a, b)
    assert r["difference"] == pytest.approx(0.30)
    lo, hi = r["ci95"]
    assert 0.2 < lo < 0.3 < hi < 0.4
    assert r["separated"] and r["test"] == "mcnemar" and r["p"] < 1e-6
    assert direction(r) == "lifts" and direction(r, better="lower") == "lowers"


def test_mcnemar_counts_only_disagreements():
    assert mcnemar([1, 1, 0, 0], [1, 1, 0, 0]) == 1.0
    # 6 disagreements, all one way: 2 * (1/2)^6
    assert mcnemar([0] * 6 + [1] * 10, [1] * 6 + [1] * 10) == pytest.approx(2 / 64)


def test_sign_flip_on_scores():
    a = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert sign_flip(a, list(a)) == 1.0
    # five positive differences: only the all-positive and all-negative flips are as big
    assert sign_flip(a, [x + 1 for x in a]) == pytest.approx(2 / 32)
    r = compare(a, [x + 0.01 * (-1) ** i for i, x in enumerate(a)])
    assert r["test"] == "sign_flip" and not r["separated"]


def test_bootstrap_needs_pairs():
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1])
