"""Rich progress bars on stderr: a bar the caller advances (`task`), or bars driven by (stage, done, total) callbacks.

`RichProgress` turns callbacks such as evaluate_safety's into one bar per stage,
shown from the first callback on. The module imports rich only (never torch),
so any command can use it at no cost.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
StageProgress = Callable[[str, int, int], None]  # (stage, done, total) callbacks, as RichProgress takes them


def _bars(counter: ProgressColumn) -> Progress:
    """Description, bar, counter, elapsed time and the estimate of time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        counter,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def task(description: str, total: float, enabled: bool, unit: str = "items") -> Iterator[Callable[[float], None]]:
    """Yield advance(n); shows a bar with elapsed and remaining time when enabled."""
    if not enabled or not console.is_terminal:  # no bars in logs and pipes: errors stay one line
        yield lambda n=1: None
        return
    with _bars(DownloadColumn() if unit == "bytes" else MofNCompleteColumn()) as progress:
        tid = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(tid, n)


class RichProgress:
    """Turns (stage, done, total) callbacks into one Rich bar per stage.

    The bars appear at the first callback, so a run with nothing to do (all of it
    cached) shows none. Use it as a context manager, which stops the display.
    """

    def __init__(self, labels: dict[str, str] | None = None):
        self.labels = {"generate": "Generating", "judge": "Judging"} if labels is None else labels
        self.progress = _bars(MofNCompleteColumn())
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int, description: str | None = None) -> None:
        if not self.tasks:
            self.progress.start()  # only once there is work: a fully cached run shows no bars
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(self.labels.get(stage, stage), total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total,
                             **({"description": description} if description is not None else {}))

    def __enter__(self) -> "RichProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self.tasks:
            self.progress.stop()
