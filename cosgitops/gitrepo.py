"""Git queries (GitPython, imported lazily): changed paths, file content at a ref,
commit metadata. Every failure is a :class:`GitError` that says what to fix."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops.errors import GitError


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    time: int  # committer time, seconds since the epoch: the SOURCE_DATE_EPOCH of a build
    author: str
    summary: str
    source_url: str | None  # the "origin" remote, if any, for org.opencontainers.image.source


def _open(root: Path) -> Any:
    import git

    try:
        return git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise GitError(
            f"{root} is not inside a git repository",
            hint="run `git init` and commit, or pass the repository folder",
        ) from exc


def is_git_repository(root: Path) -> bool:
    try:
        _open(root)
    except GitError:
        return False
    return True


def toplevel(root: Path) -> Path:
    return Path(_open(root).working_tree_dir).resolve()


def _resolve(repo: Any, ref: str) -> Any:
    import git

    try:
        return repo.commit(ref)
    except (git.BadName, ValueError, git.GitCommandError) as exc:
        raise GitError(
            f"unknown git ref {ref!r}",
            hint="fetch it first (in Actions: actions/checkout with fetch-depth: 0) "
            "or name an existing branch, tag or commit",
        ) from exc


def commit_info(root: Path, ref: str = "HEAD") -> CommitInfo:
    repo = _open(root)
    commit = _resolve(repo, ref)
    source_url = None
    try:
        if "origin" in [remote.name for remote in repo.remotes]:
            source_url = _public_url(repo.remotes.origin.url)
    except (ValueError, AttributeError):
        source_url = None
    return CommitInfo(
        sha=commit.hexsha,
        time=int(commit.committed_date),
        author=str(commit.author.name),
        summary=str(commit.summary),
        source_url=source_url,
    )


def _public_url(url: str) -> str:
    """Strip credentials from a remote URL: they must never end up in an image."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def changed_paths(root: Path, since: str, until: str | None = None) -> set[str]:
    """Paths (relative to the top level) that differ between ``since`` and ``until``.

    ``until=None`` compares against the working tree, staged and unstaged changes and
    untracked (not ignored) files included: what pre-commit and a PR check look at.
    """
    import git

    repo = _open(root)
    base = _resolve(repo, since)
    try:
        if until is None:
            names = repo.git.diff("--name-only", "-z", "--no-renames", base.hexsha, "--")
            untracked = repo.git.ls_files("--others", "--exclude-standard", "-z")
        else:
            head = _resolve(repo, until)
            names = repo.git.diff("--name-only", "-z", "--no-renames", base.hexsha, head.hexsha)
            untracked = ""
    except git.GitCommandError as exc:
        raise GitError(f"git diff against {since!r} failed: {exc.stderr.strip()}") from exc
    return {name for name in (names + "\0" + untracked).split("\0") if name}


def read_file_at(root: Path, ref: str, path: str) -> bytes | None:
    """Content of ``path`` (relative to the top level) at ``ref``, or None if absent."""
    repo = _open(root)
    commit = _resolve(repo, ref)
    try:
        blob = commit.tree / path
    except KeyError:
        return None
    if blob.type != "blob":
        return None
    data: bytes = blob.data_stream.read()
    return data


def source_date_epoch(root: Path) -> int:
    """``SOURCE_DATE_EPOCH`` if set, else the HEAD commit time."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value:
        try:
            return int(value)
        except ValueError as exc:
            raise GitError(
                f"SOURCE_DATE_EPOCH={value!r} is not an integer",
                hint="set it to seconds since the epoch, e.g. $(git log -1 --format=%ct)",
            ) from exc
    return commit_info(root).time


def listed_files(root: Path) -> list[Path] | None:
    """Files under ``root`` that git would commit: tracked ones still present plus
    untracked ones not ignored. None when ``root`` is not inside a git repository, or
    when that repository ignores ``root`` itself (then git says nothing about it)."""
    import git

    if not is_git_repository(root):
        return None
    runner = git.Git(str(root))
    try:
        runner.check_ignore("-q", ".")
    except git.GitCommandError:
        pass  # exit status 1: not ignored
    else:
        return None
    try:
        output = runner.ls_files("-z", "--cached", "--others", "--exclude-standard")
    except git.GitCommandError as exc:
        raise GitError(f"git ls-files in {root} failed: {exc.stderr.strip()}") from exc
    return [root / name for name in dict.fromkeys(output.split("\0")) if name]
