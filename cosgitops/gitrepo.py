"""Git queries: changed paths, file content at a ref, commit metadata, listed files.
Every failure is a :class:`GitError` that says what to fix.

Queries about refs and history go through GitPython. The questions every `validate`
and `build` asks (where is the top level, what would be committed, which commit is
HEAD) ask the git binary directly: importing GitPython alone costs about 90 ms, which
a pre-commit hook would pay on every commit.
"""

from __future__ import annotations

import os
import subprocess
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


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except FileNotFoundError as exc:
        raise GitError("git is not installed", hint="install git") from exc
    except NotADirectoryError as exc:
        raise GitError(f"{root} is not a folder") from exc


def _toplevel_or_none(root: Path) -> Path | None:
    if not Path(root).is_dir():
        return None
    result = _git(root, "rev-parse", "--show-toplevel")
    return Path(result.stdout.strip()).resolve() if result.returncode == 0 else None


def is_git_repository(root: Path) -> bool:
    return _toplevel_or_none(root) is not None


def toplevel(root: Path) -> Path:
    top = _toplevel_or_none(root)
    if top is None:
        raise GitError(
            f"{root} is not inside a git repository",
            hint="run `git init` and commit, or pass the repository folder",
        )
    return top


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
    toplevel(root)
    if ref.startswith("-"):
        raise GitError(f"unknown git ref {ref!r}")
    result = _git(root, "log", "-1", "--format=%H%x00%ct%x00%an%x00%s", ref, "--")
    if result.returncode != 0 or not result.stdout.strip():
        raise GitError(
            f"unknown git ref {ref!r}",
            hint="commit first, fetch the ref (in Actions: actions/checkout with "
            "fetch-depth: 0), or name an existing branch, tag or commit",
        )
    sha, when, author, summary = result.stdout.rstrip("\n").split("\0", 3)
    origin = _git(root, "remote", "get-url", "origin")
    source_url = _public_url(origin.stdout.strip()) if origin.returncode == 0 else None
    return CommitInfo(
        sha=sha,
        time=int(when),
        author=author,
        summary=summary,
        source_url=source_url or None,
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


def uncommitted_paths(root: Path) -> set[str]:
    """Paths (relative to the top level) whose working-tree state differs from HEAD:
    modified, staged, deleted or untracked (not ignored)."""
    toplevel(root)
    result = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    if result.returncode != 0:
        raise GitError(f"git status in {root} failed: {result.stderr.strip()}")
    return {entry[3:] for entry in result.stdout.split("\0") if len(entry) > 3}


def listed_files(root: Path) -> list[Path] | None:
    """Files under ``root`` that git would commit: tracked ones still present plus
    untracked ones not ignored. None when ``root`` is not inside a git repository, or
    when that repository ignores ``root`` itself (then git says nothing about it)."""
    if not is_git_repository(root):
        return None
    if _git(root, "check-ignore", "-q", ".").returncode == 0:
        return None
    result = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if result.returncode != 0:
        raise GitError(f"git ls-files in {root} failed: {result.stderr.strip()}")
    return [root / name for name in dict.fromkeys(result.stdout.split("\0")) if name]
