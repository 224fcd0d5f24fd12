"""The runner: stages as a stream, with file IO, progress and resume around the pure stages.

`stream` takes the source records (an iterator: they are never all in memory) and a list
of `Step`s (a stage's name, the function it applies to a chunk of records, the backends
it calls). Every stage runs at once: a record goes on to the next stage as soon as its
chunk (16 records) is done, so respond is working while filter still is. Inside a stage
several chunks are in flight (`plan`): an endpoint role keeps its `max_concurrency`
requests busy (its backend's request threads are the bound, shared by all stages using
the role); a local model takes one chunk at a time (its backend sorts and batches them).

Order and files. A stage hands its chunks on, and appends them to its stage file
(`RunDir.stage`), in input order, whatever order they finish in: the chunks, the stage
files and the dataset are the same as a run with one chunk at a time (`Flow(serial=
True)`, what the runner did before), byte for byte. Each chunk's lines are flushed as it
is handed on, so a killed run leaves every finished line readable and at most the last
line cut (`io.read_jsonl` skips it). Memory stays flat: a stage holds only its chunks in
flight and a bounded queue before it.

Resume is the call cache's job: a rerun recomputes every record from cached calls (no
model load when all are cached; endpoint answers are stored as they arrive), so a killed
run pays again at most for the requests in flight.

    results = stream(load_sources(cfg.source), [Step("induce", fn, [model]), ...],
                     RunDir("runs/quick"), total=100)
    result = run_stage(Step("filter", fn, [expert]), records, RunDir("runs/quick"))
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .funnel import new_counts, tally
from .io import dump_line, read_jsonl
from .llm.cache import CachedBackend
from .progress import Bar, stages_progress, within
from .records import Record
from .rundir import RunDir

log = logging.getLogger("saferinstruct")

CHUNK = 16
"""Records per chunk: a local model sorts and batches them; for an endpoint role, small
enough that records flow on soon, big enough that the local work of a stage (embeddings
of the pair checks and the refusal classifier) runs in batches (benchmarks/throughput.py)."""
_END = object()
"""End of a stage's input."""
_POLL_S = 0.1


@dataclass
class Step:
    """One stage: its name, `fn(chunk) -> chunk` (records in, the same records out, in
    order; None passes them through) and the backends it calls."""

    name: str
    fn: Callable[[list[Record]], list[Record]] | None
    backends: list[CachedBackend] = field(default_factory=list)


@dataclass
class Flow:
    """How records move. `serial`: one chunk at a time, stage after stage (the runner
    before streaming; benchmarks compare against it). `chunk`: records per chunk (None:
    `plan` chooses)."""

    serial: bool = False
    chunk: int | None = None


@dataclass
class StageResult:
    """What one stage did: `counts` (`funnel.tally`: in, kept and dropped at this
    stage), `n_records` (every record it wrote, those dropped earlier included), time and
    model calls."""

    name: str
    path: Path
    counts: dict[str, int]
    n_records: int
    seconds: float
    calls: dict[str, Any] = field(default_factory=dict)

    @property
    def n_in(self) -> int:
        """Records that reached this stage (kept before it)."""
        return self.counts["in"]

    @property
    def records(self) -> list[Record]:
        """The stage's records, read back from its file."""
        return list(read_jsonl(self.path))

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            **self.counts,
            "records": self.n_records,
            "seconds": round(self.seconds, 2),
            **self.calls,
        }


def plan(backends: list[CachedBackend], flow: Flow) -> tuple[int, int]:
    """(records per chunk, chunks in flight) for a stage: chunks of 16 records; for an
    endpoint role enough of them to fill twice its request slots, for a local model one
    at a time."""
    slots = max([getattr(b.inner, "max_concurrency", 0) for b in backends] + [0])
    chunk = flow.chunk or CHUNK
    if flow.serial or not slots:
        return chunk, 1
    return chunk, max(1, -(-2 * slots // chunk))


def run_stage(step: Step, records: Iterable[Record], run: RunDir, *,
              total: int | None = None) -> StageResult:  # fmt: skip
    """One stage on its own (a stage command): `stream` with one step."""
    return stream(records, [step], run, total=total)[0]


def stream(records: Iterable[Record], steps: list[Step], run: RunDir, *,
           total: int | None = None, flow: Flow | None = None) -> list[StageResult]:  # fmt: skip
    """Run the steps over `records`, each record going on as soon as its chunk is done;
    writes every stage file; returns each stage's counts. The first failure (an endpoint
    down, bad input, a bug) stops every stage and is raised here; the stage files keep
    the lines finished before it."""
    flow = flow or Flow()
    if flow.serial and len(steps) > 1:  # stage after stage, each one chunk at a time
        results = []
        for step in steps:
            results += stream(records, [step], run, total=total, flow=flow)
            records = read_jsonl(results[-1].path)
        return results
    with stages_progress([s.name for s in steps], total) as bars:
        stages = [_Stage(step, run.stage(step.name), bars[step.name], flow) for step in steps]
        return _Pipeline(stages).run(iter(records))


class _Failed(Exception):
    """Raised in a worker when another stage has failed: unwind quietly."""


@dataclass
class _Stage:
    """A stage's state while it streams: its input queue, its file, its chunks in flight."""

    step: Step
    path: Path
    bar: Bar
    flow: Flow
    inbox: queue.Queue = field(init=False)
    pending: queue.Queue = field(init=False)
    pool: ThreadPoolExecutor = field(init=False)
    counts: dict[str, int] = field(default_factory=new_counts)
    n_records: int = 0
    start: float = field(default_factory=time.time)
    end: float = 0.0

    def __post_init__(self) -> None:
        self.chunk, self.parallel = plan(self.step.backends, self.flow)
        self.inbox = queue.Queue(maxsize=2 * self.chunk * self.parallel)
        self.pending = queue.Queue(maxsize=2 * self.parallel)
        self.pool = ThreadPoolExecutor(self.parallel, thread_name_prefix=f"stage-{self.step.name}")
        self.bar.counts.update(_zero_counts(self.step.backends))

    def result(self) -> StageResult:
        calls = dict(self.bar.counts)
        return StageResult(self.step.name, self.path, self.counts, self.n_records,
                           self.end - self.start, calls)  # fmt: skip


def _zero_counts(backends: list[CachedBackend]) -> dict[str, int]:
    """The counts every stage reports, at 0: calls answered from the cache and made,
    failed ones, and the tokens in and out of every call the stage needed, answered from
    the cache or not (what a cold run pays; `run --estimate` scales them). Endpoints add
    HTTP attempts and the tokens they were paid for (`prompt_tokens`, ...)."""
    keys = ["cache_hits", "model_calls", "failed_calls", "tokens_in", "tokens_out"]
    if any(b.usage() for b in backends):
        keys += ["http_attempts", "http_retries", "prompt_tokens", "completion_tokens"]
    return dict.fromkeys(keys, 0)


class _Pipeline:
    """The threads of a streamed run: per stage a feeder (input -> chunks submitted in
    order) and a releaser (chunks, in order -> file and next stage)."""

    def __init__(self, stages: list[_Stage]) -> None:
        self.stages = stages
        self.failure: BaseException | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self, source: Iterator[Record]) -> list[StageResult]:
        threads = []
        for i, stage in enumerate(self.stages):
            feed = source if i == 0 else self._drain(stage.inbox)
            following = self.stages[i + 1] if i + 1 < len(self.stages) else None
            threads.append(self._thread(f"feed-{stage.step.name}", self._feed, stage, feed))
            threads.append(self._thread(f"release-{stage.step.name}", self._release, stage,
                                        following))  # fmt: skip
        try:
            for t in threads:
                while t.is_alive():
                    t.join(_POLL_S)
        except BaseException as exc:  # Ctrl-C: stop the workers, then go
            self._fail(exc)
            raise
        finally:
            for stage in self.stages:
                stage.pool.shutdown(wait=False, cancel_futures=True)
        if self.failure is not None:
            raise self.failure
        results = [stage.result() for stage in self.stages]
        for result in results:
            log.info("stage %s: %s", result.name, json.dumps(result.summary()))
        return results

    def _thread(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        def guarded() -> None:
            try:
                target(*args)
            except _Failed:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self._fail(exc)

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = exc
        self.stop.set()

    def _put(self, q: queue.Queue, item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue
        raise _Failed

    def _get(self, q: queue.Queue) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        raise _Failed

    def _drain(self, q: queue.Queue) -> Iterator[Record]:
        while (item := self._get(q)) is not _END:
            yield item

    def _feed(self, stage: _Stage, records: Iterator[Record]) -> None:
        """Cut the input into chunks and submit them, in order, at most `parallel` ahead."""
        chunk: list[Record] = []
        for record in records:
            if self.stop.is_set():
                raise _Failed
            chunk.append(record)
            if len(chunk) == stage.chunk:
                self._put(stage.pending, self._submit(stage, chunk))
                chunk = []
        if chunk:
            self._put(stage.pending, self._submit(stage, chunk))
        self._put(stage.pending, _END)

    def _submit(self, stage: _Stage, chunk: list[Record]) -> Future:
        def work() -> list[Record]:
            if stage.step.fn is None:
                return chunk
            with within(stage.bar):
                return stage.step.fn(chunk)

        future = stage.pool.submit(work)
        future.add_done_callback(self._failed_chunk)
        return future

    def _failed_chunk(self, future: Future) -> None:
        """Stop every stage at once when a chunk fails (not when its turn to be written
        comes)."""
        error = None if future.cancelled() else future.exception()
        if error is not None:
            self._fail(error)

    def _release(self, stage: _Stage, following: _Stage | None) -> None:
        """Take the chunks in order: append them to the stage file, hand them on."""
        with _appended(stage.path) as out:
            while (future := self._get(stage.pending)) is not _END:
                while not future.done():
                    if self.stop.wait(_POLL_S):
                        raise _Failed
                done = future.result()
                out.write("".join(map(dump_line, done)))
                out.flush()
                stage.n_records += len(done)
                for record in done:
                    tally(stage.counts, record, stage.step.name)
                stage.bar.advance(len(done), hits=stage.bar.counts["cache_hits"])
                if following is not None:
                    for record in done:
                        self._put(following.inbox, record)
            stage.end = time.time()
        if following is not None:
            self._put(following.inbox, _END)


@contextmanager
def _appended(path: Path) -> Iterator[IO[str]]:
    """The stage file, started empty and appended in order; fsynced when the stage ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        try:
            yield out
        finally:
            out.flush()
            os.fsync(out.fileno())
