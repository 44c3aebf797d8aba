"""A user's clone has no ../shared: the suite collects without an error there, and the
tests that need the interop data skip with one clear reason (issue 15). Checked in a
copy of this checkout, in a folder with nothing beside it, with CI unset; and with CI
set, where a missing folder is a failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import INTEROP_MISSING, PROJECT_ROOT

# A pytest plugin for the copy: keep only the tests that use the `interop` fixture.
ONLY_INTEROP = """
def pytest_collection_modifyitems(config, items):
    keep = [item for item in items if "interop" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep
"""


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's files (tracked, and new ones not ignored) in a fresh folder."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, check=True, timeout=60,
    ).stdout.decode().split("\0")  # fmt: skip
    target = tmp_path_factory.mktemp("user") / "cosgitops"
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)
    (target / "only_interop.py").write_text(ONLY_INTEROP)
    assert not (target.parent / "shared").exists()
    return target


def _pytest(clone: Path, *args: str, ci: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_a_clone_without_shared_collects_and_skips_the_interop_tests(clone: Path) -> None:
    # The copy's own code is what runs (the editable install points elsewhere).
    imported = subprocess.run(
        [sys.executable, "-c", "import cosgitops, tests.conftest as c; print(cosgitops.__file__)"],
        cwd=clone, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert Path(imported).is_relative_to(clone)

    collected = _pytest(clone, "--collect-only", "-q")
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert not re.search(r"\berrors?\b", collected.stdout.splitlines()[-1])
    assert "ERROR" not in collected.stdout

    report = clone / "interop.xml"
    ran = _pytest(clone, "-p", "only_interop", "-rs", "-q", f"--junitxml={report}")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    cases = ET.parse(report).getroot().findall(".//testcase")
    assert len(cases) >= 30  # the cosign, Sigstore, yip and Elemental interop tests
    for case in cases:
        outcomes = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        assert outcomes == ["skipped"], f"{case.get('classname')}.{case.get('name')}: {outcomes}"
        assert case.find("skipped").get("message") == INTEROP_MISSING  # type: ignore[union-attr]
    # -rs names the reason once per group, and nothing else skipped or failed.
    summary = [line for line in ran.stdout.splitlines() if line.startswith("SKIPPED")]
    assert summary and all(line.endswith(f": {INTEROP_MISSING}") for line in summary)
    assert re.search(rf"\b{len(cases)} skipped\b", ran.stdout.splitlines()[-1])


@pytest.mark.slow
def test_in_ci_a_missing_interop_folder_fails(clone: Path) -> None:
    ran = _pytest(clone, "-p", "only_interop", "-q", "tests/validate/test_interop.py", ci="true")
    assert ran.returncode == 1, ran.stdout[-3000:]
    assert "this project's CI must have it" in ran.stdout
    assert INTEROP_MISSING in ran.stdout


def test_only_the_fixture_reaches_into_shared() -> None:
    """Every test that reads ../shared goes through the `interop` fixture."""
    # A path built from the checkout to the folder beside it: `….parent / "shared"`.
    shared = re.compile(r"""(\.parent|\.parents\[\d+\])\s*/\s*["']shared["']""")
    allowed = {PROJECT_ROOT / "tests" / "conftest.py", Path(__file__).resolve()}
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for path in sorted((PROJECT_ROOT / "tests").rglob("*.py"))
        if path not in allowed and shared.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
