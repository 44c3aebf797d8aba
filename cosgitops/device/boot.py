"""Boot assessment: run the health checks, then commit, count a failure, or roll back.

The attempt is counted *before* the checks run (as a boot loader's boot counter is
decremented before it boots), so a check that hangs or a crash mid-check still counts
as a failed boot instead of leaving the device stuck on a bad release forever.

Each check runs in its own process group. Its verdict is its own exit status within
its limit: the agent never waits for the check's output pipe to close (a child that
left for a session of its own may hold it for ever), kills the whole group at the
limit and when the check ends, and keeps only the tail of the output in a bounded
buffer (``Limits.health_check_output_bytes``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops.device.config import HealthCheck

SLOT_ENV = "COSGITOPS_SLOT"
_OUTPUT_TAIL = 2000  # characters kept in the report
_READ = 64 * 1024
_DRAIN_SECONDS = 0.2  # after the check exits, how long to collect what it already wrote


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    exit_code: int | None
    seconds: float
    output: str = ""
    timed_out: bool = False
    error: str = ""
    limit: float = 0.0  # the time limit it ran under, in seconds

    def describe(self) -> str:
        if self.passed:
            return f"{self.name}: passed"
        if self.timed_out:
            return f"{self.name}: timed out (its limit is {self.limit:g}s)"
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
            "limitSeconds": self.limit,
            "error": self.error,
            "output": self.output,
        }


class _Tail:
    """The last ``size`` bytes of a stream, in constant memory."""

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.size:
            del self.data[: len(self.data) - self.size]

    def text(self) -> str:
        return bytes(self.data[-self.size :]).decode(errors="replace")[-_OUTPUT_TAIL:]


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_health_check(
    check: HealthCheck,
    slot: Path,
    *,
    max_timeout: float,
    env: Mapping[str, str] | None = None,
    output_bytes: int = 8192,
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
            process_group=0,  # its own group: the limit kills the check and its children
        )
    except OSError as exc:
        return CheckResult(
            check.name, False, None, 0.0, error=f"cannot run {argv[0]!r}: {exc}", limit=timeout
        )
    assert process.stdout is not None
    tail = _Tail(output_bytes)
    deadline = started + timeout
    timed_out = False
    selector = selectors.DefaultSelector()
    os.set_blocking(process.stdout.fileno(), False)
    selector.register(process.stdout, selectors.EVENT_READ)
    open_pipe = True
    try:
        while process.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not open_pipe:
                time.sleep(min(left, 0.05))
                continue
            for _key, _ in selector.select(timeout=min(left, 0.1)):
                open_pipe = _read_into(process.stdout, tail)
                if not open_pipe:
                    selector.unregister(process.stdout)
        seconds = time.monotonic() - started
        _kill_group(process.pid)  # at the limit, and whatever the check left behind
        process.wait()
        # what it wrote before it ended, without waiting for a pipe held by others
        drain_until = time.monotonic() + _DRAIN_SECONDS
        while open_pipe and time.monotonic() < drain_until:
            if not selector.select(timeout=max(drain_until - time.monotonic(), 0)):
                break
            open_pipe = _read_into(process.stdout, tail)
    finally:
        selector.close()
        process.stdout.close()
    if timed_out:
        return CheckResult(
            check.name, False, None, seconds, tail.text(), timed_out=True, limit=timeout
        )
    code = process.returncode
    return CheckResult(check.name, code == 0, code, seconds, tail.text(), limit=timeout)


def _read_into(stream: Any, tail: _Tail) -> bool:
    """Read what is there; False once the pipe is closed."""
    try:
        chunk = os.read(stream.fileno(), _READ)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    tail.add(chunk)
    return True


def run_health_checks(
    checks: Sequence[HealthCheck], slot: Path, *, max_timeout: float, output_bytes: int = 8192
) -> list[CheckResult]:
    """All checks in order; every check runs even after one fails, for the report."""
    return [
        run_health_check(check, slot, max_timeout=max_timeout, output_bytes=output_bytes)
        for check in checks
    ]


def boot_outcome(passed: bool, attempts: int, max_attempts: int) -> str:
    """commit | retry | rollback, for a boot that was attempt number ``attempts``."""
    if passed:
        return "commit"
    return "rollback" if attempts >= max_attempts else "retry"
