"""cosgitops.fsutil.file_lock: the one file lock every part uses (OCI layouts, the
publisher, the device agent), tested across real processes."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cosgitops.errors import CosgitopsError, UsageError
from cosgitops.fsutil import file_lock

PACKAGE = Path(__file__).resolve().parent.parent / "cosgitops"


def _holder(lock: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process that takes the lock, says so on stdout and holds it."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from cosgitops.fsutil import file_lock
        with file_lock(Path({str(lock)!r}), timeout=5):
            print("held", flush=True)
            time.sleep({seconds})
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def _busy(path: Path) -> CosgitopsError:
    return UsageError(f"{path} is busy", hint="wait")


def test_lock_is_created_with_its_folder_and_held(tmp_path: Path) -> None:
    lock = tmp_path / "deep" / "folder" / "x.lock"
    with file_lock(lock, timeout=0, busy=_busy, mode=0o600) as held:
        assert held is True
        assert lock.is_file() and lock.stat().st_size == 0
        assert lock.stat().st_mode & 0o777 == 0o600
    assert lock.exists()  # left in place: removing it would race with a waiter


def test_a_busy_lock_times_out_with_the_callers_error(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = _holder(lock, 30)
    try:
        started = time.monotonic()
        with (
            pytest.raises(UsageError, match=re.escape(f"{lock} is busy")) as caught,
            file_lock(lock, timeout=0.3, busy=_busy),
        ):
            pytest.fail("the lock was held by the other process")
        waited = time.monotonic() - started
        assert 0.3 <= waited < 5
        assert caught.value.hint == "wait"
        # Without an error the caller is told, and runs without the lock.
        with file_lock(lock, timeout=0) as held:
            assert held is False
    finally:
        holder.kill()
        holder.wait()


def test_a_waiter_gets_the_lock_once_the_holder_is_done(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = _holder(lock, 0.5)
    try:
        with file_lock(lock, timeout=10, busy=_busy) as held:
            assert held is True
            assert holder.poll() is not None  # it had to finish first
    finally:
        holder.wait()


def test_a_killed_holder_never_wedges_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = _holder(lock, 60)
    holder.kill()
    holder.wait()
    with file_lock(lock, timeout=0, busy=_busy) as held:
        assert held is True


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with pytest.raises(RuntimeError), file_lock(lock, timeout=0, busy=_busy):
        raise RuntimeError("boom")
    with file_lock(lock, timeout=0, busy=_busy) as held:
        assert held is True


def test_only_fsutil_takes_file_locks() -> None:
    """One helper, not one deadline loop per part."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "fsutil.py" and re.search(r"\bflock\(|\blockf\(", path.read_text())
    ]
    assert offenders == []
