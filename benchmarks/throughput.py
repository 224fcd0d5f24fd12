"""Requests in flight and memory of the whole data pipeline against a slow endpoint.

N synthetic texts through sources -> induce (prompted) -> filter -> respond -> judge ->
assemble, every role on an OpenAI-protocol server on 127.0.0.1 that answers every request
the stages send (valid verdict JSON, log-probs) after L seconds (the tests' fault server,
in this process), with `max_concurrency` C. The pipeline runs in a child process (its
own peak RSS and CPU time); requests are counted at the server. Requests/s are over the
stages that send them (00-04: the streamed stages' span, the serial stages' sum); the
run's whole time (assemble, funnel and report too) is beside. The limit is C / L
requests/s. One request per text and stage (respond.candidates=1, no refusal classifier:
the runner is measured, not the classifier's CPU time). `--memory` gives the peak RSS of
the whole run and that of its first `stages_s` seconds (the streamed stages), sampled.
Runners compared in the same run:

- `streamed`: the runner now (every stage at once, records flowing on);
- `serial16`: one chunk of 16 records at a time, stage after stage (the runner the
  scale issue measured);
- `serial8c`: one chunk of 8 x C records at a time, stage after stage (the runner before
  streaming).

Each with a fresh call cache, so every request reaches the server.

    python benchmarks/throughput.py --n 10000 --baseline-n 2000 --latency 0.5 > tp.json
    python benchmarks/throughput.py --memory 1000,100000 --latency 0 > mem.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from fault_server import FaultServer  # noqa: E402
from machine import machine_info  # noqa: E402

FLOWS = {"streamed": "Flow()", "serial16": "Flow(serial=True, chunk=16)",
         "serial8c": "Flow(serial=True, chunk=8 * {c})"}  # fmt: skip

CHILD = """
import json, resource, sys, threading, time
from saferinstruct.threads import choose
choose()
from saferinstruct import api
from saferinstruct.runner import Flow
from saferinstruct.memory import resident_mb
cfg = api.load_config({config!r}, {overrides!r})
api.use_input(cfg, {texts!r})
samples = []  # (seconds since start, RSS MB) every 0.5 s: where the peak came
def sample():
    while True:
        samples.append((time.perf_counter() - start, resident_mb()))
        time.sleep(0.5)
start = time.perf_counter()
threading.Thread(target=sample, daemon=True).start()
summary = api.run(cfg, {out!r}, flow={flow})
seconds = time.perf_counter() - start
stages = [s["seconds"] for s in summary["stages"][1:]]
span = max(stages) if {streamed} else sum(stages)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": seconds, "pairs": sum(summary["dataset"].values()),
                  "stage_seconds": span, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024,
                  "peak_rss_stages_mb": max(r for t, r in samples if t <= span)}}))
"""


def texts_csv(folder: Path, n: int) -> Path:
    """N distinct texts in two categories (ids t0.., streamed to the file)."""
    path = folder / "texts.csv"
    with path.open("w") as f:
        f.write("id,category,text\n")
        for i in range(n):
            f.write(f"t{i},{('hate', 'self-harm')[i % 2]},Synthetic text number {i} about "
                    f"the weather in town {i % 97} on day {i % 31}.\n")  # fmt: skip
    return path


def one(flow: str, n: int, concurrency: int, latency: float) -> dict[str, float]:
    """One pipeline run in a child process; its figures and the server's count."""
    behaviour = "slow" if latency > 0 else "ok"
    with tempfile.TemporaryDirectory() as tmp, FaultServer(default=behaviour,
                                                           slow_s=latency) as srv:  # fmt: skip
        overrides = [f"cache={tmp}/calls.sqlite", "induce.mode=prompted",
                     "expert.backend=openai", "expert.model=fault-model",
                     f"expert.base_url={srv.url}", f"expert.max_concurrency={concurrency}",
                     f"expert.timeout_s={60 + latency}", "source.limit=null",
                     "filter.verdict.mode=json", "judge.verdict.mode=json",
                     "respond.candidates=1", "respond.prefer_declining=false",
                     "judge.chosen_must_decline=false", "success.min_pair_share=0"]  # fmt: skip
        code = CHILD.format(config=str(ROOT / "configs/quickstart.yaml"), overrides=overrides,
                            texts=str(texts_csv(Path(tmp), n)), out=f"{tmp}/run",
                            flow=FLOWS[flow].format(c=concurrency),
                            streamed=flow == "streamed")  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=False)  # fmt: skip
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{flow}: the run failed ({done.returncode}): {done.stderr[-2000:]}")
        child = json.loads(done.stdout.strip().splitlines()[-1])
        sent, peak = srv.counts["total"], srv.peak_in_flight
    rate = sent / child["stage_seconds"]
    out = {"texts": n, "requests": sent, "run_s": round(child["seconds"], 1),
           "stages_s": round(child["stage_seconds"], 1), "wall_s": round(wall, 1),
           "req_per_s": round(rate, 1), "cpu_s": round(child["cpu_s"], 1),
           "peak_in_flight": peak, "pairs": child["pairs"],
           "peak_rss_mb": round(child["peak_rss_mb"], 1),
           "peak_rss_stages_mb": round(child["peak_rss_stages_mb"], 1)}  # fmt: skip
    if latency > 0:
        out["over_limit"] = round(rate / (concurrency / latency), 3)
    print(f"{flow}: {json.dumps(out)}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--flows", default="streamed,serial16,serial8c")
    ap.add_argument("--baseline-n", type=int, default=None,
                    help="texts for the serial runners (default --n): their rate is bounded "
                         "by the chunk, not the count, and serial16 takes ~26 min at 10,000")
    ap.add_argument("--memory", default=None,
                    help="comma-separated text counts: peak RSS of the streamed runner at each")
    args = ap.parse_args()
    report = {"benchmark": "throughput", "machine": machine_info(), "date": time.strftime(
        "%Y-%m-%dT%H:%MZ", time.gmtime()), "concurrency": args.concurrency,
        "latency_s": args.latency}  # fmt: skip
    if args.memory:
        sizes = [int(x) for x in args.memory.split(",")]
        runs = {n: one("streamed", n, args.concurrency, args.latency) for n in sizes}
        report["memory"] = runs
        report["rss_ratio_largest_over_smallest"] = round(
            runs[sizes[-1]]["peak_rss_mb"] / runs[sizes[0]]["peak_rss_mb"], 3)
    else:
        flows = args.flows.split(",")
        sizes = {f: args.n if f == "streamed" else (args.baseline_n or args.n) for f in flows}
        results = {f: one(f, sizes[f], args.concurrency, args.latency) for f in flows}
        report.update(texts=args.n, limit_req_per_s=args.concurrency / args.latency,
                      results=results)  # fmt: skip
        for f in flows[1:]:
            report[f"ratio_streamed_over_{f}"] = round(
                results["streamed"]["req_per_s"] / results[f]["req_per_s"], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
