"""Removing metadata no device can still need.

With consistent snapshots every publish adds ``N.snapshot.json`` and new versions of
the roles it changed; the old ones stay so that a device mid-refresh (or behind a CDN
cache) can finish. A timestamp is valid for ``expiryDays.timestamp`` days, so once a
file has been unreferenced for longer than that, no timestamp a device would accept
leads to it. What is kept: every root version, the snapshots that were current at any
moment of the window (plus the current one), and every role version they reference.
Release manifests (targets) are never removed. A file's age comes from its mtime; a
freshly checked-out copy of the index looks new, so nothing is removed from it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from datetime import timedelta
from pathlib import Path

from cosgitops.errors import CosgitopsError
from cosgitops.publish import paths
from cosgitops.publish.tufrepo import Index, read_metadata_file

_VERSIONED_RE = re.compile(r"(\d+)\.(.+)\.json\Z")
_TEMP_PREFIX = ".tmp-"


def prune_metadata(index: Index, *, window: timedelta, clock: float | None = None) -> list[Path]:
    """Delete versioned metadata unreferenced for longer than ``window``; return the
    removed files. Call it with the publish lock held."""
    if index.snapshot is None:
        return []
    cutoff = (time.time() if clock is None else clock) - window.total_seconds()
    folder = index.metadata_dir
    current = int(index.snapshot.signed.version)
    snapshots: dict[int, float] = {}
    files: list[tuple[os.DirEntry[str], int, str]] = []
    temps: list[os.DirEntry[str]] = []
    for entry in os.scandir(folder):
        if entry.name.startswith(_TEMP_PREFIX):
            temps.append(entry)
            continue
        match = _VERSIONED_RE.match(entry.name)
        if match is None:
            continue
        version, role = int(match.group(1)), match.group(2)
        if role == "root":
            continue
        files.append((entry, version, role))
        if role == "snapshot":
            snapshots[version] = entry.stat().st_mtime
    # Current at some moment of the window: created inside it, or the last one before.
    recent = {v for v, mtime in snapshots.items() if mtime >= cutoff and v <= current}
    older = [v for v, mtime in snapshots.items() if mtime < cutoff and v <= current]
    keep_snapshots = recent | {current} | ({max(older)} if older else set())
    referenced: set[str] = set()
    for version in keep_snapshots:
        referenced.update(_references(folder / paths.metadata_file("snapshot", version)))
    removed = []
    for entry, version, role in files:
        if role == "snapshot":
            stale = version not in keep_snapshots and (version < current or _old(entry, cutoff))
        else:
            stale = entry.name not in referenced and _old(entry, cutoff)
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    for entry in temps:
        if _old(entry, cutoff):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _references(snapshot_file: Path) -> set[str]:
    """``N.<role>.json`` names a snapshot file lists (none for a broken leftover)."""
    try:
        snapshot = read_metadata_file(snapshot_file)
    except CosgitopsError:
        return set()
    return {f"{meta.version}.{name}" for name, meta in snapshot.signed.meta.items()}


def _old(entry: os.DirEntry[str], cutoff: float) -> bool:
    try:
        return entry.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False
