"""Reading a disk image back without mounting it: its partitions (by GPT name = label)
and the files on them (ext4 through debugfs, the ESP through mtools).

Tests and ``demo --boot`` use this to look at a disk after a guest ran on it: the
journal and images on COS_STATE, the agent folder on COS_OEM, grubenv, the ESP.

After a power cut an ext4 file system still holds its last changes in its own journal
(jbd2): the kernel replays them at the next mount, debugfs does not. Such a partition
is read from a replayed copy, so what is read is what the guest's next boot will see;
the disk itself stays as the guest left it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

from cosgitops.bootdisk.filesystems import Ext4Entry, Ext4Reader, FatReader
from cosgitops.bootdisk.gpt import GptPartition, GptTable, read_gpt
from cosgitops.bootdisk.layout import ESP_TYPE_GUID, MiB
from cosgitops.bootdisk.tools import DiskError, run

_EXT4_MAGIC = 0xEF53
_INCOMPAT_RECOVER = 0x0004
_COPY_CHUNK = 4 * MiB
_replayed: dict[tuple[str, int, int, int], Path] = {}
_replay_dirs: list[Path] = []


def needs_journal_replay(disk: Path, offset: int) -> bool:
    """Whether the ext4 file system ``offset`` bytes into ``disk`` was left with
    unreplayed journal entries (mounted, then cut off)."""
    with open(disk, "rb") as handle:
        handle.seek(offset + 1024)
        superblock = handle.read(0x64)
    if len(superblock) < 0x64 or struct.unpack_from("<H", superblock, 0x38)[0] != _EXT4_MAGIC:
        return False
    return bool(struct.unpack_from("<I", superblock, 0x60)[0] & _INCOMPAT_RECOVER)


def _scratch() -> Path:
    if not _replay_dirs:
        _replay_dirs.append(Path(tempfile.mkdtemp(prefix="cosgitops-replay-")))
        atexit.register(shutil.rmtree, _replay_dirs[0], True)
    return _replay_dirs[0]


def copy_sparse(source: Path, target: Path, *, offset: int = 0, size: int | None = None) -> None:
    """Copy ``size`` bytes of ``source`` from ``offset`` (default: all of it) to a new
    ``target``, keeping holes: a disk image is mostly holes."""
    end = source.stat().st_size if size is None else offset + size
    with open(source, "rb") as reader, open(target, "wb") as writer:
        fd = reader.fileno()
        position = offset
        while position < end:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
                stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
            except OSError:  # ENXIO: only a hole is left
                break
            if start >= end:
                break
            reader.seek(start)
            writer.seek(start - offset)
            left = stop - start
            while left > 0:
                chunk = reader.read(min(left, _COPY_CHUNK))
                if not chunk:
                    break
                writer.write(chunk)
                left -= len(chunk)
            position = stop
        writer.truncate(end - offset)
        writer.flush()
        os.fsync(writer.fileno())


def replayed_copy(disk: Path, partition: GptPartition) -> Path:
    """A sparse copy of ``partition`` with its ext4 journal replayed (cached while the
    disk is unchanged)."""
    stat = disk.stat()
    key = (str(disk.resolve()), partition.offset, stat.st_mtime_ns, stat.st_size)
    if key in _replayed and _replayed[key].exists():
        return _replayed[key]
    copy = _scratch() / f"{partition.name}-{len(_replayed)}.ext4"
    copy_sparse(disk, copy, offset=partition.offset, size=partition.size)
    # exit code 1 means "errors corrected", which a journal replay is
    result = run(["e2fsck", "-E", "journal_only", "-y", str(copy)],
                 what=f"{partition.name}: replaying its journal", check=False)  # fmt: skip
    if result.returncode not in (0, 1):
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise DiskError(f"{partition.name}: replaying its ext4 journal failed: {output[-400:]}")
    _replayed[key] = copy
    return copy


def list_partitions(disk: Path) -> list[GptPartition]:
    """The partitions of a raw disk image, in table order."""
    return list(read_gpt(disk).partitions)


class DiskImage:
    """A raw disk image opened for reading (the file is read on every call, so it shows
    what a guest wrote since)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def table(self) -> GptTable:
        return read_gpt(self.path)

    def partitions(self) -> list[GptPartition]:
        return list(self.table().partitions)

    def partition(self, label: str) -> GptPartition:
        return self.table().by_name(label)

    def labels(self) -> list[str]:
        return [partition.name for partition in self.partitions()]

    def _is_fat(self, partition: GptPartition) -> bool:
        return partition.type_guid == ESP_TYPE_GUID

    def ext4(self, label: str) -> Ext4Reader:
        partition = self.partition(label)
        if self._is_fat(partition):
            raise DiskError(f"{label} is the EFI system partition (FAT), not ext4")
        return self._ext4_reader(partition)

    def _ext4_reader(self, partition: GptPartition) -> Ext4Reader:
        if needs_journal_replay(self.path, partition.offset):
            return Ext4Reader(replayed_copy(self.path, partition), label=partition.name)
        return Ext4Reader(self.path, partition.offset, label=partition.name)

    def fat(self, label: str) -> FatReader:
        partition = self.partition(label)
        return FatReader(self.path, partition.offset, label=label)

    def read_bytes(self, label: str, path: str, *, max_bytes: int = 64 * MiB) -> bytes:
        """A file from the partition labelled ``label`` (ext4 or the ESP)."""
        partition = self.partition(label)
        if self._is_fat(partition):
            data = FatReader(self.path, partition.offset, label=label).read_bytes(path)
            if len(data) > max_bytes:
                raise DiskError(f"{label}: {path} is over {max_bytes} bytes")
            return data
        return self._ext4_reader(partition).read_bytes(path, max_bytes=max_bytes)

    def read_text(self, label: str, path: str) -> str:
        return self.read_bytes(label, path, max_bytes=16 * MiB).decode("utf-8", errors="replace")

    def read_json(self, label: str, path: str) -> Any:
        text = self.read_text(label, path)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise DiskError(f"{label}: {path} is not JSON: {exc}") from exc

    def listdir(self, label: str, path: str = "/") -> list[str]:
        partition = self.partition(label)
        if self._is_fat(partition):
            return FatReader(self.path, partition.offset, label=label).listdir(path)
        reader = self._ext4_reader(partition)
        return [entry.name for entry in reader.listdir(path)]

    def stat(self, label: str, path: str) -> Ext4Entry | None:
        return self.ext4(label).stat(path)

    def exists(self, label: str, path: str) -> bool:
        partition = self.partition(label)
        if self._is_fat(partition):
            parent, _, name = path.strip("/").rpartition("/")
            try:
                return name in FatReader(self.path, partition.offset).listdir(parent)
            except DiskError:
                return False
        return self.ext4(label).stat(path) is not None

    def copy_out(self, label: str, path: str, dest: Path) -> None:
        """Copy a (large) file, e.g. a slot image, out of an ext4 partition."""
        self.ext4(label).copy_out(path, dest)


def read_grubenv(disk: Path, label: str = "COS_STATE", path: str = "/grubenv") -> dict[str, str]:
    """The variables of the GRUB environment block on a partition of ``disk``."""
    from cosgitops.device.grubenv import parse_grubenv

    return parse_grubenv(DiskImage(disk).read_bytes(label, path, max_bytes=64 * 1024))
