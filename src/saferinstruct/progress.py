"""Progress on stderr: one bar per stage (records done, model calls, rate, ETA, cache hits).

Records advance as the runner finishes them; model calls advance inside them, as the
backends report (`report_calls`: the local backend at every decoding step, an endpoint at
every answer, the cache at every hit), so a long batch still moves and `respond` shows
its tries (calls per record). On a terminal a live bar; on a pipe or in a CI log, a line
at most every 30 s with the same figures and an ETA. Never prints record text.

    with stage_progress("induce", total=64) as bar:
        report_calls(8)                         # from a backend, any thread
        bar.advance(16, hits=cache.stats.hits)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def console() -> Console:
    """The stderr console all logs and bars share (stdout is for results)."""
    global _console
    if _console is None:
        _console = Console(stderr=True)
    return _console


def report_calls(n: float) -> None:
    """Backends call this as model calls finish (a fraction for part of a batch)."""
    with _lock:
        bar = _active
    if bar is not None:
        bar.calls_done(n)


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
def stage_progress(name: str, total: int | None) -> Iterator[Bar]:
    """A live bar on a terminal; on a pipe, periodic log lines (no bar leftovers). The
    bar is the active one while the stage runs: `report_calls` feeds it."""
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
        if progress is None:
            bar = Bar(None, None, name, total)
        else:
            progress.start()
            bar = Bar(progress, progress.add_task(name, total=total, hits=0, calls=0.0),
                      name, total)  # fmt: skip
        with _lock:
            _active = bar
        yield bar
    finally:
        with _lock:
            _active = None
        if progress is not None:
            progress.stop()
