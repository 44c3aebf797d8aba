"""``validate --against REF``: version bumps checked against a real git history."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosgitops.errors import GitError
from cosgitops.validate import validate_paths
from tests.validate.helpers import add_derivative, git, git_init, make_repository


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    root = make_repository(tmp_path / "fleet", "edge", "lab")
    git_init(root)
    return root


def bumps(root: Path, ref: str = "HEAD", paths: list[Path] | None = None) -> list[str]:
    report = validate_paths(paths or [root], against=ref)
    return [f"{d.file}:{d.line}:{d.column} {d.message}" for d in report.diagnostics]


def test_unchanged_repository_passes(repo: Path) -> None:
    assert bumps(repo) == []


def test_a_change_without_a_bump_is_refused(repo: Path) -> None:
    (repo / "derivatives" / "edge" / "overlay" / "etc" / "motd").write_text("changed\n")
    [problem] = bumps(repo)
    assert problem.startswith("fleet/derivatives/edge/derivative.yaml:6:12 ")
    assert "is not greater than 1.0.0" in problem
    report = validate_paths([repo], against="HEAD")
    assert report.errors[0].rule == "version-bump"
    assert report.errors[0].hint and "1.0.1" in report.errors[0].hint


def test_an_untracked_file_counts_as_a_change(repo: Path) -> None:
    (repo / "derivatives" / "lab" / "overlay" / "new.txt").write_text("new\n")
    assert len(bumps(repo)) == 1


def test_a_bump_is_accepted(repo: Path) -> None:
    (repo / "derivatives" / "edge" / "overlay" / "etc" / "motd").write_text("changed\n")
    add_derivative(repo, "edge", version="1.0.1")
    assert bumps(repo) == []
    git(repo, "commit", "-qam", "bump edge")
    assert bumps(repo, "HEAD~1") == []


def test_build_metadata_is_not_a_bump(repo: Path) -> None:
    add_derivative(repo, "edge", version="1.0.0+build.2")
    assert len(bumps(repo)) == 1


def test_a_lower_version_is_refused_even_without_other_changes(repo: Path) -> None:
    add_derivative(repo, "lab", version="0.9.0")
    git(repo, "commit", "-qam", "downgrade")
    [problem] = bumps(repo, "HEAD~1")
    assert "lower than 1.0.0" in problem


def test_a_new_derivative_needs_no_bump(repo: Path) -> None:
    add_derivative(repo, "fresh", version="0.1.0")
    assert bumps(repo) == []


def test_single_files_check_only_their_derivative(repo: Path) -> None:
    (repo / "derivatives" / "edge" / "overlay" / "etc" / "motd").write_text("changed\n")
    (repo / "derivatives" / "lab" / "overlay" / "etc" / "motd").write_text("changed\n")
    only_lab = bumps(repo, paths=[repo / "derivatives" / "lab" / "overlay" / "etc" / "motd"])
    assert len(only_lab) == 1 and "derivatives/lab/" in only_lab[0]


def test_repository_in_a_subfolder_of_the_git_repository(tmp_path: Path) -> None:
    top = tmp_path / "monorepo"
    root = make_repository(top / "os", "edge")
    (top / "README.md").write_text("monorepo\n")
    git_init(top)
    (root / "derivatives" / "edge" / "oem" / "10_hello.yaml").write_text(
        "stages:\n  boot:\n    - commands: [echo changed]\n"
    )
    assert len(bumps(root)) == 1
    add_derivative(root, "edge", version="1.1.0")
    (root / "derivatives" / "edge" / "oem" / "10_hello.yaml").write_text(
        "stages:\n  boot:\n    - commands: [echo changed]\n"
    )
    assert bumps(root) == []


def test_unknown_ref_is_a_git_error(repo: Path) -> None:
    with pytest.raises(GitError) as info:
        validate_paths([repo], against="no-such-branch")
    assert info.value.hint and "fetch-depth" in info.value.hint
