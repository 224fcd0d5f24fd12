"""The judge audited on a person's labels: how far its verdicts can be trusted on *this* run.

A pair the judge dropped is *flagged*; a pair the person labelled bad is *bad*. Then
precision = flagged pairs that are bad / flagged pairs, recall = bad pairs flagged / bad
pairs, agreement = pairs where judge and person agree / pairs (`benchmarks/judge_audit.py`
counts the same way against the released pairs' labels).

Labels are usually a sample, and `review`'s sample mode draws the judge's kept and
dropped pairs alike, so the dropped ones are over-represented. The figures are therefore
estimated per stratum (pairs the judge kept, pairs it dropped) and weighted by each
stratum's size in the run: precision is the bad share among labelled dropped pairs (a
stratum's own rate), recall and agreement weigh the two strata by the run's counts.
With every judged pair labelled this is the plain count. Intervals: a bootstrap that
resamples within each stratum (seeded).

    figures = audit_run(RunDir("runs/quickstart"))      # the run's judge on its labels.jsonl
    figures = audit_on_labels(labelled, population={"kept": 120, "dropped": 80})
    # labelled: [(judge_dropped, labelled_bad), ...]
"""

from __future__ import annotations

import random
from typing import Any

from ..errors import BadInput
from ..io import read_jsonl
from ..labels import judge_kept, pair_sha256, read_labels
from ..rundir import RunDir
from .stats import RESAMPLES


def _rates(kept: list[bool], dropped: list[bool], n_kept: int,
           n_dropped: int) -> dict[str, float | None]:  # fmt: skip
    """Precision, recall and agreement from the bad labels of each stratum's labelled
    pairs, weighted by the strata's sizes in the run. None where undefined: precision
    without labelled dropped pairs, recall and agreement until every stratum the run has
    is labelled (recall also when no pair is bad)."""
    bad_dropped = sum(dropped) / len(dropped) if dropped else None
    bad_kept = sum(kept) / len(kept) if kept else None
    rates: dict[str, float | None] = {"precision": bad_dropped, "recall": None,
                                      "agreement": None}  # fmt: skip
    covered = (dropped or not n_dropped) and (kept or not n_kept) and n_kept + n_dropped
    if covered:
        flagged_bad = (bad_dropped or 0.0) * n_dropped
        missed_bad = (bad_kept or 0.0) * n_kept
        if flagged_bad + missed_bad > 0:
            rates["recall"] = flagged_bad / (flagged_bad + missed_bad)
        rates["agreement"] = (flagged_bad + (n_kept - missed_bad)) / (n_kept + n_dropped)
    return rates


def audit_on_labels(labelled: list[tuple[bool, bool]], population: dict[str, int],
                    resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The judge's precision, recall and agreement on the labelled pairs
    (`(judge_dropped, labelled_bad)` each), with 95% bootstrap intervals, the labels
    behind each figure, and the run's strata sizes (`population`: judged pairs it kept
    and dropped)."""
    kept = [bad for flagged, bad in labelled if not flagged]
    dropped = [bad for flagged, bad in labelled if flagged]
    n_kept = max(population.get("kept", 0), len(kept))
    n_dropped = max(population.get("dropped", 0), len(dropped))
    point = _rates(kept, dropped, n_kept, n_dropped)
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(resamples if labelled else 0):
        again = _rates(rng.choices(kept, k=len(kept)) if kept else [],
                       rng.choices(dropped, k=len(dropped)) if dropped else [],
                       n_kept, n_dropped)  # fmt: skip
        for key, value in again.items():
            if value is not None:
                draws[key].append(value)
    behind = {"precision": len(dropped), "recall": len(labelled), "agreement": len(labelled)}
    figures = {key: {"value": None if value is None else round(value, 4),
                     "ci95": _interval(draws[key]) if value is not None else None,
                     "n": behind[key]}
               for key, value in point.items()}  # fmt: skip
    return {
        "labels": len(labelled),
        "labelled": {"judge_kept": len(kept), "judge_dropped": len(dropped),
                     "bad": sum(kept) + sum(dropped)},  # fmt: skip
        "run": {"judge_kept": n_kept, "judge_dropped": n_dropped},
        **figures,
    }


def _interval(values: list[float], level: float = 0.95) -> list[float] | None:
    """The percentile interval of bootstrap draws."""
    if not values:
        return None
    values = sorted(values)
    lo = values[int((1 - level) / 2 * len(values))]
    hi = values[min(len(values) - 1, int((1 + level) / 2 * len(values)))]
    return [round(lo, 4), round(hi, 4)]


def audit_run(run: RunDir, resamples: int = RESAMPLES) -> dict[str, Any]:
    """The judge of `run` audited on the labels in its labels file: `audit_on_labels`
    over the labelled pairs the judge saw, plus the labels not counted (`stale`: made on
    a pair that has changed since; `not_judged`: a record the judge never saw). With no
    label counted, `audited` is False and the figures are absent; with no labels at all
    the judge stage file is not read (the data report asks at every assemble)."""
    judge_file = run.stage("judge")
    if not judge_file.exists():
        raise BadInput(f"{run.root}: no judge stage file ({run.relative(judge_file)}); "
                       "run the pipeline first")  # fmt: skip
    labels = read_labels(run.labels)
    out = {"audited": False, "labels_file": str(run.labels), "stale": 0, "not_judged": 0}
    if not labels:
        return {**out, "labels": 0}
    judged: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(judge_file):
        if judge_kept(record) is not None:
            judged[str(record["id"])] = record
    labelled: list[tuple[bool, bool]] = []
    for rid, line in labels.items():
        record = judged.get(rid)
        if record is None:
            out["not_judged"] += 1
        elif line.get("pair_sha256") != pair_sha256(record):
            out["stale"] += 1
        else:
            labelled.append((judge_kept(record) is False, line["label"] == "bad"))
    if not labelled:
        return {**out, "labels": 0}
    population = {"kept": sum(judge_kept(r) is True for r in judged.values()),
                  "dropped": sum(judge_kept(r) is False for r in judged.values())}  # fmt: skip
    return {**out, "audited": True, **audit_on_labels(labelled, population, resamples)}


def audit_line(figures: dict[str, Any]) -> str:
    """The audit in one line for stderr: each figure with its interval, or why none."""
    if not figures["audited"]:
        return (f"not audited: no labels on judged pairs in {figures['labels_file']} "
                "(label pairs with `safer-instruct review RUN_DIR`)")  # fmt: skip
    parts = []
    for key in ("precision", "recall", "agreement"):
        f = figures[key]
        shown = "n/a" if f["value"] is None else f"{f['value']:.3f}"
        if f["ci95"]:
            shown += f" [{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}]"
        parts.append(f"{key} {shown}")
    return f"judge on {figures['labels']} labels: " + ", ".join(parts)
