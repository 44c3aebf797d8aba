"""Free space on the device: checked before work starts, counted while it runs, and a
full disk turned into a clean refusal.

A device whose file system fills up must stay usable: the agent checks free space
before it downloads or unpacks (against what the image declares, then entry by entry
against what it really writes, sparse files at their full size), keeps
``Limits.device_reserve_bytes`` free for the journal and the clean-up, and when the disk
fills anyway (another program wrote too) it frees what it made first, then journals,
then exits 1 with :class:`DiskFullError`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from cosgitops.errors import DeviceError
from cosgitops.progress import human_size

# What one directory entry costs beyond its bytes (an inode and a directory block, more
# or less on every file system); used to estimate, never to allow more.
ENTRY_OVERHEAD = 4096
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(DeviceError):
    """The device's file system has no room for what an operation must write."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def reserve_for(path: Path, limit: int) -> int:
    """The bytes to keep free: ``limit``, but at most a twentieth of a small file system."""
    info = os.statvfs(path)
    return min(limit, info.f_blocks * info.f_frsize // 20)


def full_disk_error(where: Path, what: str, exc: BaseException | None = None) -> DiskFullError:
    try:
        left = f"{human_size(free_bytes(where))} free"
    except OSError:
        left = "free space unknown"
    detail = f" ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else ""
    return DiskFullError(
        f"the device's file system is full{detail} while {what} ({left} on {where})",
        hint="nothing was switched and what this operation wrote was removed; free space "
        "on that file system (or install a smaller release), then run the command again",
    )


class SpaceGuard:
    """Counts what an operation writes against the free space it found at the start."""

    def __init__(self, path: Path, *, reserve: int, what: str) -> None:
        self.path = path
        self.what = what
        self.reserve = reserve_for(path, reserve)
        self.available = free_bytes(path) - self.reserve

    def need(self, size: int, where: str) -> None:
        """Refuse before writing ``size`` bytes that would eat into the reserve."""
        cost = size + ENTRY_OVERHEAD
        if cost > self.available:
            # the estimate may be stale (another writer, or a file freed meanwhile)
            self.available = free_bytes(self.path) - self.reserve
            if cost > self.available:
                raise DiskFullError(
                    f"{where}: {self.what} needs {human_size(size)} more, but only "
                    f"{human_size(max(self.available, 0))} are free beyond the "
                    f"{human_size(self.reserve)} kept for the journal on {self.path}",
                    hint="free space on that file system, then run the command again; "
                    "nothing was switched",
                )
        self.available -= cost

    def check_total(self, size: int, what: str) -> None:
        """Refuse up front when ``size`` bytes (what the image declares) cannot fit."""
        if size > self.available:
            raise DiskFullError(
                f"{what} needs at least {human_size(size)}, but only "
                f"{human_size(max(self.available, 0))} are free on {self.path} (beyond the "
                f"{human_size(self.reserve)} kept for the journal)",
                hint="free space on that file system, then run the command again; "
                "nothing was downloaded or switched",
            )
