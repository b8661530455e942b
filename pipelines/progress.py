"""Progress display for long work: a bar with bytes, rows and ETA per ingest, a spinner with
the elapsed time per stage (rich, on stderr).

Shown only on an interactive terminal: quiet under `redflags --quiet` and whenever stderr is
not a TTY (scheduled runs, CI, pipes), where the one line per stage and per file stays the
record. Counts only, never row contents (the privacy rule of the logs applies here too).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_state: dict[str, Any] = {"quiet": False, "live": None}


def set_quiet(quiet: bool) -> None:
    """`redflags --quiet`: no progress display, whatever the terminal."""
    _state["quiet"] = bool(quiet)


def enabled() -> bool:
    return not _state["quiet"] and sys.stderr.isatty()


class _Task:
    """One line of the display; every method is a no-op when the display is off."""

    def __init__(self, progress: Any = None, task_id: Any = None) -> None:
        self._progress, self._id, self.rows = progress, task_id, 0

    def advance(self, amount: int = 0, rows: int = 0) -> None:
        self.rows += rows
        if self._progress is not None:
            self._progress.update(self._id, advance=amount, rows=f"{self.rows:,} rows")


@contextmanager
def _display() -> Iterator[Any]:
    """The one live display of this process (rich allows one): reused when already shown."""
    if _state["live"] is not None:
        yield _state["live"]
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,  # the bars go when done; the log lines stay
    )
    _state["live"] = progress
    try:
        with progress:
            yield progress
    finally:
        _state["live"] = None


@contextmanager
def track(description: str, total_bytes: int | None = None) -> Iterator[_Task]:
    """A line for `description`: a bar over `total_bytes` (with ETA) or, without a total,
    a spinner with the elapsed time. Yields a task to `advance(bytes, rows)`."""
    if not enabled():
        yield _Task()
        return
    with _display() as progress:
        task_id = progress.add_task(description, total=total_bytes, rows="")
        try:
            yield _Task(progress, task_id)
        finally:
            progress.remove_task(task_id)
