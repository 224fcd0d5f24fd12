"""Judge audit benchmark: how well does the judge catch bad `chosen` responses?

Runs the judge stage over the labelled audit set (`tests/data/audit.csv`: released
Safer-Instruct pairs labelled good/bad by reading, before any judge prompt existed) and
reports precision and recall of "dropped" against label "bad", overall and per outcome,
next to two baselines measured in the same run: a judge that drops everything, and the
pair checks alone (copies, carried-over wording, degenerate answers; no model).
Not a test: the floor it measures is recorded in docs/benchmarks.md.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/judge_audit.py [--set judge.verdict.mode=json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUDIT = ROOT / "tests" / "data" / "audit.csv"


def precision_recall(predicted_bad: list[bool], labels: list[str]) -> dict[str, float]:
    tp = sum(p and lab == "bad" for p, lab in zip(predicted_bad, labels, strict=True))
    fp = sum(p and lab == "good" for p, lab in zip(predicted_bad, labels, strict=True))
    fn = sum((not p) and lab == "bad" for p, lab in zip(predicted_bad, labels, strict=True))
    return {
        "precision": round(tp / (tp + fp), 3) if tp + fp else 0.0,
        "recall": round(tp / (tp + fn), 3) if tp + fn else 0.0,
        "flagged": tp + fp,
        "n": len(labels),
    }


def run_audit(overrides: list[str]) -> dict:
    import csv

    from saferinstruct import api
    from saferinstruct.llm.factory import make_backend
    from saferinstruct.pipeline.judge import audit_file

    cfg = api.load_config(None, overrides)
    expert = make_backend(cfg.expert, cfg.cache)
    labels = {r["audit_id"]: r["label"] for r in csv.DictReader(AUDIT.open())}
    columns = {"id": "audit_id", "category": "category"}
    start = time.time()
    records = audit_file(AUDIT, expert, cfg.judge, cfg.domain, columns=columns)
    seconds = time.time() - start
    gold = [labels[r["id"]] for r in records]
    dropped = [r["status"] == "dropped" for r in records]
    pair_checks = [(r.get("judge") or {}).get("mode") == "pair_check" for r in records]
    return {
        "benchmark": "judge_audit",
        "date": time.strftime("%Y-%m-%d"),
        "settings": {"mode": cfg.judge.verdict.mode, "threshold": cfg.judge.verdict.threshold,
                     "max_pair_cosine": cfg.judge.max_pair_cosine, "model": expert.identity()},
        "judge": precision_recall(dropped, gold),
        "pair_checks_only": precision_recall(pair_checks, gold),
        "drop_everything": precision_recall([True] * len(gold), gold),
        "seconds": round(seconds, 1),
        "model_calls": expert.stats.misses,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    args = ap.parse_args()
    out = run_audit(args.set)
    for key in ("judge", "pair_checks_only", "drop_everything"):
        r = out[key]
        print(f"{key:18s} precision {r['precision']:.3f} recall {r['recall']:.3f}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
