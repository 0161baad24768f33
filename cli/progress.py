"""A rich progress bar on stderr, exposed as an update(done, total, label) callback, or as a
progress(fraction, message) callback for stages that report a fraction (models.hooks.Hooks.progress)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

FRACTION_STEPS = 1000  # a fraction bar counts in thousandths


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int, int, str], None]]:
    # rich draws live only on a terminal; elsewhere it prints the bar once, when it stops
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[label]}"),
        console=Console(file=sys.stderr), transient=False,
    ) as bar:
        task = bar.add_task(description, total=total, label="")

        def update(done: int, total_now: int, label: str = "") -> None:
            bar.update(task, completed=done, total=total_now, label=label)

        yield update


@contextmanager
def fraction_bar(description: str, label: str = "") -> Iterator[Callable[..., None]]:
    """A bar fed fractions in [0, 1]: yields progress(fraction, message=label), e.g. Hooks(progress=...)."""
    with progress_bar(description, FRACTION_STEPS) as update:

        def progress(fraction: float, message: str = label) -> None:
            update(int(fraction * FRACTION_STEPS), FRACTION_STEPS, message)

        yield progress
