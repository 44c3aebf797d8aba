"""gitrepo against real git repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cosgitops import gitrepo
from cosgitops.errors import GitError
from tests.validate.helpers import git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a\n")
    (root / "sub" / "b.txt").write_text("b\n")
    (root / ".gitignore").write_text("ignored/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first commit")
    return root


def test_is_git_repository_and_toplevel(repo: Path, tmp_path: Path) -> None:
    assert gitrepo.is_git_repository(repo)
    assert gitrepo.is_git_repository(repo / "sub")
    assert gitrepo.toplevel(repo / "sub") == repo.resolve()
    outside = tmp_path / "plain"
    outside.mkdir()
    assert not gitrepo.is_git_repository(outside)
    with pytest.raises(GitError) as info:
        gitrepo.toplevel(outside)
    assert info.value.hint and "git init" in info.value.hint


def test_changed_paths_between_commits(repo: Path) -> None:
    (repo / "a.txt").write_text("changed\n")
    (repo / "sub" / "b.txt").unlink()
    (repo / "sub" / "c.txt").write_text("c\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    assert gitrepo.changed_paths(repo, "HEAD~1", "HEAD") == {"a.txt", "sub/b.txt", "sub/c.txt"}
    assert gitrepo.changed_paths(repo, "HEAD", "HEAD") == set()


def test_changed_paths_in_the_working_tree(repo: Path) -> None:
    assert gitrepo.changed_paths(repo, "HEAD") == set()
    (repo / "a.txt").write_text("unstaged\n")
    (repo / "staged.txt").write_text("s\n")
    git(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("u\n")
    (repo / "ignored").mkdir()
    (repo / "ignored" / "x.txt").write_text("x\n")
    assert gitrepo.changed_paths(repo, "HEAD") == {"a.txt", "staged.txt", "untracked.txt"}


def test_renames_show_both_paths(repo: Path) -> None:
    git(repo, "mv", "a.txt", "renamed.txt")
    git(repo, "commit", "-q", "-m", "rename")
    assert gitrepo.changed_paths(repo, "HEAD~1", "HEAD") == {"a.txt", "renamed.txt"}


def test_read_file_at(repo: Path) -> None:
    (repo / "a.txt").write_text("new\n")
    git(repo, "commit", "-qam", "edit")
    assert gitrepo.read_file_at(repo, "HEAD~1", "a.txt") == b"a\n"
    assert gitrepo.read_file_at(repo, "HEAD", "a.txt") == b"new\n"
    assert gitrepo.read_file_at(repo, "HEAD", "sub/b.txt") == b"b\n"
    assert gitrepo.read_file_at(repo, "HEAD", "missing.txt") is None
    assert gitrepo.read_file_at(repo, "HEAD", "sub") is None  # a tree, not a file


def test_unknown_ref(repo: Path) -> None:
    with pytest.raises(GitError) as info:
        gitrepo.changed_paths(repo, "nope")
    assert "nope" in str(info.value) and info.value.hint
    with pytest.raises(GitError):
        gitrepo.read_file_at(repo, "nope", "a.txt")


def test_commit_info_and_source_url(repo: Path) -> None:
    info = gitrepo.commit_info(repo)
    assert len(info.sha) == 40
    assert info.summary == "first commit"
    assert info.author == "cosgitops test"
    assert info.time > 1_600_000_000
    assert info.source_url is None
    git(repo, "remote", "add", "origin", "https://user:token@example.com/acme/fleet.git")
    assert gitrepo.commit_info(repo).source_url == "https://example.com/acme/fleet.git"


def test_source_date_epoch(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gitrepo.source_date_epoch(repo) == gitrepo.commit_info(repo).time
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert gitrepo.source_date_epoch(repo) == 1_700_000_000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(GitError):
        gitrepo.source_date_epoch(repo)


def test_listed_files(repo: Path, tmp_path: Path) -> None:
    (repo / "untracked.txt").write_text("u\n")
    (repo / "ignored").mkdir()
    (repo / "ignored" / "x.txt").write_text("x\n")
    listed = gitrepo.listed_files(repo)
    assert listed is not None
    names = sorted(path.relative_to(repo).as_posix() for path in listed)
    assert names == [".gitignore", "a.txt", "sub/b.txt", "untracked.txt"]
    sub = gitrepo.listed_files(repo / "sub")
    assert sub == [repo / "sub" / "b.txt"]
    plain = tmp_path / "plain"
    plain.mkdir()
    assert gitrepo.listed_files(plain) is None
    # a folder the enclosing repository ignores: git knows nothing about its files
    assert gitrepo.listed_files(repo / "ignored") is None
    assert os.path.isdir(repo / ".git")


def test_uncommitted_paths_lists_modified_staged_deleted_and_untracked(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "0"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    for name in ("kept", "modified", "deleted", "staged"):
        (root / name).write_text(name)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "1"], cwd=root, check=True)
    assert gitrepo.uncommitted_paths(root) == set()
    (root / "modified").write_text("changed")
    (root / "deleted").unlink()
    (root / "staged").write_text("changed")
    subprocess.run(["git", "add", "staged"], cwd=root, check=True)
    (root / "sub").mkdir()
    (root / "sub" / "new file").write_text("untracked")
    assert gitrepo.uncommitted_paths(root) == {"modified", "deleted", "staged", "sub/new file"}
