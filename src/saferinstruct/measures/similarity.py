"""Similarity measures over L2-normalised sentence vectors (rows of a numpy array).

Pure: they take vectors (from `embed.embed`, or anywhere), never load a model.

- `max_neighbour_cosine(vecs)`: each row's highest cosine with another row.
- `template_share(texts, vecs, threshold)`: how template-like a set of responses is.
- `mean_pairwise_distance(vecs)`: mean 1 - cosine over all pairs (diversity).

    vecs = embed(texts)
    template_share(texts, vecs, threshold=0.9)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .text import normalise

BLOCK = 1024


def max_neighbour_cosine(vecs: Any) -> Any:
    """For each row of L2-normalised `vecs` (n, d), the highest cosine with another row.

    Returns a float array of shape (n,); -1 where n == 1. Computed in row blocks so
    memory stays O(block * n).
    """
    import numpy as np

    n = len(vecs)
    out = np.full(n, -1.0, dtype=np.float32)
    for start in range(0, n, BLOCK):
        sims = vecs[start : start + BLOCK] @ vecs.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -1.0
        if n > 1:
            out[start : start + BLOCK] = sims.max(axis=1)
    return out


def template_share(texts: list[str], vecs: Any, threshold: float) -> dict[str, Any]:
    """How template-like a set of responses is; all shares are of `n = len(texts)`.

    `vecs` are the texts' L2-normalised vectors, row i for texts[i] (None: no near check,
    exact twins only).
    - `exact_duplicate_share`: responses with an identical twin (after `normalise`).
    - `top_response_share`: count of the most common response / n.
    - `near_template_share`: responses with another response of cosine >= `threshold`
      (so it is never below the exact share).
    - `distinct_share`: distinct responses / n.
    An empty list gives n = 0 and zero shares.
    """
    n = len(texts)
    if n == 0:
        return {
            "n": 0,
            "exact_duplicate_share": 0.0,
            "top_response_share": 0.0,
            "near_template_share": 0.0,
            "distinct_share": 0.0,
        }
    counts = Counter(normalise(t) for t in texts)
    twins = sum(c for c in counts.values() if c > 1)
    near = 0
    if n > 1 and vecs is not None:
        near = int((max_neighbour_cosine(vecs) >= threshold - 1e-6).sum())
    return {
        "n": n,
        "exact_duplicate_share": twins / n,
        "top_response_share": counts.most_common(1)[0][1] / n,
        "near_template_share": max(near, twins) / n,
        "distinct_share": len(counts) / n,
    }


def mean_pairwise_distance(vecs: Any) -> float | None:
    """Mean 1 - cosine over all pairs of rows; None with fewer than two rows."""
    n = len(vecs)
    if n < 2:
        return None
    sims = vecs @ vecs.T
    mean_sim = (float(sims.sum()) - float(sims.trace())) / (n * (n - 1))
    return 1.0 - mean_sim
