"""What a training learned, measured on pairs it never trained on.

`sft` and `dpo` evaluate the policy on held-out pairs before training and after it (and a
few times between: the held-out curve in loss.png): the data's test split, or, when the
data has none, a share of its pairs held out by a stable hash of each pair (the record
says which). DPO reports TRL's evaluation metrics there: preference accuracy (the implicit
reward of chosen above rejected), the mean reward margin, and how far the log-probs of
chosen and rejected moved from the reference's (reward / beta, in nats); SFT its held-out
loss on the chosen answers. A run whose held-out accuracy stays near chance, or whose
policy barely moved, ends with a warning naming the setting to change.

    train, held, source = split_rows(rows, 0.1)
    record = summary("dpo", before, after, beta=0.1)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..measures.splits import hash_fraction

CHANCE = 0.55
"""Held-out preference accuracy at or below this is near chance (0.5)."""
MOVED_NATS = 1.0
"""A policy whose chosen and rejected log-probs moved less than this (mean, in nats per
answer) from the reference's barely moved. Measured (docs/benchmarks.md, "DPO on our own
pairs", 2026-12-07): runs that moved 0.2-0.4 nats left refusal on the tuning prompts
where SFT put it (11 steps at lr 5e-5); runs that moved 3-11 nats changed it (+9 to +10
points)."""
MAX_PAIRS = 64
"""Held-out pairs measured at most (each measurement is a forward pass over them)."""

METRICS = {
    "dpo": {"eval_rewards/accuracies": "accuracy", "eval_rewards/margins": "margin",
            "eval_rewards/chosen": "chosen_reward", "eval_rewards/rejected": "rejected_reward",
            "eval_loss": "loss"},
    "sft": {"eval_loss": "loss", "eval_mean_token_accuracy": "token_accuracy"},
}  # fmt: skip
"""TRL's evaluation metric -> the name the record gives it, per trainer."""


@dataclass(frozen=True)
class HeldOut:
    """The pairs a training is measured on, and where they came from."""

    rows: list[dict[str, Any]]
    source: str
    """'test split' or 'N% of the training pairs, held out by hash'."""


def pair_key(row: dict[str, Any]) -> str:
    """A pair's stable key: its prompt and chosen text."""
    return json.dumps([row.get("prompt"), row.get("chosen")], sort_keys=True)


def split_rows(rows: list[dict[str, Any]], share: float) -> tuple[list[dict], HeldOut]:
    """(the rows to train on, the held-out pairs): `share` of the rows by a stable hash
    of each pair (none when `share` is 0 or fewer than 10 rows)."""
    if share <= 0 or len(rows) < 10:
        return rows, HeldOut([], "none (share 0 or fewer than 10 pairs)")
    held: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for r in rows:
        (held if hash_fraction(pair_key(r)) < share else kept).append(r)
    source = f"{share:.0%} of the training pairs, held out by a hash of each pair"
    return kept, HeldOut(held[:MAX_PAIRS], source)


def picked(kind: str, metrics: dict[str, Any] | None) -> dict[str, float] | None:
    """TRL's evaluation metrics under the record's names (rounded)."""
    if metrics is None:
        return None
    return {name: round(float(metrics[key]), 4) for key, name in METRICS[kind].items()
            if key in metrics}  # fmt: skip


def summary(kind: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
            held: HeldOut, beta: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The record of what training did on the held-out pairs, with warnings."""
    out: dict[str, Any] = {"pairs": len(held.rows), "from": held.source,
                           "before": picked(kind, before), "after": picked(kind, after)}
    if kind == "dpo" and beta and out["after"]:
        after = out["after"]
        after["chosen_logp_change"] = round(after.get("chosen_reward", 0.0) / beta, 4)
        after["rejected_logp_change"] = round(after.get("rejected_reward", 0.0) / beta, 4)
    out["warnings"] = warnings(kind, out)
    return out


def warnings(kind: str, record: dict[str, Any]) -> list[str]:
    """What a user must hear about a training that did not learn the preference."""
    after = record.get("after") or {}
    said = []
    if record["pairs"] < 10:
        said.append(f"only {record['pairs']} held-out pairs: too few to say what training "
                    "learned (give data with a test split, or more pairs)")  # fmt: skip
    if kind == "dpo" and after:
        moved = (abs(after.get("chosen_logp_change", 0.0))
                 + abs(after.get("rejected_logp_change", 0.0))) / 2  # fmt: skip
        if moved < MOVED_NATS:
            said.append(f"the policy barely moved: held-out log-probs changed {moved:.3f} "
                        f"nats on average (< {MOVED_NATS}); raise learning_rate or epochs "
                        "(or max_steps)")  # fmt: skip
        if record["pairs"] and after.get("accuracy", 0.0) <= CHANCE:
            said.append(f"held-out preference accuracy {after.get('accuracy', 0.0):.2f} is "
                        f"near chance (<= {CHANCE}): the preference was not learned; raise "
                        "learning_rate, epochs or beta, or check the pairs")  # fmt: skip
    before = record.get("before") or {}
    if kind == "sft" and after and before and after.get("loss", 0) >= before.get("loss", 0):
        said.append(f"held-out loss did not fall ({before['loss']:.3f} -> {after['loss']:.3f}): "
                    "lower learning_rate, or fewer epochs")  # fmt: skip
    return said
