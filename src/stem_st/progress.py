"""Progress on every long phase: one look for the whole package, quiet in a notebook.

rich draws live bars in a terminal. In a Jupyter kernel it would draw them as widgets, and warns
on every bar when ``ipywidgets`` is missing; there, bars are drawn as plain text instead, each
printed once when its phase ends. Outside a terminal (a log file, CI) rich prints each bar
once, at the end of its phase, too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn

Advance = Callable[[int], None]


def console() -> Console:
    """rich's console, or a plain-text one in a Jupyter kernel (no widgets, no warning)."""
    plain = Console()
    return Console(force_jupyter=False) if plain.is_jupyter else plain


def progress_bar(*extra: ProgressColumn, enabled: bool = True) -> Progress:
    """A bar per task: its description, the bar, done/total, ``extra`` columns, time left."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
                    TimeRemainingColumn(), console=console(), disable=not enabled)


@contextmanager
def phase(description: str, total: int, enabled: bool = True) -> Iterator[Advance]:
    """A bar for one phase of ``total`` units; yields ``advance(n)``."""
    with progress_bar(enabled=enabled) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
