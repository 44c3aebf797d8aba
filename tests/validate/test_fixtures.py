"""tests/data/valid and tests/data/invalid drive these tests.

Each invalid file states, in ``# expect: RULE LINE[:COLUMN]`` comments, every diagnostic
it must produce; the test checks the rule, the line (and column when given) of each,
and that no error appears that the file does not expect. Valid files must be clean.
The folder a file sits in (derivative, repository, cloud-config) is its kind.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cosgitops.validate import validate_paths

DATA = Path(__file__).resolve().parent.parent / "data"
VALID = sorted((DATA / "valid").rglob("*.yaml"))
INVALID = sorted((DATA / "invalid").rglob("*.yaml"))
EXPECT_RE = re.compile(rb"^# expect: (\S+) (\d+)(?::(\d+))?\s*$", re.M)


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def expectations(path: Path) -> list[tuple[str, int, int | None]]:
    return [
        (m[1].decode(), int(m[2]), int(m[3]) if m[3] else None)
        for m in EXPECT_RE.finditer(path.read_bytes())
    ]


def test_the_fixture_sets_are_not_empty() -> None:
    assert len(VALID) >= 10
    assert len(INVALID) >= 40
    for kind in ("derivative", "repository", "cloud-config"):
        assert any(p.parent.name == kind for p in VALID)
        assert any(p.parent.name == kind for p in INVALID)


@pytest.mark.parametrize("path", VALID, ids=_id)
def test_valid_file_is_clean(path: Path) -> None:
    report = validate_paths([path], as_kind=path.parent.name)
    assert report.diagnostics == []
    assert report.ok


@pytest.mark.parametrize("path", INVALID, ids=_id)
def test_invalid_file_gives_the_stated_rule_at_the_stated_line(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path} states no '# expect: RULE LINE' comment"
    report = validate_paths([path], as_kind=path.parent.name)
    got = [(d.rule, d.line, d.column) for d in report.diagnostics]
    for rule, line, column in expected:
        assert any(
            r == rule and ln == line and (column is None or c == column) for r, ln, c in got
        ), f"expected {rule} at {line}:{column or '*'}, got {got}"
    for diagnostic in report.errors:
        assert any(
            rule == diagnostic.rule and line == diagnostic.line for rule, line, _ in expected
        ), f"unexpected {diagnostic.format()}"
    for diagnostic in report.diagnostics:
        assert diagnostic.file.endswith(path.name)
        assert diagnostic.line >= 1 and diagnostic.column >= 1


def test_formats_examples_are_accepted(tmp_path: Path) -> None:
    """Every key the contract documents shows is accepted by the schemas."""
    project = DATA.parent.parent
    formats = (project / "docs" / "formats.md").read_text()
    repository = re.search(r"```yaml\n(# yaml-language-server[^\n]*\n.*?)```", formats, re.S)
    assert repository is not None and "kind: Repository" in repository[1]
    (tmp_path / "repository.yaml").write_text(repository[1])
    report = validate_paths([tmp_path / "repository.yaml"], as_kind="repository")
    assert report.diagnostics == []


def test_design_examples_are_accepted(tmp_path: Path, interop: Path) -> None:
    """The derivative DESIGN.md shows (in ../shared, beside the interop data)."""
    design = interop.parent / "DESIGN.md"
    block = re.search(r"```yaml\n(# yaml-language-server[^\n]*\n.*?)```", design.read_text(), re.S)
    assert block is not None and "kind: Derivative" in block[1]
    text = block[1].replace("<64 hex>", "0" * 64)
    (tmp_path / "derivative.yaml").write_text(text)
    report = validate_paths([tmp_path / "derivative.yaml"], as_kind="derivative")
    assert report.diagnostics == []
