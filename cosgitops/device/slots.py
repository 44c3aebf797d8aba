"""Slot storage: directories (default) or squashfs images, switched atomically.

A slot's bytes live under ``<partition>/slots/<name>`` (or ``<name>.squashfs``) and
never change once stored. ``state/active``, ``state/passive`` and ``recovery/recovery``
are symlinks to them (``active.squashfs`` etc. for images), derived from
``state.json``: the journal is the commit point, the links follow it and are repaired
from it after a crash. A new slot is unpacked into ``<partition>/transition``, synced,
then renamed into ``slots/`` before any state names it.

Nothing here follows a link inside the device root (:mod:`.fstree`): the partition
folders, ``slots/`` and ``transition`` are opened with ``O_NOFOLLOW``, and the clean-up
deletes only entries it can prove it made: ``transition``, and entries of ``slots/``
that carry the agent's own slot names and that no state names. A journal naming any
other storage is refused before anything is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

from cosgitops.device import fstree
from cosgitops.device.layout import DeviceRoot
from cosgitops.device.space import full_disk_error
from cosgitops.device.state import SLOT_NAMES, DeviceState, SlotRecord, UnreadableJournalError
from cosgitops.errors import DeviceError

SLOT_FORMATS = ("dir", "squashfs")
SQUASHFS_SUFFIX = ".squashfs"
TRANSITION = "transition"
_SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
# The names the agent gives slots: a sanitised label, '-', 8 random hex digits.
SLOT_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,80}-[0-9a-f]{8}(\.squashfs)?\Z")
_TMP_LINK_PREFIX = ".tmp-link-"


def partition_of(slot: str) -> str:
    return "recovery" if slot == "recovery" else "state"


def tree_digest(path: Path) -> str:
    """A digest over an unpacked tree (see :func:`.fstree.tree_digest_fd`)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return fstree.tree_digest_fd(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def check_storage(slot: str | None, record: SlotRecord) -> None:
    """Refuse a record whose storage is not a slot the agent made in the right place
    (``slot`` None: in either partition)."""
    if not record.storage:
        return
    parts = record.storage.split("/")
    suffix_ok = (record.format == "squashfs") == parts[-1].endswith(SQUASHFS_SUFFIX)
    if (
        len(parts) != 3
        or parts[0] not in ("state", "recovery")
        or parts[1] != "slots"
        or not SLOT_NAME_RE.match(parts[2])
        or not suffix_ok
        or (slot is not None and parts[0] != partition_of(slot))
    ):
        raise UnreadableJournalError(
            f"state.json names {record.storage!r} as the storage of the {slot or 'a'} slot "
            f"({record.version}), which is not a slot the agent made",
            hint="the journal was changed by something else; nothing was deleted. Rebuild "
            "it from the recovery slot with `cosgitops device reset`",
        )


def _sync_tree() -> None:
    """Flush everything written to disk before a state names it."""
    if hasattr(os, "sync"):
        os.sync()


class SlotStore:
    def __init__(self, device: DeviceRoot) -> None:
        self.device = device

    # ------------------------------------------------------------ locations

    def pointer_path(self, slot: str, slot_format: str) -> Path:
        return self.device.partition(partition_of(slot)) / self._pointer_name(slot, slot_format)

    @staticmethod
    def _pointer_name(slot: str, slot_format: str) -> str:
        if slot not in SLOT_NAMES:
            raise ValueError(slot)
        suffix = SQUASHFS_SUFFIX if slot_format == "squashfs" else ""
        return f"{slot}{suffix}"

    def location(self, record: SlotRecord, slot: str | None = None) -> Path:
        """The absolute path of a stored slot (a directory or a squashfs file)."""
        if not record.storage:
            raise DeviceError(f"release {record.version} is not stored in a built-in slot")
        check_storage(slot, record)
        return self.device.root / record.storage

    def transition(self, partition: str) -> Path:
        return self.device.partition(partition) / TRANSITION

    @contextlib.contextmanager
    def _partition(self, partition: str, *, create: bool = True) -> Iterator[int]:
        with fstree.opened_dir(
            self.device.root, [partition], create=create, shown=str(self.device.root)
        ) as fd:
            if fd is None:
                raise DeviceError(f"{self.device.partition(partition)} does not exist")
            yield fd

    @contextlib.contextmanager
    def _slots_dir(
        self, partition_fd: int, partition: str, *, create: bool
    ) -> Iterator[int | None]:
        with fstree.opened_dir(
            partition_fd,
            ["slots"],
            create=create,
            shown=str(self.device.partition(partition)),
        ) as fd:
            yield fd

    # ------------------------------------------------------------ building

    def _clear_transition(self, partition_fd: int, partition: str) -> list[str]:
        removed = []
        for name, wanted_dir in ((TRANSITION, True), (TRANSITION + SQUASHFS_SUFFIX, False)):
            info = fstree.lstat_at(name, partition_fd)
            if info is None:
                continue
            if stat.S_ISDIR(info.st_mode) != wanted_dir or stat.S_ISLNK(info.st_mode):
                where = self.device.partition(partition) / name
                raise fstree.ForeignEntryError(
                    f"{where} is a {fstree.kind_name(info.st_mode)} the agent did not make",
                    hint=f"move {where} out of the device root; the agent never follows or "
                    "deletes what it did not make",
                )
            fstree.remove_at(partition_fd, name)
            removed.append(f"{partition}/{name}")
        return removed

    def fresh_transition(self, partition: str) -> Path:
        """An empty staging directory; whatever a crash left there is discarded."""
        with self._partition(partition) as fd:
            self._clear_transition(fd, partition)
            os.mkdir(TRANSITION, 0o755, dir_fd=fd)
        return self.transition(partition)

    def store_transition(
        self, partition: str, label: str, slot_format: str
    ) -> tuple[str, str, str]:
        """Seal the transition slot: returns (storage, tree digest, image file digest)."""
        if slot_format not in SLOT_FORMATS:
            raise DeviceError(f"unknown slot format {slot_format!r}", hint="use dir or squashfs")
        safe = "".join(c if c in _SAFE_NAME_CHARS else "_" for c in label)[:80]
        name = f"{safe}-{secrets.token_hex(4)}"
        with self._partition(partition) as pfd:
            staging_fd = os.open(TRANSITION, fstree.DIR_FLAGS, dir_fd=pfd)
            try:
                tree = fstree.tree_digest_fd(staging_fd, what="the unpacked slot")
                with self._slots_dir(pfd, partition, create=True) as sfd:
                    assert sfd is not None
                    if slot_format == "dir":
                        _sync_tree()
                        os.rename(TRANSITION, name, src_dir_fd=pfd, dst_dir_fd=sfd)
                        os.fsync(sfd)
                        os.fsync(pfd)
                        return f"{partition}/slots/{name}", tree, ""
                    image = name + SQUASHFS_SUFFIX
                    partial = TRANSITION + SQUASHFS_SUFFIX
                    fstree.remove_at(pfd, partial)
                    try:
                        self._mksquashfs(staging_fd, pfd, partial)
                        image_fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=pfd)
                        try:
                            os.fsync(image_fd)
                        finally:
                            os.close(image_fd)
                        image_digest = file_digest(self.device.partition(partition) / partial)
                        os.rename(partial, image, src_dir_fd=pfd, dst_dir_fd=sfd)
                    except BaseException:
                        fstree.remove_at(pfd, partial)
                        raise
                    os.fsync(sfd)
            finally:
                os.close(staging_fd)
            fstree.remove_at(pfd, TRANSITION)
        return f"{partition}/slots/{image}", tree, image_digest

    def _mksquashfs(self, source_fd: int, target_dir_fd: int, target: str) -> None:
        binary = shutil.which("mksquashfs")
        if binary is None:
            raise DeviceError(
                "slot format squashfs needs mksquashfs",
                hint="install squashfs-tools, or set slots.format: dir in the agent config",
            )
        result = subprocess.run(
            [
                binary,
                f"/proc/self/fd/{source_fd}/.",
                f"/proc/self/fd/{target_dir_fd}/{target}",
                "-noappend",
                "-no-progress",
                "-quiet",
            ],
            capture_output=True,
            check=False,
            pass_fds=(source_fd, target_dir_fd),
        )
        if result.returncode != 0:
            output = result.stderr.decode(errors="replace").strip()
            if "No space left" in output or "ENOSPC" in output:
                raise full_disk_error(self.device.state_dir, "writing the squashfs slot")
            raise DeviceError(f"mksquashfs failed: {output[-500:]}")

    def copy_into_transition(self, record: SlotRecord, partition: str) -> Path:
        """Fill a fresh transition slot with a copy of ``record``'s tree (used by reset)."""
        staging = self.fresh_transition(partition)
        with self.view(record, "recovery") as tree:
            source_fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                with self._partition(partition) as pfd:
                    target_fd = os.open(TRANSITION, fstree.DIR_FLAGS, dir_fd=pfd)
                    try:
                        fstree.copy_tree_fd(
                            source_fd, target_fd, what=f"the recovery slot ({record.version})"
                        )
                        info = os.fstat(source_fd)
                        os.fchmod(target_fd, stat.S_IMODE(info.st_mode))
                    finally:
                        os.close(target_fd)
            finally:
                os.close(source_fd)
        return staging

    # ------------------------------------------------------------ reading

    @contextlib.contextmanager
    def view(self, record: SlotRecord, slot: str | None = None) -> Iterator[Path]:
        """A directory showing the slot's files (a squashfs image is unpacked for it)."""
        location = self.location(record, slot)
        if record.format != "squashfs":
            yield location
            return
        binary = shutil.which("unsquashfs")
        if binary is None:
            raise DeviceError("reading a squashfs slot needs unsquashfs (squashfs-tools)")
        with fstree.opened_dir(
            self.device.root, ["agent", "tmp"], create=True, shown=str(self.device.root)
        ) as tmp_fd:
            assert tmp_fd is not None
            scratch = f"view-{secrets.token_hex(6)}"
            os.mkdir(scratch, 0o700, dir_fd=tmp_fd)
            image_fd = self._open_image(record, slot)
            try:
                result = subprocess.run(
                    [
                        binary,
                        "-n",
                        "-d",
                        f"/proc/self/fd/{tmp_fd}/{scratch}/root",
                        f"/proc/self/fd/{image_fd}",
                    ],
                    capture_output=True,
                    check=False,
                    pass_fds=(tmp_fd, image_fd),
                )
                os.close(image_fd)
                image_fd = -1
                if result.returncode != 0:
                    output = result.stderr.decode(errors="replace").strip()
                    if "No space left" in output:
                        raise full_disk_error(self.device.agent_dir, "unpacking a squashfs slot")
                    raise DeviceError(f"unsquashfs {location} failed: {output[-500:]}")
                yield self.device.tmp_dir / scratch / "root"
            finally:
                if image_fd >= 0:
                    os.close(image_fd)
                fstree.remove_at(tmp_fd, scratch)

    def _open_image(self, record: SlotRecord, slot: str | None) -> int:
        parts = record.storage.split("/")
        with fstree.opened_dir(self.device.root, parts[:-1], shown=str(self.device.root)) as fd:
            if fd is None:
                raise DeviceError(f"slot of {record.version} is missing at {record.storage}")
            try:
                return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise DeviceError(
                    f"slot of {record.version} is missing at {record.storage}",
                    hint="restore it with `cosgitops device reset`",
                ) from None
            except OSError as exc:
                raise DeviceError(f"cannot open the slot {record.storage}: {exc.strerror}") from exc

    def verify(self, record: SlotRecord, slot: str | None = None) -> None:
        """Raise unless the stored slot is exactly what was recorded when it was built."""
        check_storage(slot, record)
        try:
            self._verify(record, slot)
        except DeviceError as exc:
            if slot == "recovery":
                # reset restores from recovery, so it cannot repair recovery itself
                exc.hint = "reinstall the recovery slot with `cosgitops device upgrade --recovery`"
            raise

    def _verify(self, record: SlotRecord, slot: str | None) -> None:
        parts = record.storage.split("/")
        with fstree.opened_dir(self.device.root, parts[:-1], shown=str(self.device.root)) as fd:
            info = None if fd is None else fstree.lstat_at(parts[-1], fd)
        wanted = stat.S_ISREG if record.format == "squashfs" else stat.S_ISDIR
        if info is None:
            raise DeviceError(
                f"slot of {record.version} is missing at {record.storage}",
                hint="restore it with `cosgitops device reset`",
            )
        if not wanted(info.st_mode):
            raise DeviceError(
                f"slot of {record.version} at {record.storage} is a "
                f"{fstree.kind_name(info.st_mode)}",
                hint="restore it with `cosgitops device reset`",
            )
        if record.format == "squashfs" and record.file_digest:
            actual = file_digest(self.device.root / record.storage)
            if actual != record.file_digest:
                raise DeviceError(
                    f"squashfs slot of {record.version} changed on disk ({actual})",
                    hint="restore it with `cosgitops device reset`",
                )
            return
        with self.view(record, slot) as tree:
            fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                actual = fstree.tree_digest_fd(fd, what=f"the slot of {record.version}")
            finally:
                os.close(fd)
        if record.tree_digest and actual != record.tree_digest:
            raise DeviceError(
                f"slot of {record.version} differs from what was installed ({actual})",
                hint="restore it with `cosgitops device reset`",
            )

    # ------------------------------------------------------------ switching

    def point(self, slot: str, record: SlotRecord | None) -> None:
        """Make the ``slot`` link name ``record``'s storage (atomically), or remove it."""
        partition = partition_of(slot)
        with self._partition(partition) as pfd:
            for slot_format in SLOT_FORMATS:
                name = self._pointer_name(slot, slot_format)
                info = fstree.lstat_at(name, pfd)
                if info is not None and not stat.S_ISLNK(info.st_mode):
                    where = self.device.partition(partition) / name
                    raise fstree.ForeignEntryError(
                        f"{where} is a {fstree.kind_name(info.st_mode)}, not the agent's link "
                        f"to the {slot} slot",
                        hint=f"move {where} out of the device root; the agent recreates the "
                        "link from state.json",
                    )
                wanted = record is not None and record.storage and record.format == slot_format
                if not wanted:
                    if info is not None:
                        os.unlink(name, dir_fd=pfd)
                    continue
                assert record is not None
                target = os.path.relpath(
                    self.device.root / record.storage, self.device.partition(partition)
                )
                if info is not None and os.readlink(name, dir_fd=pfd) == target:
                    continue
                temporary = f"{_TMP_LINK_PREFIX}{slot}-{secrets.token_hex(4)}"
                os.symlink(target, temporary, dir_fd=pfd)
                os.replace(temporary, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                os.fsync(pfd)

    def check_state(self, state: DeviceState) -> None:
        for slot in SLOT_NAMES:
            record = state.slot(slot)
            if record is not None:
                check_storage(slot, record)

    def reconcile(self, state: DeviceState, *, keep_transition: bool = False) -> list[str]:
        """Links follow ``state``; storage the agent made that no state names is deleted.

        Frees first (the transition, unreferenced slots), then links: a full disk never
        blocks the clean-up. Returns what was removed."""
        self.check_state(state)
        referenced = {record.storage for record in state.records() if record.storage}
        removed: list[str] = []
        for partition in ("state", "recovery"):
            with self._partition(partition) as pfd:
                if not keep_transition:
                    removed.extend(self._clear_transition(pfd, partition))
                with self._slots_dir(pfd, partition, create=False) as sfd:
                    if sfd is not None:
                        removed.extend(self._collect_slots(sfd, partition, referenced))
                for name in os.listdir(pfd):
                    if name.startswith(_TMP_LINK_PREFIX):
                        info = fstree.lstat_at(name, pfd)
                        if info is not None and stat.S_ISLNK(info.st_mode):
                            os.unlink(name, dir_fd=pfd)
        for slot in SLOT_NAMES:
            self.point(slot, state.slot(slot))
        return removed

    @staticmethod
    def _collect_slots(sfd: int, partition: str, referenced: set[str]) -> list[str]:
        removed = []
        for name in sorted(os.listdir(sfd)):
            storage = f"{partition}/slots/{name}"
            if storage in referenced or not SLOT_NAME_RE.match(name):
                continue  # in use, or not a name the agent gives: not ours to delete
            info = fstree.lstat_at(name, sfd)
            if info is None:
                continue
            is_image = name.endswith(SQUASHFS_SUFFIX)
            if (stat.S_ISREG if is_image else stat.S_ISDIR)(info.st_mode):
                fstree.remove_at(sfd, name)
                removed.append(storage)
        return removed
