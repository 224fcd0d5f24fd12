"""Progress on stderr: one rich bar per stage (done/total, rate, ETA, cache hits).

Never prints record text: only stage names and counts.

    with stage_progress("induce", total=64) as bar:
        bar.advance(16, hits=cache.stats.hits)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    progress: Progress | None
    task: Any

    def advance(self, n: int, **fields: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=n, **fields)


@contextmanager
def stage_progress(name: str, total: int | None) -> Iterator[Bar]:
    if not sys.stderr.isatty() and total is not None and total == 0:
        yield Bar(None, None)
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
        yield Bar(progress, task)
