"""Boot assessment: run the health checks, then commit, count a failure, or roll back.

The attempt is counted *before* the checks run (as a boot loader's boot counter is
decremented before it boots), so a check that hangs or a crash mid-check still counts
as a failed boot instead of leaving the device stuck on a bad release forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops.device.config import HealthCheck

SLOT_ENV = "COSGITOPS_SLOT"
_OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    exit_code: int | None
    seconds: float
    output: str = ""
    timed_out: bool = False
    error: str = ""

    def describe(self) -> str:
        if self.passed:
            return f"{self.name}: passed"
        if self.timed_out:
            return f"{self.name}: timed out after {self.seconds:.1f}s"
        if self.error:
            return f"{self.name}: {self.error}"
        return f"{self.name}: failed with exit code {self.exit_code}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "exitCode": self.exit_code,
            "seconds": round(self.seconds, 3),
            "timedOut": self.timed_out,
            "error": self.error,
            "output": self.output,
        }


def run_health_check(
    check: HealthCheck, slot: Path, *, max_timeout: float, env: Mapping[str, str] | None = None
) -> CheckResult:
    """Run one check with its working directory at ``slot`` and a hard time limit."""
    argv: Sequence[str] = (
        ["/bin/sh", "-c", check.command] if isinstance(check.command, str) else check.command
    )
    timeout = min(check.timeout_seconds, max_timeout)
    environment = dict(os.environ if env is None else env)
    environment[SLOT_ENV] = str(slot)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            list(argv),
            cwd=slot,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a timeout kills the check's children too
        )
    except OSError as exc:
        return CheckResult(check.name, False, None, 0.0, error=f"cannot run {argv[0]!r}: {exc}")
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return CheckResult(
            check.name,
            False,
            None,
            time.monotonic() - started,
            output.decode(errors="replace")[-_OUTPUT_TAIL:],
            timed_out=True,
        )
    seconds = time.monotonic() - started
    text = output.decode(errors="replace")[-_OUTPUT_TAIL:]
    return CheckResult(check.name, process.returncode == 0, process.returncode, seconds, text)


def run_health_checks(
    checks: Sequence[HealthCheck], slot: Path, *, max_timeout: float
) -> list[CheckResult]:
    """All checks in order; every check runs even after one fails, for the report."""
    return [run_health_check(check, slot, max_timeout=max_timeout) for check in checks]


def boot_outcome(passed: bool, attempts: int, max_attempts: int) -> str:
    """commit | retry | rollback, for a boot that was attempt number ``attempts``."""
    if passed:
        return "commit"
    return "rollback" if attempts >= max_attempts else "retry"
