"""A rich progress bar on stderr, exposed as an update(done, total, label) callback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int, int, str], None]]:
    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[label]}"),
        console=console, transient=False, disable=not console.is_terminal and False,
    ) as bar:
        task = bar.add_task(description, total=total, label="")

        def update(done: int, total_now: int, label: str = "") -> None:
            bar.update(task, completed=done, total=total_now, label=label)

        yield update
