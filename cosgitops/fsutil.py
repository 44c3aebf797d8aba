"""File-system helpers: atomic writes and path containment."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
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
def atomic_writer(
    path: Path, mode: int = 0o644, *, uid: int | None = None, gid: int | None = None
) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces ``path`` only once fully written and synced.

    Readers see either the old content or the new, never a partial file; a crash
    leaves at worst a stray ``.tmp-*`` file beside the target. ``uid``/``gid`` set the
    owner before the rename (None keeps the writer's).
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
        if uid is not None or gid is not None:
            os.chown(tmp, -1 if uid is None else uid, -1 if gid is None else gid)
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
