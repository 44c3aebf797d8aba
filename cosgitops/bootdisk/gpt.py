"""Reading a GPT partition table from a disk image file (pure Python, no tools).

Checks the header signature, both CRC32s and the bounds of every entry, so an offset it
returns can be handed to ``debugfs``/mtools safely. 512-byte and 4096-byte sectors.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cosgitops.bootdisk.tools import DiskError

SIGNATURE = b"EFI PART"
QCOW_MAGIC = b"QFI\xfb"
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")
_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class GptPartition:
    number: int  # 1-based, as sgdisk and Linux count
    name: str  # the GPT partition name (cOS: the file-system label)
    type_guid: str  # upper case, e.g. C12A7328-F81F-11D2-BA4B-00A0C93EC93B
    guid: str
    first_lba: int
    last_lba: int
    attributes: int
    sector_size: int

    @property
    def offset(self) -> int:
        return self.first_lba * self.sector_size

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * self.sector_size

    def to_json(self) -> dict[str, object]:
        return {
            "number": self.number,
            "name": self.name,
            "type": self.type_guid,
            "guid": self.guid,
            "offset": self.offset,
            "size": self.size,
        }


@dataclass(frozen=True)
class GptTable:
    disk_guid: str
    sector_size: int
    first_usable_lba: int
    last_usable_lba: int
    partitions: tuple[GptPartition, ...]

    def by_name(self, name: str) -> GptPartition:
        for partition in self.partitions:
            if partition.name == name:
                return partition
        names = ", ".join(p.name for p in self.partitions) or "none"
        raise DiskError(f"the disk has no partition named {name} (it has: {names})")


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw)).upper()


def read_gpt(disk: Path) -> GptTable:
    """The partition table of a raw disk image; :class:`DiskError` if there is none."""
    disk = Path(disk)
    try:
        handle = disk.open("rb")
    except FileNotFoundError as exc:
        raise DiskError(f"disk image {disk} does not exist") from exc
    with handle:
        if handle.read(4) == QCOW_MAGIC:
            raise DiskError(
                f"{disk} is a qcow2 image, not a raw disk",
                hint="convert it first: qemu-img convert -O raw DISK.qcow2 DISK.img",
            )
        size = disk.stat().st_size
        for sector_size in (512, 4096):
            handle.seek(sector_size)
            header = handle.read(_HEADER.size)
            if len(header) == _HEADER.size and header[:8] == SIGNATURE:
                return _parse(handle, header, sector_size, size, disk)
    raise DiskError(f"{disk} has no GPT partition table", hint="is it a disk image?")


def _parse(handle: BinaryIO, header: bytes, sector_size: int, size: int, disk: Path) -> GptTable:
    (
        _signature, _revision, header_size, header_crc, _reserved, current_lba, _backup_lba,
        first_usable, last_usable, disk_guid, entries_lba, count, entry_size, entries_crc,
    ) = _HEADER.unpack(header)  # fmt: skip
    handle.seek(sector_size)
    full = handle.read(header_size) if 92 <= header_size <= sector_size else b""
    if not full or zlib.crc32(full[:16] + b"\x00\x00\x00\x00" + full[20:]) != header_crc:
        raise DiskError(f"{disk}: the GPT header is damaged (bad CRC)")
    if current_lba != 1 or entry_size < _ENTRY.size or count > _MAX_ENTRIES:
        raise DiskError(f"{disk}: the GPT header is not one this reader understands")
    handle.seek(entries_lba * sector_size)
    table = handle.read(count * entry_size)
    if len(table) != count * entry_size or zlib.crc32(table) != entries_crc:
        raise DiskError(f"{disk}: the GPT partition entries are damaged (bad CRC)")
    partitions = []
    for index in range(count):
        raw = table[index * entry_size : index * entry_size + _ENTRY.size]
        type_guid, unique, first, last, attributes, name = _ENTRY.unpack(raw)
        if type_guid == bytes(16):
            continue
        if not first_usable <= first <= last <= last_usable or (last + 1) * sector_size > size:
            raise DiskError(f"{disk}: GPT partition {index + 1} lies outside the disk")
        partitions.append(
            GptPartition(
                number=index + 1,
                name=name.decode("utf-16-le", errors="replace").split("\x00", 1)[0],
                type_guid=_guid(type_guid),
                guid=_guid(unique),
                first_lba=first,
                last_lba=last,
                attributes=attributes,
                sector_size=sector_size,
            )
        )
    return GptTable(_guid(disk_guid), sector_size, first_usable, last_usable, tuple(partitions))
