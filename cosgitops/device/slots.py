"""Slot storage: directories (default) or squashfs images, switched atomically.

A slot's bytes live under ``<partition>/slots/<name>`` (or ``<name>.squashfs``) and
never change once stored. ``state/active``, ``state/passive`` and ``recovery/recovery``
are symlinks to them (``active.squashfs`` etc. for images), derived from
``state.json``: the journal is the commit point, the links follow it and are repaired
from it after a crash. A new slot is unpacked into ``<partition>/transition``, synced,
then renamed into ``slots/`` before any state names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cosgitops.device.layout import DeviceRoot
from cosgitops.device.state import SLOT_NAMES, DeviceState, SlotRecord
from cosgitops.errors import DeviceError
from cosgitops.fsutil import fsync_dir

SLOT_FORMATS = ("dir", "squashfs")
SQUASHFS_SUFFIX = ".squashfs"
_SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def tree_digest(path: Path) -> str:
    """A digest over an unpacked tree: names, types, modes, owners, contents, link targets.

    Timestamps are left out: they carry no meaning for what the slot runs.
    """
    digest = hashlib.sha256()

    def walk(directory: Path, relative: bytes) -> None:
        with os.scandir(directory) as iterator:
            entries = sorted(iterator, key=lambda entry: os.fsencode(entry.name))
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            name = relative + os.fsencode(entry.name)
            kind = stat.S_IFMT(info.st_mode)
            header = (
                f"{kind:o} {stat.S_IMODE(info.st_mode):o} {info.st_uid} {info.st_gid} ".encode()
            )
            if stat.S_ISREG(info.st_mode):
                content = hashlib.sha256()
                with open(entry.path, "rb") as handle:
                    while chunk := handle.read(1024 * 1024):
                        content.update(chunk)
                extra = content.hexdigest().encode()
            elif stat.S_ISLNK(info.st_mode):
                extra = os.fsencode(os.readlink(entry.path))
            else:
                extra = b""
            digest.update(header + name + b"\x00" + extra + b"\n")
            if stat.S_ISDIR(info.st_mode):
                walk(Path(entry.path), name + b"/")

    walk(path, b"")
    return "sha256:" + digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _sync_tree(path: Path) -> None:
    """Flush everything written under ``path`` to disk before a state names it."""
    if hasattr(os, "sync"):
        os.sync()
    fsync_dir(path)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


class SlotStore:
    def __init__(self, device: DeviceRoot) -> None:
        self.device = device

    # ------------------------------------------------------------ locations

    def pointer_path(self, slot: str, slot_format: str) -> Path:
        if slot not in SLOT_NAMES:
            raise ValueError(slot)
        partition = self.device.partition(slot)
        name = "recovery" if slot == "recovery" else slot
        suffix = SQUASHFS_SUFFIX if slot_format == "squashfs" else ""
        return partition / f"{name}{suffix}"

    def location(self, record: SlotRecord) -> Path:
        """The absolute path of a stored slot (a directory or a squashfs file)."""
        if not record.storage:
            raise DeviceError(f"release {record.version} is not stored in a built-in slot")
        path = (self.device.root / record.storage).resolve()
        root = self.device.root.resolve()
        if root not in path.parents:
            raise DeviceError(f"state.json points slot storage outside the device: {path}")
        return path

    def transition(self, partition: str) -> Path:
        return self.device.partition(partition) / "transition"

    # ------------------------------------------------------------ building

    def fresh_transition(self, partition: str) -> Path:
        """An empty staging directory; whatever a crash left there is discarded."""
        staging = self.transition(partition)
        _remove(staging)
        for leftover in staging.parent.glob("transition.*"):
            _remove(leftover)
        staging.mkdir(parents=True, mode=0o755)
        return staging

    def store_transition(
        self, partition: str, label: str, slot_format: str
    ) -> tuple[str, str, str]:
        """Seal the transition slot: returns (storage, tree digest, image file digest)."""
        if slot_format not in SLOT_FORMATS:
            raise DeviceError(f"unknown slot format {slot_format!r}", hint="use dir or squashfs")
        staging = self.transition(partition)
        tree = tree_digest(staging)
        slots_dir = self.device.partition(partition) / "slots"
        slots_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c in _SAFE_NAME_CHARS else "_" for c in label)[:80]
        name = f"{safe}-{secrets.token_hex(4)}"
        if slot_format == "dir":
            _sync_tree(staging)
            target = slots_dir / name
            os.rename(staging, target)
            fsync_dir(slots_dir)
            fsync_dir(staging.parent)
            return str(target.relative_to(self.device.root)), tree, ""
        image = slots_dir / f"{name}{SQUASHFS_SUFFIX}"
        partial = staging.parent / f"transition{SQUASHFS_SUFFIX}"
        _remove(partial)
        self._mksquashfs(staging, partial)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        image_digest = file_digest(partial)
        os.rename(partial, image)
        fsync_dir(slots_dir)
        shutil.rmtree(staging)
        return str(image.relative_to(self.device.root)), tree, image_digest

    @staticmethod
    def _mksquashfs(source: Path, image: Path) -> None:
        binary = shutil.which("mksquashfs")
        if binary is None:
            raise DeviceError(
                "slot format squashfs needs mksquashfs",
                hint="install squashfs-tools, or set slots.format: dir in the agent config",
            )
        result = subprocess.run(
            [binary, str(source), str(image), "-noappend", "-no-progress", "-quiet"],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise DeviceError(
                f"mksquashfs failed: {result.stderr.decode(errors='replace').strip()[-500:]}"
            )

    def copy_into_transition(self, record: SlotRecord, partition: str) -> Path:
        """Fill a fresh transition slot with a copy of ``record``'s tree (used by reset)."""
        staging = self.fresh_transition(partition)
        with self.view(record) as tree:
            shutil.rmtree(staging)
            shutil.copytree(tree, staging, symlinks=True, copy_function=shutil.copy2)
            _copy_owners(tree, staging)
        return staging

    # ------------------------------------------------------------ reading

    @contextlib.contextmanager
    def view(self, record: SlotRecord) -> Iterator[Path]:
        """A directory showing the slot's files (a squashfs image is unpacked for it)."""
        location = self.location(record)
        if record.format != "squashfs":
            yield location
            return
        binary = shutil.which("unsquashfs")
        if binary is None:
            raise DeviceError("reading a squashfs slot needs unsquashfs (squashfs-tools)")
        self.device.tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.device.tmp_dir, prefix="view-") as scratch:
            target = Path(scratch) / "root"
            result = subprocess.run(
                [binary, "-n", "-d", str(target), str(location)],
                capture_output=True,
                check=False,
            )
            if result.returncode != 0:
                raise DeviceError(
                    f"unsquashfs {location} failed: "
                    f"{result.stderr.decode(errors='replace').strip()[-500:]}"
                )
            yield target

    def verify(self, record: SlotRecord) -> None:
        """Raise unless the stored slot is exactly what was recorded when it was built."""
        location = self.location(record)
        if not location.exists():
            raise DeviceError(f"slot of {record.version} is missing at {location}")
        if record.format == "squashfs" and record.file_digest:
            actual = file_digest(location)
            if actual != record.file_digest:
                raise DeviceError(
                    f"squashfs slot of {record.version} changed on disk ({actual})",
                    hint="restore it with `cosgitops device reset`",
                )
            return
        with self.view(record) as tree:
            actual = tree_digest(tree)
        if record.tree_digest and actual != record.tree_digest:
            raise DeviceError(
                f"slot of {record.version} differs from what was installed ({actual})",
                hint="restore it with `cosgitops device reset`",
            )

    # ------------------------------------------------------------ switching

    def point(self, slot: str, record: SlotRecord | None) -> None:
        """Make the ``slot`` link name ``record``'s storage (atomically), or remove it."""
        for slot_format in SLOT_FORMATS:
            link = self.pointer_path(slot, slot_format)
            wanted = record is not None and record.storage and record.format == slot_format
            if not wanted:
                if link.is_symlink():
                    link.unlink()
                continue
            assert record is not None
            target = os.path.relpath(self.device.root / record.storage, link.parent)
            if link.is_symlink() and os.readlink(link) == target:
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            temporary = link.parent / f".tmp-link-{slot}-{secrets.token_hex(4)}"
            os.symlink(target, temporary)
            os.replace(temporary, link)
            fsync_dir(link.parent)

    def reconcile(self, state: DeviceState, *, keep_transition: bool = False) -> list[str]:
        """Links follow ``state``; storage no state names is deleted. Returns what was removed."""
        for slot in SLOT_NAMES:
            self.point(slot, state.slot(slot))
        referenced = {
            (self.device.root / record.storage).resolve()
            for record in state.records()
            if record.storage
        }
        removed: list[str] = []
        for partition in ("state", "recovery"):
            base = self.device.partition(partition)
            for stray in base.glob(".tmp-link-*"):
                stray.unlink(missing_ok=True)
            if not keep_transition:
                for leftover in (base / "transition", base / f"transition{SQUASHFS_SUFFIX}"):
                    if leftover.exists() or leftover.is_symlink():
                        _remove(leftover)
                        removed.append(str(leftover.relative_to(self.device.root)))
            slots_dir = base / "slots"
            if not slots_dir.is_dir():
                continue
            for stored in slots_dir.iterdir():
                if stored.resolve() not in referenced:
                    _remove(stored)
                    removed.append(str(stored.relative_to(self.device.root)))
        return removed


def _copy_owners(source: Path, target: Path) -> None:
    if os.geteuid() != 0:
        return
    for directory, dirnames, filenames in os.walk(source):
        relative = Path(directory).relative_to(source)
        for name in [".", *dirnames, *filenames]:
            src = Path(directory) / name if name != "." else Path(directory)
            dst = target / relative / name if name != "." else target / relative
            info = src.lstat()
            os.chown(dst, info.st_uid, info.st_gid, follow_symlinks=False)
            if not stat.S_ISLNK(info.st_mode):
                os.chmod(dst, stat.S_IMODE(info.st_mode))
