"""Reading a disk image back without mounting it: its partitions (by GPT name = label)
and the files on them (ext4 through debugfs, the ESP through mtools).

Tests and ``demo --boot`` use this to look at a disk after a guest ran on it: the
journal and images on COS_STATE, the agent folder on COS_OEM, grubenv, the ESP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cosgitops.bootdisk.filesystems import Ext4Entry, Ext4Reader, FatReader
from cosgitops.bootdisk.gpt import GptPartition, GptTable, read_gpt
from cosgitops.bootdisk.layout import ESP_TYPE_GUID, MiB
from cosgitops.bootdisk.tools import DiskError


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
        return Ext4Reader(self.path, partition.offset, label=label)

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
        return Ext4Reader(self.path, partition.offset, label=label).read_bytes(
            path, max_bytes=max_bytes
        )

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
        reader = Ext4Reader(self.path, partition.offset, label=label)
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
