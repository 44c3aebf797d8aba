from __future__ import annotations

import time
from pathlib import Path

from cosgitops.device.boot import boot_outcome, run_health_check, run_health_checks
from cosgitops.device.config import HealthCheck


def test_checks_run_in_the_slot_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ok").write_text("yes")
    results = run_health_checks(
        [
            HealthCheck("file", ("test", "-f", "etc/ok")),
            HealthCheck("env", 'test "$COSGITOPS_SLOT" = "$PWD" && echo slot=$COSGITOPS_SLOT'),
            HealthCheck("broken", "test ! -e etc/ok || { echo found it; exit 3; }"),
        ],
        tmp_path,
        max_timeout=10,
    )
    assert [r.passed for r in results] == [True, True, False]
    assert f"slot={tmp_path}" in results[1].output
    assert results[2].exit_code == 3 and "found it" in results[2].output
    assert results[2].describe() == "broken: failed with exit code 3"


def test_timeouts_kill_the_whole_check(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_health_check(
        HealthCheck("hang", "sleep 30 & sleep 30", timeout_seconds=30), tmp_path, max_timeout=0.5
    )
    assert time.monotonic() - started < 10
    assert not result.passed and result.timed_out
    assert "timed out" in result.describe()


def test_missing_program_fails_cleanly(tmp_path: Path) -> None:
    result = run_health_check(HealthCheck("x", ("/nonexistent/check",)), tmp_path, max_timeout=5)
    assert not result.passed and "cannot run" in result.error


def test_outcomes() -> None:
    assert boot_outcome(True, 3, 3) == "commit"
    assert boot_outcome(False, 1, 3) == "retry"
    assert boot_outcome(False, 3, 3) == "rollback"
    assert boot_outcome(False, 4, 3) == "rollback"
