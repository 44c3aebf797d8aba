"""Every source file is linted and every test file is collected.

ruff's default exclude list and pytest's default ``norecursedirs`` both skip folders
named like build output (``build``, ``dist``); a package or test folder with such a
name silently drops out of lint and test runs. These tests compare what the tools
actually see with what is on disk.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LINTED_TREES = ("cosgitops", "tests", "bench")


def _python_files(*trees: str) -> set[str]:
    return {
        path.relative_to(PROJECT_ROOT).as_posix()
        for tree in trees
        for path in (PROJECT_ROOT / tree).rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_ruff_lints_every_python_file() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.fail("ruff is not installed in the test environment (pip install -e '.[test]')")
    result = subprocess.run(
        [str(ruff), "check", "--show-files", *LINTED_TREES],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    seen = {
        Path(line.strip()).resolve().relative_to(PROJECT_ROOT).as_posix()
        for line in result.stdout.splitlines()
        if line.strip().endswith(".py")
    }
    missing = sorted(_python_files(*LINTED_TREES) - seen)
    assert not missing, f"ruff never checks: {missing[:10]}"


def test_pytest_collects_every_test_file() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    collected = {line.split("::", 1)[0] for line in result.stdout.splitlines() if "::" in line}
    on_disk = {
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in (PROJECT_ROOT / "tests").rglob("test_*.py")
    }
    missing = sorted(on_disk - collected)
    assert not missing, f"pytest never collects: {missing[:10]}"


def test_no_package_or_test_folder_is_named_like_build_output() -> None:
    build_like = {"build", "dist", "_build"}
    offenders = sorted(
        path.relative_to(PROJECT_ROOT).as_posix()
        for tree in ("cosgitops", "tests", "bench")
        for path in (PROJECT_ROOT / tree).rglob("*")
        if path.is_dir() and path.name in build_like
    )
    assert not offenders, f"folders that ruff or pytest skip by default: {offenders}"
