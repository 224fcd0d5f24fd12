"""Progress on stderr: one bar per stage (records done, model calls, rate, ETA, cache hits).

Records advance as the runner finishes them; model calls advance inside them, as the
backends report (`report_calls`: the local backend at every decoding step, an endpoint at
every answer, the cache at every hit), so a long batch still moves and `respond` shows
its tries (calls per record). On a terminal a live bar; on a pipe or in a CI log, a line
at most every 30 s with the same figures and an ETA. Never prints record text.

Stages run at once in a streamed run, so a backend reports to the bar of the stage whose
work it is doing: the runner sets it around each chunk (`within(bar)`; the endpoint
backend carries it into its request threads). The bar also tallies that stage's call
counts (`count`: cache hits, model calls, HTTP attempts, tokens) for the funnel.

    with stages_progress(["induce", "filter"], total=64) as bars:
        with within(bars["induce"]):
            report_calls(8)                     # from a backend, any thread
            count("cache_hits", 3)
        bars["induce"].advance(16)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

log = logging.getLogger("saferinstruct")
LINE_EVERY_S = 30.0
_console: Console | None = None
_active: Bar | None = None
_lock = threading.Lock()
_current: ContextVar[Bar | None] = ContextVar("saferinstruct_bar", default=None)


def console() -> Console:
    """The stderr console all logs and bars share (stdout is for results)."""
    global _console
    if _console is None:
        _console = Console(stderr=True)
    return _console


def _bar() -> Bar | None:
    """The bar of the stage this thread works for, else the one active bar."""
    bar = _current.get()
    if bar is None:
        with _lock:
            bar = _active
    return bar


def report_calls(n: float) -> None:
    """Backends call this as model calls finish (a fraction for part of a batch)."""
    bar = _bar()
    if bar is not None:
        bar.calls_done(n)


def count(key: str, n: int = 1) -> None:
    """Add to the current stage's tally of `key` (cache_hits, model_calls, http_attempts...)."""
    bar = _bar()
    if bar is not None:
        with bar.lock:
            bar.counts[key] += n


@contextmanager
def within(bar: Bar | None) -> Iterator[None]:
    """Work done in this block (this thread, and the request threads it starts) reports
    to `bar`."""
    token = _current.set(bar)
    try:
        yield
    finally:
        _current.reset(token)


def eta_seconds(elapsed: float, done: int, total: int | None, calls: float) -> float | None:
    """Time left, from records done and (inside a batch) calls made: the expected calls
    are the records times the calls per record seen so far (at least one each); unknown
    while no record is done and the calls already exceed one per record."""
    if not total or elapsed <= 0:
        return None
    if not done and calls >= total:  # beyond one call per record (tries): not known yet
        return None
    per_record = max(1.0, calls / done) if done else 1.0
    frac = max(done / total, min(calls / (total * per_record), 0.999))
    return None if frac <= 0 else elapsed * (1 - frac) / frac


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s")  # fmt: skip


class FiguresColumn(ProgressColumn):
    """Records per second, model calls (and per record), ETA."""

    def render(self, task: Any) -> Text:
        elapsed = task.elapsed or 0.0
        calls = task.fields.get("calls", 0.0)
        rate = f"{task.completed / elapsed:.2f} rec/s" if elapsed and task.completed else "- rec/s"
        per = f" ({calls / task.completed:.1f}/record)" if task.completed else ""
        eta = _clock(eta_seconds(elapsed, int(task.completed), task.total, calls))
        return Text(f"{rate}, {calls:.0f} calls{per}, ETA {eta}")


@dataclass
class Bar:
    """Advance a live bar (terminal) or log a line at most every 30 s (pipes, CI logs)."""

    progress: Progress | None
    task: Any
    name: str = ""
    total: int | None = None
    done: int = 0
    calls: float = 0.0
    hits: int = 0
    start: float = field(default_factory=time.time)
    last_line: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter[str] = field(default_factory=Counter)

    def advance(self, n: int, **fields: Any) -> None:
        with self.lock:
            self.done += n
            self.hits = fields.get("hits", self.hits)
        self._show(advance=n, **fields)

    def calls_done(self, n: float) -> None:
        with self.lock:
            self.calls += n
        self._show()

    def _show(self, advance: int = 0, **fields: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=advance, calls=self.calls, **fields)
            return
        now = time.time()
        with self.lock:
            if now - self.last_line < LINE_EVERY_S:
                return
            self.last_line = now
        log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The piped progress line: records, calls (per record), rate, ETA, cache hits."""
        elapsed = (now or time.time()) - self.start
        per = f" ({self.calls / self.done:.1f}/record)" if self.done else ""
        eta = _clock(eta_seconds(elapsed, self.done, self.total, self.calls))
        total = self.total if self.total is not None else "?"
        return (f"{self.name}: {self.done}/{total} records, {self.calls:.0f} model calls{per}, "
                f"{self.done / max(elapsed, 1e-9):.2f} rec/s, ETA {eta}, "
                f"cache hits {self.hits}")  # fmt: skip


@contextmanager
def stages_progress(names: list[str], total: int | None) -> Iterator[dict[str, Bar]]:
    """A live bar per stage on a terminal; on a pipe, periodic log lines (no bar
    leftovers). With one stage, its bar is the active one: `report_calls` from any thread
    feeds it; with several, the runner says which (`within`)."""
    global _active
    progress = None
    if console().is_terminal:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            FiguresColumn(),
            TimeElapsedColumn(),
            TextColumn("cache hits {task.fields[hits]}"),
            console=console(),
            transient=False,
        )
    try:
        if progress is not None:
            progress.start()
        bars = {name: _new_bar(progress, name, total) for name in names}
        if len(bars) == 1:
            with _lock:
                _active = bars[names[0]]
        yield bars
    finally:
        with _lock:
            _active = None
        if progress is not None:
            progress.stop()


def _new_bar(progress: Progress | None, name: str, total: int | None) -> Bar:
    if progress is None:
        return Bar(None, None, name, total)
    return Bar(progress, progress.add_task(name, total=total, hits=0, calls=0.0), name, total)
