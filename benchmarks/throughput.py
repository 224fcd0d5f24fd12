"""Requests in flight against a slow endpoint: the induce stage (prompted: one request per
text) over N synthetic texts, the expert an OpenAI-protocol server on 127.0.0.1 that
answers every request after L seconds (the tests' fault server, behaviour "slow"), with
`max_concurrency` C. The limit is C / L requests per second. Two runners in the same run:

- `chunk16`: records handed to the stage 16 at a time (the runner before, whatever C);
- `chunk_for`: the runner now (8 records per request slot of the role: 8 x C).

Each with a fresh call cache, so every request reaches the server (its own count).

    python benchmarks/throughput.py --n 2000 --concurrency 64 --latency 0.5 > throughput.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from fault_server import FaultServer  # noqa: E402
from machine import machine_info  # noqa: E402


def texts_csv(folder: Path, n: int) -> Path:
    path = folder / "texts.csv"
    rows = [f"t{i},{('hate', 'self-harm')[i % 2]},Synthetic text number {i} about the weather."
            for i in range(n)]  # fmt: skip
    path.write_text("id,category,text\n" + "\n".join(rows) + "\n")
    return path


def one(runner: str, n: int, concurrency: int, latency: float) -> dict[str, float]:
    from saferinstruct import api
    from saferinstruct import runner as runner_module
    from saferinstruct.config import load_config

    with tempfile.TemporaryDirectory() as tmp, FaultServer(default="slow", slow_s=latency) as srv:
        cfg = load_config(ROOT / "configs/quickstart.yaml", overrides=[
            f"cache={tmp}/calls.sqlite", "induce.mode=prompted", "expert.backend=openai",
            "expert.model=fault-model", f"expert.base_url={srv.url}",
            f"expert.max_concurrency={concurrency}",
            f"expert.timeout_s={60 + latency}"])  # fmt: skip
        api.use_input(cfg, texts_csv(Path(tmp), n))
        records = api.read_sources(cfg, limit=n)
        chosen = runner_module.chunk_for
        if runner == "chunk16":
            runner_module.chunk_for = lambda backends: 16
        try:
            start = time.perf_counter()
            api.induce(records, cfg, Path(tmp) / "run")
            seconds = time.perf_counter() - start
        finally:
            runner_module.chunk_for = chosen
        sent = srv.counts["total"]
    limit = concurrency / latency
    return {"requests": sent, "seconds": round(seconds, 2), "req_per_s": round(sent / seconds, 2),
            "over_limit": round(sent / seconds / limit, 3)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.5)
    args = ap.parse_args()
    from saferinstruct.threads import choose

    choose()
    results = {r: one(r, args.n, args.concurrency, args.latency) for r in ("chunk16", "chunk_for")}
    print(json.dumps({
        "benchmark": "throughput", "machine": machine_info(), "texts": args.n,
        "concurrency": args.concurrency, "latency_s": args.latency,
        "limit_req_per_s": args.concurrency / args.latency, "results": results,
        "ratio_chunk_for_over_chunk16": round(
            results["chunk_for"]["req_per_s"] / results["chunk16"]["req_per_s"], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
