"""Peak memory of stage 05 (assemble, funnel, report) over a judge stage file of N records.

The records look like the throughput benchmark's (benchmarks/throughput.py: the fault
server's answers), every one kept by judge; the assemble recipe runs in a child process
(its own peak RSS) from the checkout given (default: this one), so two versions can be
compared on the same file in one run.

    python benchmarks/assemble_memory.py --n 1000,100000 [--src OTHER_CHECKOUT/src]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, time
from saferinstruct.threads import choose
choose()
from saferinstruct import api
from saferinstruct.recipes.data import assemble_records
from saferinstruct.io import read_jsonl
cfg = api.load_config({config!r})
start = time.perf_counter()
assemble_records(lambda: read_jsonl({judged!r}), cfg, {out!r})
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": time.perf_counter() - start,
                  "peak_rss_mb": usage.ru_maxrss / 1024}}))
"""


def judged_file(folder: Path, n: int) -> Path:
    """N records as the judge stage writes them for the throughput benchmark's texts."""
    path = folder / "stages" / "04-judge.jsonl"
    path.parent.mkdir(parents=True)
    with path.open("w") as f:
        for i in range(n):
            digest = hashlib.sha256(str(i).encode()).hexdigest()[:8]
            verdicts = [{"stage": s, "kept": True, "score": 1.0} for s in ("filter", "judge")]
            record = {
                "id": f"t{i}", "category": ("hate", "self-harm")[i % 2], "status": "kept",
                "text": f"Synthetic text number {i} about the weather in town {i % 97}.",
                "instruction": f"answer 0 {digest} is here", "source_index": i,
                "chosen": f"answer 0 {digest[::-1]} is here", "verdicts": verdicts,
            }  # fmt: skip
            f.write(json.dumps(record) + "\n")
    return path


def one(n: int, src: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        judged = judged_file(Path(tmp) / "run", n)
        code = CHILD.format(config=str(ROOT / "configs/quickstart.yaml"), judged=str(judged),
                            out=f"{tmp}/run")  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(src)}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=False)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"assemble failed: {done.stderr[-2000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{n}: {json.dumps(out)}", file=sys.stderr)
    return {"seconds": round(out["seconds"], 1), "peak_rss_mb": round(out["peak_rss_mb"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="1000,100000")
    ap.add_argument("--src", type=Path, default=ROOT / "src")
    args = ap.parse_args()
    sizes = [int(x) for x in args.n.split(",")]
    runs = {n: one(n, args.src) for n in sizes}
    print(json.dumps({"benchmark": "assemble_memory", "src": str(args.src),
                      "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "runs": runs,
                      "ratio": round(runs[sizes[-1]]["peak_rss_mb"]
                                     / runs[sizes[0]]["peak_rss_mb"], 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
