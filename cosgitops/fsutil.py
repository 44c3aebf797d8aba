"""File-system helpers: atomic writes, path containment and file locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from cosgitops.errors import CosgitopsError


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces ``path`` only once fully written and synced.

    Readers see either the old content or the new, never a partial file; a crash
    leaves at worst a stray ``.tmp-*`` file beside the target.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


class PathEscapeError(CosgitopsError):
    """A path points outside the folder it must stay in."""


def contained_path(root: Path, relative: str) -> Path:
    """Join ``relative`` under ``root``, refusing absolute paths, ``..`` and symlink escapes."""
    if not relative or relative.startswith(("/", "\\")) or os.path.isabs(relative):
        raise PathEscapeError(
            f"path {relative!r} is absolute", hint="use a path relative to the folder"
        )
    parts = Path(relative).parts
    if ".." in parts:
        raise PathEscapeError(f"path {relative!r} climbs out with '..'", hint="remove '..'")
    candidate = root / relative
    resolved_root = root.resolve()
    resolved = candidate.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise PathEscapeError(
            f"path {relative!r} resolves to {resolved}, outside {resolved_root}",
            hint="a symlink on the way points out of the folder; replace it with the real file",
        )
    return candidate


# ---------------------------------------------------------------- file locks

_LOCK_POLL_FIRST_SECONDS = 0.005
_LOCK_POLL_MAX_SECONDS = 0.05


@contextlib.contextmanager
def file_lock(
    path: Path,
    *,
    timeout: float,
    busy: Callable[[Path], CosgitopsError] | None = None,
    mode: int = 0o644,
) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block; yields True.

    The file (and its folder) is created when missing and left in place; it stays empty.
    The kernel drops the lock when the holder exits, even on a crash or ``kill -9``, so a
    dead holder never wedges anyone. Another holder is waited for up to ``timeout``
    seconds (0: one attempt), polling with a short backoff; then ``busy(path)`` is
    raised, or, when ``busy`` is None, the block runs without the lock and the context
    yields False (for readers that can make do without it). Errors creating the file are
    the caller's ``OSError``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # never through a link: a lock file planted as a symlink is refused (ELOOP)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        deadline = time.monotonic() + timeout
        delay = _LOCK_POLL_FIRST_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                if busy is not None:
                    raise busy(path)
                yield False
                return
            time.sleep(delay)
            delay = min(delay * 2, _LOCK_POLL_MAX_SECONDS)
        try:
            yield True
        finally:
            # Unlock explicitly: a forked child holding a copy of fd must not keep it.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
