"""Threads beside a busy neighbour: the local backend's tokens/s with torch's OpenMP
threads set up three ways before torch loads, alone and beside a process spinning on
one core (what a shared 2-core machine sees).

- `spin`: OMP_WAIT_POLICY unset (libgomp's threads spin-wait), as many threads as cores;
- `passive`: OMP_WAIT_POLICY=PASSIVE (threads sleep when idle), as many threads as cores;
- `one`: OMP_NUM_THREADS=1;
- `two-processes`: two processes of one thread each, the same work each, started
  together (a barrier after their warm-up); tokens/s is both together (what sharding a
  run over two local processes would give).
Each variant runs in fresh processes (OpenMP reads these when torch loads): the embedded
model, 32 prompts, 24 new tokens, greedy, batches of 16, one warm-up batch first.
Ratios are against `spin` in the same condition, measured in the same run.

`--training`: the quickstart's reverse training (`safer-instruct reverse-train`, 4 steps,
an empty cache each time) at the CLI's one thread throughout
(`SAFER_INSTRUCT_ADAPT_THREADS=0`, its choice before it adapted) and as the CLI now
chooses (threads adapted between steps), alone, beside a
neighbour spinning on one core from the start, and beside one that starts after the
first step. Seconds are the trainer's own (`train_runtime`); ratios are one thread's
seconds over the variant's in the same condition; the trained weights are compared
bit for bit with one thread's.

    python benchmarks/threads.py > threads.json
    python benchmarks/threads.py --training > threads-training.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402
from saferinstruct.threads import ADAPT_ENV  # noqa: E402

VARIANTS = {
    "spin": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one": {"OMP_NUM_THREADS": "1"},
    "two-processes": {"OMP_NUM_THREADS": "1"},
}
PROCESSES = {"two-processes": 2}
SPIN = [sys.executable, "-c", "while True: pass"]
"""The neighbour: a process spinning on one core."""


def wait_for_all(barrier: Path, n: int) -> None:
    """Mark this worker ready in `barrier` and wait until `n` workers are."""
    (barrier / str(os.getpid())).touch()
    while len(list(barrier.iterdir())) < n:
        time.sleep(0.01)


def worker(barrier: Path | None, n: int) -> None:
    """Time the generation; prints tokens/s as JSON."""
    from saferinstruct.llm.base import GenParams
    from saferinstruct.llm.local import LocalBackend

    b = LocalBackend("embedded", batch_size=16)
    prompts = [[{"role": "user", "content": f"Tell me one fact about the number {i}."}]
               for i in range(32)]  # fmt: skip
    params = GenParams(max_new_tokens=24)
    b.generate(prompts[:16], params)  # warm-up (and the load)
    if barrier is not None:
        wait_for_all(barrier, n)
    start = time.perf_counter()
    out = b.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(b.tokenizer(c.text)["input_ids"]) for c in out)
    import torch

    print(json.dumps({"tok_per_s": round(tokens / seconds, 2), "seconds": round(seconds, 2),
                      "tokens": tokens, "threads": torch.get_num_threads()}))  # fmt: skip


def measure(variant: str, neighbour: bool) -> dict:
    """Tokens/s of the variant's workers together (one worker: its own figure)."""
    import tempfile

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(VARIANTS[variant], HF_HUB_OFFLINE="1")
    n = PROCESSES.get(variant, 1)
    spinner = None
    if neighbour:
        spinner = subprocess.Popen(SPIN)
    try:
        with tempfile.TemporaryDirectory() as barrier:
            cmd = [sys.executable, __file__, "--worker", "--barrier", barrier, "--n", str(n)]
            workers = [subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE)
                       for _ in range(n)]  # fmt: skip
            outs = [json.loads(w.communicate(timeout=1800)[0].strip().splitlines()[-1])
                    for w in workers]  # fmt: skip
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if n == 1:
        return outs[0]
    seconds = max(o["seconds"] for o in outs)  # they start together: the slower one's window
    tokens = sum(o["tokens"] for o in outs)
    return {"tok_per_s": round(tokens / seconds, 2), "seconds": seconds, "tokens": tokens,
            "processes": outs}  # fmt: skip


TRAIN_VARIANTS = {"one": {ADAPT_ENV: "0"}, "adapted": {}}
TRAIN_STEPS = 4
NEIGHBOUR_AFTER = {"alone": None, "busy_neighbour": 0.0, "neighbour_after_step_1": "step 1:"}


def train(variant: str, neighbour_after: float | str | None, work: Path) -> dict:
    """One reverse-training run of `TRAIN_STEPS` steps in an empty cache; the neighbour
    starts at once (0.0), when the log shows the given line, or never (None)."""
    import shutil

    cache = work / variant / "cache"
    shutil.rmtree(cache.parent, ignore_errors=True)
    cache.mkdir(parents=True)
    unset = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", ADAPT_ENV)
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(TRAIN_VARIANTS[variant], HF_HUB_OFFLINE="1", SAFER_INSTRUCT_CACHE=str(cache))
    from saferinstruct.llm.embedded import ensure_converted

    (cache / "models").symlink_to(ensure_converted().parent)  # the converted model, shared
    root = Path(__file__).resolve().parents[1]
    cmd = [str(Path(sys.executable).with_name("safer-instruct")), "reverse-train",
           "--config", str(root / "configs" / "quickstart.yaml"),
           "--max-steps", str(TRAIN_STEPS)]  # fmt: skip
    spinner = None
    if neighbour_after == 0.0:
        spinner = subprocess.Popen(SPIN)
    log_lines = []
    proc = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            log_lines.append(line)
            if isinstance(neighbour_after, str) and spinner is None and neighbour_after in line:
                spinner = subprocess.Popen(SPIN)
        proc.wait()
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if proc.returncode != 0:
        raise SystemExit(f"reverse-train failed ({variant}):\n" + "".join(log_lines[-20:]))
    runtime = next(json.loads(line.split(f"step {TRAIN_STEPS}: ", 1)[1])["train_runtime"]
                   for line in log_lines if '"train_runtime"' in line)  # fmt: skip
    changes = [line.split("INFO", 1)[1].strip() for line in log_lines if "threads:" in line]
    model = next(cache.glob("reverse/*/model/model.safetensors"))
    return {"seconds": runtime, "thread_changes": changes, "weights": str(model)}


def same_weights(a: str, b: str) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x)


def training() -> None:
    import tempfile

    info = machine_info()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for condition, after in NEIGHBOUR_AFTER.items():
            row = {v: train(v, after, Path(tmp) / condition) for v in TRAIN_VARIANTS}
            one = row["one"]
            for r in row.values():
                r["x_one_thread"] = round(one["seconds"] / r["seconds"], 3)
                r["same_weights_as_one_thread"] = same_weights(one["weights"], r["weights"])
            for r in row.values():
                del r["weights"]
            results[condition] = row
            print(json.dumps({condition: row}), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "threads-training", "machine": info, "results": results}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--barrier", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--training", action="store_true",
                    help="time reverse-training steps instead of generation")  # fmt: skip
    args = ap.parse_args()
    if args.worker:
        worker(args.barrier if args.n > 1 else None, args.n)
        return
    if args.training:
        training()
        return
    info = machine_info()
    results: dict[str, dict] = {}
    for condition, neighbour in (("alone", False), ("busy_neighbour", True)):
        results[condition] = {v: measure(v, neighbour) for v in VARIANTS}
        base = results[condition]["spin"]["tok_per_s"]
        for v in VARIANTS:
            results[condition][v]["ratio_vs_spin"] = round(
                results[condition][v]["tok_per_s"] / base, 3)  # fmt: skip
        print(json.dumps({condition: results[condition]}), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "threads", "machine": info, "results": results}))


if __name__ == "__main__":
    main()
