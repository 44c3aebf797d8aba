"""The cOS disk layout, computed before anything is written (pure: sizes in, offsets out).

A GPT disk with five partitions, in this order, each starting on a 1 MiB boundary:

==  ==============  =====  ==========================================================
#   name = label    fs     sized for
==  ==============  =====  ==========================================================
1   COS_GRUB        vfat   the ESP files (at least 64 MiB, FAT32)
2   COS_OEM         ext4   the device's cloud-config and the agent folder + headroom
3   COS_RECOVERY    ext4   the recovery image + room to write a (larger) new one beside it
4   COS_STATE       ext4   the active image + room for a passive and a transition image
5   COS_PERSISTENT  ext4   /usr/local and the agent's layer cache; takes what is left
==  ==============  =====  ==========================================================

"Room" assumes a later image may be ``image_growth`` times the largest image on the disk
now. An explicit disk size must hold the minimum, or it is refused before anything is
written (naming how much is needed); what it has beyond goes to COS_PERSISTENT.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cosgitops.bootdisk.tools import DiskSizeError
from cosgitops.errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
SECTOR = 512
ALIGN = 1 * MiB  # every partition starts and ends on a MiB boundary
GPT_RESERVED_SECTORS = 33  # the backup GPT at the end: 32 sectors of entries + its header

ESP = "COS_GRUB"
OEM = "COS_OEM"
RECOVERY = "COS_RECOVERY"
STATE = "COS_STATE"
PERSISTENT = "COS_PERSISTENT"
LABELS = (ESP, OEM, RECOVERY, STATE, PERSISTENT)
ESP_TYPE = "EF00"  # sgdisk's code for the EFI system partition
LINUX_TYPE = "8300"
ESP_TYPE_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


@dataclass(frozen=True)
class LayoutPolicy:
    """How much headroom each partition gets beyond what it holds at creation."""

    esp_min: int = 64 * MiB
    oem_min: int = 64 * MiB
    oem_headroom: int = 32 * MiB
    recovery_min: int = 64 * MiB
    state_min: int = 128 * MiB
    persistent_min: int = 256 * MiB
    persistent_headroom: int = 256 * MiB
    image_growth: float = 1.5  # a later image may be this many times the largest one now
    slack: int = 16 * MiB  # state.json, grubenv, manifests, rounding


DEFAULT_POLICY = LayoutPolicy()


@dataclass(frozen=True)
class ContentSizes:
    """Bytes each partition's files take (allocation-rounded), and the largest image."""

    esp: int
    oem: int
    recovery: int
    state: int
    persistent: int
    largest_image: int = 0


@dataclass(frozen=True)
class PartitionPlan:
    number: int
    label: str
    filesystem: str  # vfat | ext4
    offset: int  # bytes from the start of the disk
    size: int  # bytes

    @property
    def type_code(self) -> str:
        return ESP_TYPE if self.filesystem == "vfat" else LINUX_TYPE

    @property
    def first_lba(self) -> int:
        return self.offset // SECTOR

    @property
    def last_lba(self) -> int:
        return (self.offset + self.size) // SECTOR - 1

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_json(self) -> dict[str, object]:
        return {
            "number": self.number,
            "label": self.label,
            "filesystem": self.filesystem,
            "offset": self.offset,
            "size": self.size,
        }


@dataclass(frozen=True)
class DiskLayout:
    size: int  # the whole disk, bytes
    minimum_size: int  # the smallest disk this content fits on
    partitions: tuple[PartitionPlan, ...]

    def partition(self, label: str) -> PartitionPlan:
        for plan in self.partitions:
            if plan.label == label:
                return plan
        raise KeyError(label)

    def to_json(self) -> dict[str, object]:
        return {
            "size": self.size,
            "minimumSize": self.minimum_size,
            "partitions": [plan.to_json() for plan in self.partitions],
        }


def round_up(value: float, unit: int = ALIGN) -> int:
    return math.ceil(value / unit) * unit


def ext4_journal_size(size: int) -> int:
    """The journal ``mkfs.ext4 -J size=`` gets for a file system of ``size`` bytes."""
    if size < 256 * MiB:
        return 4 * MiB
    if size < 2 * GiB:
        return 16 * MiB
    return 64 * MiB


def ext4_size_for(data: int) -> int:
    """A file-system size that holds ``data`` bytes of files (4 KiB blocks, no reserved
    blocks, an inode per 16 KiB, the journal above)."""
    size = round_up(data * 1.04 + 8 * MiB)
    return round_up(size + ext4_journal_size(size))


def esp_size_for(data: int) -> int:
    return round_up(data * 1.1 + 4 * MiB)


def minimum_sizes(content: ContentSizes, policy: LayoutPolicy = DEFAULT_POLICY) -> dict[str, int]:
    """The smallest size of each partition for ``content`` (bytes, MiB multiples)."""
    room = round_up(content.largest_image * policy.image_growth, 4 * KiB)
    return {
        ESP: max(policy.esp_min, esp_size_for(content.esp)),
        OEM: max(policy.oem_min, ext4_size_for(content.oem + policy.oem_headroom)),
        RECOVERY: max(policy.recovery_min, ext4_size_for(content.recovery + room + policy.slack)),
        STATE: max(policy.state_min, ext4_size_for(content.state + 2 * room + policy.slack)),
        PERSISTENT: max(
            policy.persistent_min,
            ext4_size_for(content.persistent + 2 * room + policy.persistent_headroom),
        ),
    }


def _tail(size: int) -> int:
    """Where the last partition must end on a disk of ``size`` bytes (the backup GPT follows)."""
    return (size - GPT_RESERVED_SECTORS * SECTOR) // ALIGN * ALIGN


def plan_layout(sizes: Mapping[str, int], *, size: int | None = None) -> DiskLayout:
    """Offsets for partitions of (at least) ``sizes``; ``size`` is the whole disk.

    The partitions come in :data:`LABELS` order from 1 MiB on; an explicit ``size`` must
    hold them all plus the backup GPT (else :class:`DiskSizeError`, before any writing),
    and the last partition grows to fill it.
    """
    missing = [label for label in LABELS if label not in sizes]
    if missing:
        raise ValueError(f"no size for {missing}")
    needed = ALIGN + sum(round_up(sizes[label]) for label in LABELS) + ALIGN
    if size is None:
        size = needed
    if size < needed:
        raise DiskSizeError(
            f"the disk needs at least {needed // MiB} MiB ({needed} bytes), but --size gives "
            f"{size // MiB} MiB ({size} bytes)",
            hint=f"pass --size {math.ceil(needed / MiB)}MiB or more, or leave --size out",
        )
    if size % SECTOR:
        raise DiskSizeError(f"the disk size {size} is not a multiple of {SECTOR} bytes")
    offset = ALIGN
    plans = []
    for number, label in enumerate(LABELS, start=1):
        length = round_up(sizes[label])
        if label == LABELS[-1]:
            length = _tail(size) - offset
        plans.append(
            PartitionPlan(number, label, "vfat" if label == ESP else "ext4", offset, length)
        )
        offset += length
    return DiskLayout(size=size, minimum_size=needed, partitions=tuple(plans))


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}


def parse_size(text: str) -> int:
    """``8G``, ``8GiB``, ``512M``, ``4096MiB`` or plain bytes -> bytes (binary units)."""
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(
            f"{text!r} is not a size", hint="use bytes or a number with K, M, G or T (binary)"
        )
    number, unit, _ = match.groups()
    value = float(number) * _UNITS[unit.lower()]
    if value != int(value):
        raise UsageError(f"{text!r} is not a whole number of bytes")
    return int(value)
