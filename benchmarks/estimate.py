"""How well `run --estimate N` predicts a run: the estimate over N sampled sources, then the
real run into the same folder, with a call cache of their own (so nothing comes from
earlier runs); prints each stage's predicted and actual calls and tokens (ratio =
actual / predicted) and how many calls the real run took from the estimate's.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/estimate.py --work /tmp/estimate-bench \
        [--estimate 4] [--config configs/quickstart.yaml] > /tmp/estimate.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="emptied first")
    ap.add_argument("--estimate", type=int, default=4)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    args = ap.parse_args()

    from saferinstruct import api

    shutil.rmtree(args.work, ignore_errors=True)
    overrides = [f"cache={args.work / 'calls.sqlite'}"]
    start = time.time()
    projection = api.estimate(api.load_config(args.config, overrides), args.work / "run",
                              args.estimate)  # fmt: skip
    estimate_minutes = (time.time() - start) / 60
    start = time.time()
    summary = api.run(api.load_config(args.config, overrides), args.work / "run")
    run_minutes = (time.time() - start) / 60
    compared = summary["estimate"]
    for stage, row in compared["stages"].items():
        print(f"{stage:8} " + "  ".join(f"{k} {v['estimate']}->{v['actual']} ({v['ratio']})"
                                        for k, v in row.items()), file=sys.stderr)  # fmt: skip
    sampled_calls = sum(s["sample"]["model_calls"] for s in projection["stages"])
    out = {"machine": machine_info(), "config": str(args.config), "compared": compared,
           "projected_minutes": projection["minutes"],
           "estimate_minutes": round(estimate_minutes, 1), "run_minutes": round(run_minutes, 1),
           "run_model_calls": summary["model_calls"], "run_cache_hits": summary["cache_hits"],
           "estimate_model_calls": sampled_calls}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
