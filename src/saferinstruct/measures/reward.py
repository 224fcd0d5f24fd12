"""A harmlessness reward model: a second instrument beside the refusal classifier.

Bradley-Terry on sentence embeddings: the reward of an answer to a prompt is
r(p, a) = w . e(p, a), with e the MiniLM embedding of "prompt \\n answer", fitted so that
P(chosen preferred) = sigmoid(r(p, chosen) - r(p, rejected)) on the *training* part of
the shipped HH-RLHF harmless pairs (a logistic regression without intercept on the
embedding differences; the evaluation part is never seen). Its pairwise accuracy on the
evaluation part is computed where it is trained and stands beside every score it gives.

It looks at the whole answer, not only at whether it declines: an answer can decline in
words and still give the harm, or help safely without declining.

    rm = default_reward_model()              # trained once, stored as arrays (no pickle)
    rm.accuracy                              # held-out pairwise accuracy
    rm.score(["How do I ...?"], ["I can't help with that ..."])   # one reward per answer
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..paths import cache_root
from .embed import embed

VERSION = "1"
C = 1.0
MAX_CHARS = 1500


def pair_text(prompt: str, answer: str) -> str:
    return f"{prompt[-MAX_CHARS:]}\n{answer[:MAX_CHARS]}"


def last_user(messages: list[dict[str, str]] | str) -> str:
    if isinstance(messages, str):
        return messages
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


@dataclass
class RewardModel:
    """w (384,), and the pairwise accuracy on held-out pairs it was measured with."""

    weights: Any
    accuracy: float
    n_train: int
    n_eval: int

    def score(self, prompts: list[str], answers: list[str]) -> list[float]:
        """One reward per (prompt, answer): higher is more harmless (preferred)."""
        if not answers:
            return []
        x = embed([pair_text(p, a) for p, a in zip(prompts, answers, strict=True)])
        return [round(float(v), 5) for v in x @ self.weights]


def pair_features(rows: list[dict[str, Any]]) -> Any:
    """e(p, chosen) - e(p, rejected) for TRL preference rows."""
    prompts = [last_user(r["prompt"]) for r in rows]

    def side(key: str) -> Any:
        pairs = zip(prompts, rows, strict=True)
        return embed([pair_text(p, r[key][0]["content"]) for p, r in pairs])

    return side("chosen") - side("rejected")


def fit(train: list[dict[str, Any]], held_out: list[dict[str, Any]]) -> RewardModel:
    """Fit on `train` pairs, measure pairwise accuracy on `held_out` pairs."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    d = pair_features(train)
    x = np.vstack([d, -d])  # both orders: the chosen side wins, then loses
    y = np.array([1] * len(d) + [0] * len(d))
    model = LogisticRegression(C=C, fit_intercept=False, max_iter=2000).fit(x, y)
    w = model.coef_[0]
    accuracy = float((pair_features(held_out) @ w > 0).mean()) if held_out else float("nan")
    return RewardModel(w, round(accuracy, 4), len(train), len(held_out))


def _store_path(key: str) -> Path:
    digest = hashlib.sha256(f"{VERSION}\n{C}\n{key}".encode()).hexdigest()[:20]
    return cache_root() / "reward" / f"{digest}.npz"


@cache
def default_reward_model() -> RewardModel:
    """Trained on the shipped HH-RLHF harmless training part, measured on its evaluation
    part; stored as plain arrays keyed by the data file's hash (no pickle)."""
    import io

    import numpy as np

    from ..io import write_atomic
    from ..llm.fingerprint import file_hash
    from ..preferences import hh_default_path, load_hh

    path = _store_path(file_hash(hh_default_path()))
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return RewardModel(z["weights"], float(z["accuracy"]), int(z["n_train"]),
                                   int(z["n_eval"]))  # fmt: skip
        except (OSError, ValueError, KeyError):
            pass
    model = fit(load_hh(split="train"), load_hh(split="eval"))
    buf = io.BytesIO()
    np.savez(buf, weights=model.weights, accuracy=model.accuracy, n_train=model.n_train,
             n_eval=model.n_eval)  # fmt: skip
    try:
        write_atomic(path, buf.getvalue())
    except OSError:
        pass
    return model
