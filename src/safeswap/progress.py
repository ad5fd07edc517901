"""Rich progress bars that the CLI turns on and the Python API leaves off by default."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@contextlib.contextmanager
def task(description: str, total: float, enabled: bool, unit: str = "items") -> Iterator[Callable[[float], None]]:
    """Yield advance(n); shows a bar with elapsed and remaining time when enabled."""
    if not enabled or not console.is_terminal:  # no bars in logs and pipes: errors stay one line
        yield lambda n=1: None
        return
    counter = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        counter,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        tid = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(tid, n)
