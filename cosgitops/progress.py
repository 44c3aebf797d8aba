"""Progress reporting that library code can use without knowing about terminals.

Library functions take an optional :class:`Progress`; the CLI passes
:func:`terminal_progress`, which draws rich bars on a TTY and prints a plain line
per finished task in CI or when piped. Tests pass nothing (``NULL_PROGRESS``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol, TextIO


class ProgressTask(Protocol):
    def advance(self, amount: int) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None = None) -> ProgressTask: ...

    def note(self, message: str) -> None: ...


class _NullTask:
    def advance(self, amount: int) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def task(self, description: str, total: int | None = None) -> ProgressTask:
        return _NullTask()

    def note(self, message: str) -> None:
        pass


NULL_PROGRESS: Progress = NullProgress()


def human_size(size: float) -> str:
    """``1.5 MiB``: sizes for people."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


class _LineTask:
    def __init__(self, stream: TextIO, description: str, total: int | None):
        self._stream = stream
        self._description = description
        self._total = total
        self._done = 0

    def advance(self, amount: int) -> None:
        self._done += amount

    def close(self) -> None:
        size = f" ({human_size(self._done)})" if self._done else ""
        print(f"{self._description}: done{size}", file=self._stream, flush=True)


class LineProgress:
    """One line per finished task: readable in CI logs, no control characters."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream or sys.stderr

    def task(self, description: str, total: int | None = None) -> ProgressTask:
        return _LineTask(self._stream, description, total)

    def note(self, message: str) -> None:
        print(message, file=self._stream, flush=True)


class _RichTask:
    def __init__(self, owner: RichProgress, task_id: Any):
        self._owner = owner
        self._task_id = task_id

    def advance(self, amount: int) -> None:
        self._owner.bars.advance(self._task_id, amount)

    def close(self) -> None:
        self._owner.finish(self._task_id)


class RichProgress:
    """Live bars on a terminal (rich is imported only when this is used)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as Bars,
        )

        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._open = 0

    def task(self, description: str, total: int | None = None) -> ProgressTask:
        if self._open == 0:
            self.bars.start()
        self._open += 1
        return _RichTask(self, self.bars.add_task(description, total=total))

    def finish(self, task_id: Any) -> None:
        task = self.bars.tasks[task_id] if isinstance(task_id, int) else None
        if task is not None and task.total is None:
            self.bars.update(task_id, total=task.completed)
        self._open -= 1
        if self._open == 0:
            self.bars.stop()

    def note(self, message: str) -> None:
        self.bars.console.print(message)


def terminal_progress(quiet: bool = False) -> Progress:
    """The right progress display for where we are running."""
    if quiet:
        return NULL_PROGRESS
    if sys.stderr.isatty() and not os.environ.get("CI"):
        return RichProgress()
    return LineProgress()
