"""Running a boot test as named steps: each one timed, reported while it runs, and
recorded with its outcome; the first failure skips the rest.

A step fails by raising :class:`StepFailed` (what went wrong, in the guest's words) or
any :class:`~cosgitops.errors.CosgitopsError`; anything else is a bug and propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cosgitops.boottest.predicate import StepResult
from cosgitops.errors import CosgitopsError
from cosgitops.progress import NULL_PROGRESS, Progress


class StepFailed(CosgitopsError):
    """A boot-test step did not do what it must; the message says what happened."""


@dataclass
class StepContext:
    """What a running step may record about itself."""

    name: str
    detail: str = ""
    serial_log: Path | None = None  # the console log of the boot this step watched


@dataclass
class StepRunner:
    progress: Progress = NULL_PROGRESS
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    results: list[StepResult] = field(default_factory=list)
    failure: CosgitopsError | None = None
    failed_log: Path | None = None

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def _now(self) -> float:
        return float(self.clock())

    @contextmanager
    def step(self, name: str, description: str) -> Iterator[StepContext | None]:
        """Run the body as step ``name``; yields None (and records a skip) once a
        previous step failed, so callers write ``if ctx is None: return``."""
        if self.failed:
            self.results.append(StepResult(name, "skipped"))
            yield None
            return
        context = StepContext(name)
        number = len(self.results) + 1
        self.progress.note(f"[{number}] {name}: {description}")
        started = self._now()
        try:
            yield context
        except CosgitopsError as error:
            elapsed = self._now() - started
            self.failure = error
            self.failed_log = context.serial_log
            detail = error.message
            self.results.append(
                StepResult(name, "failed", elapsed, detail, _log_name(context.serial_log))
            )
            where = f" (serial log {context.serial_log})" if context.serial_log else ""
            self.progress.note(f"[{number}] {name}: FAILED after {elapsed:.1f}s: {detail}{where}")
            return
        elapsed = self._now() - started
        self.results.append(
            StepResult(name, "passed", elapsed, context.detail, _log_name(context.serial_log))
        )
        detail = f": {context.detail}" if context.detail else ""
        self.progress.note(f"[{number}] {name}: passed in {elapsed:.1f}s{detail}")

    def skip_rest(self, names: tuple[str, ...]) -> None:
        """Record the steps that never started (after a failure) as skipped."""
        done = {result.name for result in self.results}
        for name in names:
            if name not in done:
                self.results.append(StepResult(name, "skipped"))


def _log_name(path: Path | None) -> str | None:
    return None if path is None else path.name
