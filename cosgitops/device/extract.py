"""Safe extraction of OCI image layers into a slot.

Layers come from the network, so every entry is treated as hostile: no absolute paths,
no ``..``, no writes through symlinks (every parent is opened with ``O_NOFOLLOW``
relative to the slot's directory descriptor, so a symlink planted by an earlier entry
or layer cannot redirect a write), hard links only to regular files inside the slot,
no device nodes, and limits on entry count and total size. OCI whiteouts (``.wh.NAME``)
and opaque directories (``.wh..wh..opq``) remove what lower layers put there.

The layer's compressed bytes are hashed while they stream through the extractor and
compared with the digest at the end; the caller extracts into a staging slot that is
thrown away on any error, so a tampered cache file never becomes a bootable slot.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import IntegrityError, RemoteDataError
from cosgitops.oci import media

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_GZIP_TYPES = {media.OCI_LAYER_GZIP, media.DOCKER_LAYER_GZIP}
_TAR_TYPES = {media.OCI_LAYER_TAR, "application/vnd.docker.image.rootfs.diff.tar"}


class UnsafeLayerError(RemoteDataError):
    """A layer tries something a slot must never contain or do."""


@dataclass
class ExtractBudget:
    """Entry and byte counts shared by all layers of one slot."""

    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)
    entries: int = 0
    bytes: int = 0

    def charge(self, entries: int, size: int, where: str) -> None:
        self.entries += entries
        self.bytes += size
        if self.entries > self.limits.extract_max_entries:
            raise UnsafeLayerError(
                f"{where}: more than {self.limits.extract_max_entries} entries",
                hint="the image is far larger than any OS image should be; refused as a bomb",
            )
        if self.bytes > self.limits.extract_max_total_bytes:
            raise UnsafeLayerError(
                f"{where}: more than {self.limits.extract_max_total_bytes} bytes unpacked",
                hint="raise Limits.extract_max_total_bytes if the image is really this big",
            )


class _HashingReader:
    """A read-only file wrapper that hashes what passes through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def split_entry_name(name: str, *, what: str = "entry") -> tuple[str, ...]:
    """The path components of a tar entry name, refusing anything that could escape."""
    if "\x00" in name:
        raise UnsafeLayerError(f"{what} name {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise UnsafeLayerError(
            f"{what} {name!r} has an absolute path",
            hint="layer entries must be relative to the image root",
        )
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeLayerError(
            f"{what} {name!r} climbs out of the image root with '..'",
            hint="the layer was crafted to write outside the slot",
        )
    return parts


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
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @staticmethod
    def remove(name: str, dir_fd: int) -> None:
        info = SlotWriter.lstat(name, dir_fd)
        if info is None:
            return
        if stat.S_ISDIR(info.st_mode):
            # fd-based rmtree: safe against symlinks inside the tree.
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

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


def _tar_mode(media_type: str) -> str:
    if media_type in _GZIP_TYPES:
        return "r|gz"
    if media_type in _TAR_TYPES:
        return "r|"
    if "zstd" in media_type:
        raise UnsafeLayerError(
            f"layer media type {media_type} (zstd) is not supported by this agent",
            hint="publish images with gzip layers",
        )
    return "r|*"


class _LayerApplier:
    def __init__(
        self,
        writer: SlotWriter,
        budget: ExtractBudget,
        label: str,
        on_entry: Callable[[int], None] | None,
    ) -> None:
        self.writer = writer
        self.budget = budget
        self.label = label
        self.on_entry = on_entry
        self.created: set[tuple[str, ...]] = set()
        self.directories: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
        self.result_entries = 0
        self.result_bytes = 0
        self.whiteouts = 0

    def apply(self, archive: tarfile.TarFile) -> None:
        for member in archive:
            parts = split_entry_name(member.name)
            where = f"{self.label}: {member.name!r}"
            self.budget.charge(1, member.size if member.isreg() else 0, where)
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
            raise UnsafeLayerError(f"{self.label}: whiteout {raw!r} names no valid entry")
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
        if member.ischr() or member.isblk():
            raise UnsafeLayerError(
                f"{where} is a device node",
                hint="device files in an OS image layer are refused; /dev is populated at boot",
            )
        if not (
            member.isdir() or member.isreg() or member.issym() or member.islnk() or member.isfifo()
        ):
            raise UnsafeLayerError(f"{where} has an unsupported tar entry type {member.type!r}")
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
                elif member.isfifo():
                    os.mkfifo(base, 0o600, dir_fd=fd)
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
        target = split_entry_name(member.linkname, what=f"{where}: hard link target")
        if not target:
            raise UnsafeLayerError(f"{where}: hard link to the image root")
        with self.writer.directory(target[:-1], create=False) as target_fd:
            info = None if target_fd is None else SlotWriter.lstat(target[-1], target_fd)
            if target_fd is None or info is None:
                raise UnsafeLayerError(
                    f"{where}: hard link to {member.linkname!r}, which is not in the slot",
                    hint="hard links may only point to files the image itself contains",
                )
            if not stat.S_ISREG(info.st_mode):
                raise UnsafeLayerError(
                    f"{where}: hard link to {member.linkname!r}, which is not a regular file"
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
    budget: ExtractBudget | None = None,
    on_entry: Callable[[int], None] | None = None,
) -> LayerResult:
    """Apply one layer (a cached blob) on top of ``slot``; raise on anything unsafe.

    The blob is hashed as it streams; a digest mismatch raises :class:`IntegrityError`
    after the fact, so the caller must treat ``slot`` as garbage on any exception.
    """
    budget = budget or ExtractBudget()
    mode = _tar_mode(media_type)
    label = f"layer {digest[:19]}"
    writer = SlotWriter(slot)
    try:
        with blob.open("rb") as raw:
            reader = _HashingReader(raw)
            applier = _LayerApplier(writer, budget, label, on_entry)
            damage: Exception | None = None
            try:
                with tarfile.open(fileobj=reader, mode=mode) as archive:  # type: ignore[call-overload]
                    applier.apply(archive)
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                damage = exc
            reader.drain()
            actual = "sha256:" + reader.hash.hexdigest()
        if actual != digest:
            raise IntegrityError(
                f"{label} does not match its digest (got {actual})",
                hint="the cached copy was modified on disk; it is discarded and re-downloaded",
            )
        if damage is not None:
            raise RemoteDataError(
                f"{label} is not a valid {mode[2:] or 'tar'} archive: {damage}",
                hint="the publisher pushed a broken layer",
            ) from damage
        return LayerResult(digest, applier.result_entries, applier.result_bytes, applier.whiteouts)
    finally:
        writer.close()
