"""Safe extraction of OCI image layers into a slot.

Layers come from the network, so every entry is treated as hostile. The entry rules
(paths, limits, which file types a slot may hold) are :mod:`.layerstream`'s, shared
with the squashfs flattener; on top of them this module never writes through a
symlink (every parent is opened with ``O_NOFOLLOW`` relative to the slot's directory
descriptor, so a symlink planted by an earlier entry or layer cannot redirect a write),
allows hard links only to regular files inside the slot, and counts what it writes
against the free space (:class:`~cosgitops.device.space.SpaceGuard`). OCI whiteouts
(``.wh.NAME``) and opaque directories (``.wh..wh..opq``) remove what lower layers put
there.

The layer's compressed bytes and its uncompressed bytes are hashed while they stream
and compared with the layer digest and the config's ``diff_id`` at the end; the caller
extracts into a staging slot that is thrown away on any error, so a tampered cache file
or a layer that disagrees with its signed config never becomes a bootable slot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cosgitops.config import DEFAULT_LIMITS
from cosgitops.device import fstree
from cosgitops.device.layerstream import (
    DiffIdMismatchError,
    ExtractBudget,
    LayerStream,
    UnsafeLayerError,
    entry_parts,
    shown,
    split_entry_name,
)
from cosgitops.device.space import SpaceGuard, full_disk_error, is_disk_full
from cosgitops.errors import RemoteDataError

__all__ = [
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "DiffIdMismatchError",
    "ExtractBudget",
    "LayerResult",
    "SlotWriter",
    "UnsafeLayerError",
    "extract_layer",
    "split_entry_name",
]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CHUNK = 1024 * 1024
_DIR_FLAGS = fstree.DIR_FLAGS


def _display(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


class SlotWriter:
    """Writes entries into one slot directory without ever following a symlink."""

    def __init__(self, slot: Path) -> None:
        self.slot = slot
        self._root_fd = os.open(slot, _DIR_FLAGS)
        self._is_root = os.geteuid() == 0

    def close(self) -> None:
        os.close(self._root_fd)

    @contextlib.contextmanager
    def directory(self, parts: tuple[str, ...], *, create: bool) -> Iterator[int | None]:
        """A descriptor for the directory ``parts`` (None if absent and not ``create``)."""
        fd = os.dup(self._root_fd)
        try:
            for index, part in enumerate(parts):
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        yield None
                        return
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeLayerError(
                            f"{_display(parts[: index + 1])} is a symlink or a file, and an "
                            f"entry below it would be written through it",
                            hint="layers must not write through symlinks; refused",
                        ) from exc
                    raise
                os.close(fd)
                fd = next_fd
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def lstat(name: str, dir_fd: int) -> os.stat_result | None:
        return fstree.lstat_at(name, dir_fd)

    @staticmethod
    def remove(name: str, dir_fd: int) -> None:
        # iterative and descriptor-based: safe against symlinks and any depth
        fstree.remove_at(dir_fd, name)

    def set_metadata(self, name: str, dir_fd: int, member: tarfile.TarInfo) -> None:
        if self._is_root:
            os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
        if not member.issym():
            # After chown, which clears set-id bits.
            os.chmod(name, member.mode & 0o7777, dir_fd=dir_fd)
        with contextlib.suppress(OSError):
            mtime_ns = int(member.mtime) * 1_000_000_000
            os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


@dataclass
class LayerResult:
    digest: str
    entries: int = 0
    bytes: int = 0
    whiteouts: int = 0


class _LayerApplier:
    def __init__(
        self,
        writer: SlotWriter,
        budget: ExtractBudget,
        label: str,
        on_entry: Callable[[int], None] | None,
        space: SpaceGuard | None = None,
    ) -> None:
        self.writer = writer
        self.budget = budget
        self.label = label
        self.on_entry = on_entry
        self.space = space
        self.created: set[tuple[str, ...]] = set()
        self.directories: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
        self.result_entries = 0
        self.result_bytes = 0
        self.whiteouts = 0

    def apply(self, archive: tarfile.TarFile) -> None:
        for member in archive:
            where = f"{self.label}: {shown(member.name)}"
            parts = entry_parts(member, self.label, self.budget.limits)
            self.budget.charge_member(member, where)
            if self.space is not None:
                self.space.need(member.size if member.isreg() else 0, where)
            self.result_entries += 1
            if not parts:
                continue  # the root itself ("./"): the slot root keeps its own metadata
            base = parts[-1]
            if base == OPAQUE_MARKER:
                self._opaque(parts[:-1])
            elif base.startswith(WHITEOUT_PREFIX):
                self._whiteout(parts[:-1], base[len(WHITEOUT_PREFIX) :], member.name)
            else:
                self._entry(archive, member, parts, where)
            if self.on_entry is not None:
                self.on_entry(self.result_entries)
        self._finish_directories()

    def _finish_directories(self) -> None:
        # Directory modes and times are set last, deepest first: a read-only directory
        # must still accept its children, and writing children changes its mtime.
        for parts, member in sorted(self.directories, key=lambda item: -len(item[0])):
            with self.writer.directory(parts[:-1], create=False) as fd:
                if fd is None:
                    continue
                info = SlotWriter.lstat(parts[-1], fd)
                if info is not None and stat.S_ISDIR(info.st_mode):
                    self.writer.set_metadata(parts[-1], fd, member)

    def _whiteout(self, parent: tuple[str, ...], name: str, raw: str) -> None:
        if name in ("", ".", "..") or "/" in name:
            raise UnsafeLayerError(f"{self.label}: whiteout {shown(raw)} names no valid entry")
        self.whiteouts += 1
        if (*parent, name) in self.created:
            return  # whiteouts hide lower layers only
        with self.writer.directory(parent, create=False) as fd:
            if fd is not None:
                SlotWriter.remove(name, fd)

    def _opaque(self, directory: tuple[str, ...]) -> None:
        self.whiteouts += 1
        with self.writer.directory(directory, create=True) as fd:
            assert fd is not None
            self.created.add(directory)
            self._clear_lower(directory, fd)

    def _clear_lower(self, directory: tuple[str, ...], fd: int) -> None:
        for child in os.listdir(fd):
            path = (*directory, child)
            if path not in self.created:
                SlotWriter.remove(child, fd)
                continue
            info = SlotWriter.lstat(child, fd)
            if info is not None and stat.S_ISDIR(info.st_mode):
                child_fd = os.open(child, _DIR_FLAGS, dir_fd=fd)
                try:
                    self._clear_lower(path, child_fd)
                finally:
                    os.close(child_fd)

    def _entry(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...], where: str
    ) -> None:
        parent, base = parts[:-1], parts[-1]
        with self.writer.directory(parent, create=True) as fd:
            assert fd is not None
            for depth in range(1, len(parent) + 1):
                self.created.add(parent[:depth])
            existing = SlotWriter.lstat(base, fd)
            if member.isdir():
                if existing is not None and not stat.S_ISDIR(existing.st_mode):
                    SlotWriter.remove(base, fd)
                    existing = None
                if existing is None:
                    os.mkdir(base, 0o755, dir_fd=fd)
                self.directories.append((parts, member))
            elif member.islnk():
                self._hardlink(member, base, fd, existing, where)
            else:
                if existing is not None:
                    SlotWriter.remove(base, fd)
                if member.issym():
                    os.symlink(member.linkname, base, dir_fd=fd)
                else:
                    self._write_file(archive, member, base, fd, where)
                self.writer.set_metadata(base, fd, member)
            self.created.add(parts)

    def _write_file(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, base: str, fd: int, where: str
    ) -> None:
        source = archive.extractfile(member)
        if source is None:
            raise RemoteDataError(f"{where}: the archive holds no data for this file")
        out_fd = os.open(
            base,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=fd,
        )
        written = 0
        with os.fdopen(out_fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                out.write(chunk)
        if written != member.size:
            raise RemoteDataError(f"{where}: truncated ({written} of {member.size} bytes)")
        self.result_bytes += written

    def _hardlink(
        self,
        member: tarfile.TarInfo,
        base: str,
        fd: int,
        existing: os.stat_result | None,
        where: str,
    ) -> None:
        target = split_entry_name(
            member.linkname,
            label=where,
            what="the hard link target",
            limits=self.budget.limits,
        )
        if not target:
            raise UnsafeLayerError(f"{where}: hard link to the image root")
        with self.writer.directory(target[:-1], create=False) as target_fd:
            info = None if target_fd is None else SlotWriter.lstat(target[-1], target_fd)
            if target_fd is None or info is None:
                raise UnsafeLayerError(
                    f"{where}: hard link to {shown(member.linkname)}, which is not in the slot",
                    hint="hard links may only point to files the image itself contains",
                )
            if not stat.S_ISREG(info.st_mode):
                raise UnsafeLayerError(
                    f"{where}: hard link to {shown(member.linkname)}, which is not a regular file"
                )
            if existing is not None:
                if (existing.st_dev, existing.st_ino) == (info.st_dev, info.st_ino):
                    return
                SlotWriter.remove(base, fd)
            os.link(target[-1], base, src_dir_fd=target_fd, dst_dir_fd=fd, follow_symlinks=False)


def extract_layer(
    blob: Path,
    *,
    digest: str,
    media_type: str,
    slot: Path,
    diff_id: str | None = None,
    budget: ExtractBudget | None = None,
    on_entry: Callable[[int], None] | None = None,
    space: SpaceGuard | None = None,
) -> LayerResult:
    """Apply one layer (a cached blob) on top of ``slot``; raise on anything unsafe.

    The blob is hashed as it streams, compressed (``digest``) and uncompressed
    (``diff_id``, when given); a mismatch raises after the fact, so the caller must treat
    ``slot`` as garbage on any exception. A full disk raises
    :class:`~cosgitops.device.space.DiskFullError`.
    """
    budget = budget or ExtractBudget(DEFAULT_LIMITS)
    label = f"layer {digest[:19]}"
    writer = SlotWriter(slot)
    try:
        with blob.open("rb") as raw:
            stream = LayerStream(
                raw,
                digest=digest,
                diff_id=diff_id,
                media_type=media_type,
                label=label,
                limits=budget.limits,
            )
            applier = _LayerApplier(writer, budget, label, on_entry, space)
            try:
                with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
                    applier.apply(archive)
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                stream.damage = exc
            stream.finish()
        return LayerResult(digest, applier.result_entries, applier.result_bytes, applier.whiteouts)
    except OSError as exc:
        if is_disk_full(exc):
            raise full_disk_error(slot.parent, f"unpacking {label}", exc) from exc
        raise
    finally:
        writer.close()
