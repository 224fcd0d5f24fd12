"""The harmlessness reward model's held-out pairwise accuracy, by feature and
regularisation: the MiniLM embedding of the answer alone or of "prompt \\n answer", a
Bradley-Terry linear model with C in (0.1, 1, 10), fitted on the training part of the
shipped HH-RLHF harmless pairs and measured on its evaluation part (never seen in
fitting). Ratios are against the shipped setting (prompt + answer, C = 1) in the same run,
and against chance (0.5).

    python benchmarks/reward_model.py > reward_model.json    # ~10 min on 2 cores
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

FEATURES = ("answer", "prompt+answer")
CS = (0.1, 1.0, 10.0)
SHIPPED = "prompt+answer C=1.0"


def differences(rows: list[dict[str, Any]], features: str) -> Any:
    """e(chosen) - e(rejected) per pair, embedding the answer alone or with its prompt."""
    from saferinstruct.measures.embed import embed
    from saferinstruct.measures.reward import MAX_CHARS, last_user, pair_text

    prompts = [last_user(r["prompt"]) for r in rows]

    def side(key: str) -> Any:
        answers = [r[key][0]["content"] for r in rows]
        if features == "answer":
            return embed([a[:MAX_CHARS] for a in answers])
        return embed([pair_text(p, a) for p, a in zip(prompts, answers, strict=True)])

    return side("chosen") - side("rejected")


def accuracy(train: Any, held_out: Any, c: float) -> float:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x, y = np.vstack([train, -train]), [1] * len(train) + [0] * len(train)
    w = LogisticRegression(C=c, fit_intercept=False, max_iter=2000).fit(x, y).coef_[0]
    return round(float((held_out @ w > 0).mean()), 4)


def main() -> None:
    from saferinstruct.preferences import load_hh
    from saferinstruct.threads import choose

    choose()
    train, held_out = load_hh(split="train"), load_hh(split="eval")
    results: dict[str, float] = {}
    for features in FEATURES:
        d_train, d_eval = differences(train, features), differences(held_out, features)
        for c in CS:
            results[f"{features} C={c}"] = accuracy(d_train, d_eval, c)
    shipped = results[SHIPPED]
    print(json.dumps({
        "benchmark": "reward_model", "machine": machine_info(),
        "n_train": len(train), "n_eval": len(held_out), "accuracy": results,
        "ratio_vs_shipped": {k: round(v / shipped, 3) for k, v in results.items()},
        "ratio_vs_chance": {k: round(v / 0.5, 3) for k, v in results.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
