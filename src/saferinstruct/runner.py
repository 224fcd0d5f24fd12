"""The runner: file IO, chunking, progress and resume around the pure stages.

`run_stage` feeds a stage chunks of records (`chunk_for`: 16, or 8 per request an
endpoint role may have in flight), shows a progress bar, and writes every
record (dropped ones too) to the run directory's stage file (`RunDir.stage`) atomically
at the end. Resume is the call cache's job: a rerun or a restarted run recomputes each
chunk from cached calls (no model load when all are cached; endpoint answers are stored
as they arrive), so a killed run pays again at most for the requests in flight, and a
finished stage is never half-written.

    result = run_stage("induce", records, lambda chunk: induce(chunk, model, cfg),
                       RunDir("runs/quick"), total=len(records), backends=[model])
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .llm.cache import CachedBackend
from .progress import stage_progress
from .records import Record, is_kept
from .rundir import RunDir

log = logging.getLogger("saferinstruct")

CHUNK = 16
"""Records per chunk for local models (their backend sorts and batches them)."""
PER_SLOT = 8
"""Records per request an endpoint role may have in flight (its `max_concurrency`): a
chunk waits for its slowest request, so more waves per chunk waste less of the slots
(benchmarks/throughput.py)."""

@dataclass
class StageResult:
    name: str
    path: Path
    n_in: int
    n_kept: int
    seconds: float
    calls: dict[str, Any] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "in": self.n_in,
            "kept": self.n_kept,
            "dropped": self.n_in - self.n_kept,
            "seconds": round(self.seconds, 2),
            **self.calls,
        }


def run_stage(
    name: str,
    records: Iterable[Record],
    fn: Callable[[list[Record]], list[Record]],
    run: RunDir,
    *,
    total: int | None = None,
    chunk_size: int | None = None,
    backends: Iterable[CachedBackend] = (),
) -> StageResult:
    """Apply `fn` chunk by chunk and write the stage file; returns counts for the funnel.
    `chunk_size` None: `chunk_for(backends)`."""
    backends = list(dict.fromkeys(backends))  # a backend serving two roles counts once
    chunk_size = chunk_size or chunk_for(backends)
    start = time.time()
    before = [_counters(b) for b in backends]
    out: list[Record] = []
    with stage_progress(name, total) as bar:
        chunk: list[Record] = []
        for record in records:
            chunk.append(record)
            if len(chunk) >= chunk_size:
                out.extend(_process(fn, chunk, bar, backends))
                chunk = []
        if chunk:
            out.extend(_process(fn, chunk, bar, backends))
    path = run.stage(name)
    run.write_jsonl(path, out)
    calls = _call_counts(backends, before)
    n_kept = sum(map(is_kept, out))
    result = StageResult(name, path, len(out), n_kept, time.time() - start, calls, out)
    log.info("stage %s: %s", name, json.dumps(result.summary()))
    return result


def chunk_for(backends: list[CachedBackend]) -> int:
    """Records per chunk: 16 (a local backend batches them itself), or enough that an
    endpoint role can keep its `max_concurrency` requests in flight while the slowest
    requests of the chunk finish (`PER_SLOT` records per request slot)."""
    slots = [getattr(b.inner, "max_concurrency", 0) for b in backends]
    return max([CHUNK, *(PER_SLOT * n for n in slots)])


def _process(fn: Callable, chunk: list[Record], bar: Any, backends: list[CachedBackend]) -> list:
    done = fn(chunk)
    bar.advance(len(chunk), hits=sum(b.stats.hits for b in backends))
    return done


def _counters(backend: CachedBackend) -> dict[str, int]:
    """Cache hits, model calls, failed calls, and (endpoints) HTTP attempts and tokens."""
    stats = backend.stats
    counts = {"cache_hits": stats.hits, "model_calls": stats.misses, "failed_calls": stats.errors}
    for key, value in backend.usage().items():
        if key in ("attempts", "retries", "prompt_tokens", "completion_tokens"):
            counts[f"http_{key}" if key in ("attempts", "retries") else key] = value
    return counts


def _call_counts(backends: list[CachedBackend], before: list[dict[str, int]]) -> dict:
    """What this stage added to each counter, summed over its backends."""
    total: dict[str, int] = {"cache_hits": 0, "model_calls": 0, "failed_calls": 0}
    for backend, start in zip(backends, before, strict=True):
        for key, value in _counters(backend).items():
            total[key] = total.get(key, 0) + value - start.get(key, 0)
    return total
