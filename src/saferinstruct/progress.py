"""Progress on stderr: one rich bar per stage (done/total, rate, ETA, cache hits).

Never prints record text: only stage names and counts.

    with stage_progress("induce", total=64) as bar:
        bar.advance(16, hits=cache.stats.hits)
"""

from __future__ import annotations

import logging
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
    TimeRemainingColumn,
)
from rich.text import Text

log = logging.getLogger("saferinstruct")
_console: Console | None = None


class RateColumn(ProgressColumn):
    """Records per second."""

    def render(self, task: Any) -> Text:
        elapsed = task.finished_time or task.elapsed
        if not elapsed or not task.completed:
            return Text("- rec/s")
        return Text(f"{task.completed / elapsed:.2f} rec/s")


def console() -> Console:
    """The stderr console all logs and bars share (stdout is for results)."""
    global _console
    if _console is None:
        _console = Console(stderr=True)
    return _console


@dataclass
class Bar:
    """Advance a live bar (terminal) or log a line at most every 30 s (pipes, CI logs)."""

    progress: Progress | None
    task: Any
    name: str = ""
    total: int | None = None
    done: int = 0
    start: float = field(default_factory=time.time)
    last_line: float = field(default_factory=time.time)

    def advance(self, n: int, **fields: Any) -> None:
        self.done += n
        if self.progress is not None:
            self.progress.update(self.task, advance=n, **fields)
            return
        now = time.time()
        if now - self.last_line >= 30:
            self.last_line = now
            rate = self.done / max(now - self.start, 1e-9)
            hits = fields.get("hits", 0)
            log.info("%s: %d/%s done, %.2f rec/s, cache hits %s", self.name, self.done,
                     self.total if self.total is not None else "?", rate, hits)  # fmt: skip


@contextmanager
def stage_progress(name: str, total: int | None) -> Iterator[Bar]:
    """A live bar on a terminal; on a pipe, periodic log lines (no bar leftovers)."""
    if not console().is_terminal:
        yield Bar(None, None, name, total)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("cache hits {task.fields[hits]}"),
        console=console(),
        transient=False,
    )
    with progress:
        task = progress.add_task(name, total=total, hits=0)
        yield Bar(progress, task, name, total)
