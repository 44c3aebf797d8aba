"""``layout.expand_partition``: grow the last partition of a disk (cOS's COS_PERSISTENT)
and its ext2/3/4 file system, on first boot, because disk images are small and real
disks are not.

The disk is found as yip finds it: ``device.path`` (a block device, a disk image file
inside the root, or ``script://COMMAND`` printing one), or ``device.label`` (the file
system label of one of its partitions, through /dev/disk/by-label on a running system,
or among the disk images given with ``--disk``). The partition table is GPT; the
partition is recreated by ``sgdisk`` with the same start, type, GUID, name and
attributes and a later end, the kernel is told with ``partx -u`` (the partition may be
mounted), and the file system is grown by ``resize2fs`` (online when mounted). With a
label, the labelled partition must be the last one: nothing else is ever grown.
Growing is idempotent: a partition that already ends where it should, and a file
system that already fills it, are left alone.

``add_partitions`` and ``device.init_disk`` are not run (see the model): they create
or wipe partitions.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops.stages.context import RunContext, StepError
from cosgitops.stages.model import KIND_BY_KEY, is_set
from cosgitops.stages.report import KindOutcome
from cosgitops.stages.values import Apply, integer, outcome, text

MiB = 1024 * 1024
_EXT_MAGIC = 0xEF53


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based, as sgdisk and the kernel count
    first: int  # LBA
    last: int
    type_guid: str
    guid: str
    attributes: int
    name: str


@dataclass(frozen=True)
class GptTable:
    sector: int
    backup_lba: int
    last_usable: int
    entry_sectors: int
    partitions: tuple[Partition, ...]


def read_gpt(disk: Path) -> GptTable:
    """The GPT of ``disk`` (a block device or an image file)."""
    with open(disk, "rb") as handle:
        for sector in (512, 4096):
            handle.seek(sector)
            header = handle.read(92)
            if header[:8] == b"EFI PART":
                break
        else:
            raise StepError(
                f"{disk} has no GPT partition table",
                hint="cosgitops grows partitions of GPT disks only",
            )
        backup_lba, _first_usable, last_usable = struct.unpack_from("<QQQ", header, 32)
        entries_lba, count, size = struct.unpack_from("<QII", header, 72)
        if not 128 <= size <= 4096 or count > 1024:
            raise StepError(f"{disk}: the GPT header is damaged")
        handle.seek(entries_lba * sector)
        raw = handle.read(count * size)
    partitions: list[Partition] = []
    for index in range(count):
        entry = raw[index * size : (index + 1) * size]
        if len(entry) < 128 or entry[:16] == b"\0" * 16:
            continue
        first, last, attributes = struct.unpack_from("<QQQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        partitions.append(
            Partition(
                index + 1,
                first,
                last,
                str(uuid.UUID(bytes_le=entry[:16])).upper(),
                str(uuid.UUID(bytes_le=entry[16:32])).upper(),
                attributes,
                name,
            )
        )
    entry_sectors = -(-count * size // sector)
    return GptTable(sector, backup_lba, last_usable, entry_sectors, tuple(partitions))


def disk_bytes(disk: Path) -> int:
    with open(disk, "rb") as handle:
        return handle.seek(0, os.SEEK_END)


def ext_label_and_size(disk: Path, offset: int) -> tuple[str, int] | None:
    """(volume label, bytes) of an ext2/3/4 file system at ``offset``, None if none."""
    with open(disk, "rb") as handle:
        handle.seek(offset + 1024)
        block = handle.read(1024)
    if len(block) < 1024 or struct.unpack_from("<H", block, 56)[0] != _EXT_MAGIC:
        return None
    blocks_lo = struct.unpack_from("<I", block, 4)[0]
    log_size = struct.unpack_from("<I", block, 24)[0]
    incompat = struct.unpack_from("<I", block, 96)[0]
    blocks_hi = struct.unpack_from("<I", block, 0x150)[0] if incompat & 0x80 else 0
    label = block[120:136].split(b"\0", 1)[0].decode("utf-8", "replace")
    return label, ((blocks_hi << 32) | blocks_lo) * (1024 << log_size)


def _host(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Disk tools run on the machine itself, whatever the root: disks are not in it."""
    if shutil.which(argv[0]) is None:
        raise StepError(f"{argv[0]} is not installed", hint=f"install the package with {argv[0]}")
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
        timeout=1800,
    )


def _checked(argv: list[str], *, ok: tuple[int, ...] = (0,)) -> str:
    result = _host(argv)
    output = result.stdout.decode("utf-8", "replace").strip()
    if result.returncode not in ok:
        raise StepError(
            f"{' '.join(argv)} failed (exit {result.returncode}): {output[-600:]}",
            pointer=("layout",),
        )
    return output


@dataclass(frozen=True)
class _Disk:
    path: Path
    image: bool  # a disk image file rather than a block device
    labelled: int | None  # the partition the label names
    shown: str


def _parent_disk(partition: Path) -> tuple[Path, int]:
    name = partition.name
    sys_path = Path("/sys/class/block") / name
    number_file = sys_path / "partition"
    if not number_file.exists():
        raise StepError(f"{partition} is not a partition")
    number = int(number_file.read_text().strip())
    parent = Path(os.path.realpath(sys_path)).parent.name
    return Path("/dev") / parent, number


def _find_disk(ctx: RunContext, device: Mapping[str, Any]) -> _Disk | str:
    """The disk to work on, or why it is skipped on this root."""
    path = text(device.get("path")).strip()
    label = text(device.get("label")).strip()
    if path.startswith("script://"):
        result = ctx.shell(path[len("script://") :])
        if result.returncode != 0:
            raise StepError(
                f"{path} failed: {result.stdout.decode(errors='replace')[-300:]}",
                pointer=("layout", "device", "path"),
            )
        path = result.stdout.decode().strip()
    if path:
        if path.startswith("/dev/"):
            if not ctx.live:
                return "the machine's block devices are left alone with --root"
            real = Path(os.path.realpath(path))
            if not real.exists() or not stat.S_ISBLK(os.stat(real).st_mode):
                raise StepError(
                    f"{path} is not a block device", pointer=("layout", "device", "path")
                )
            if (Path("/sys/class/block") / real.name / "partition").exists():
                parent, number = _parent_disk(real)
                return _Disk(parent, False, number, path)
            return _Disk(real, False, None, path)
        image = ctx.path(path, pointer=("layout", "device", "path"))
        if not image.is_file():
            raise StepError(
                f"{path} is neither a block device nor a disk image",
                pointer=("layout", "device", "path"),
            )
        return _Disk(image, True, None, path)
    if not label:
        return "no device.path or device.label: nothing to grow (as yip)"
    for candidate in ctx.disks:
        table = read_gpt(candidate)
        for part in table.partitions:
            found = ext_label_and_size(candidate, part.first * table.sector)
            if part.name == label or (found and found[0] == label):
                return _Disk(
                    Path(candidate),
                    not Path(candidate).is_block_device(),
                    part.number,
                    str(candidate),
                )
    if not ctx.live:
        return f"the machine's disks are left alone with --root (no --disk holds {label})"
    by_label = Path("/dev/disk/by-label") / label
    if by_label.exists():
        partition = Path(os.path.realpath(by_label))
    else:
        lookup = _host(["blkid", "-L", label]) if shutil.which("blkid") else None
        if lookup is None or lookup.returncode != 0:
            raise StepError(
                f"no partition is labelled {label}",
                pointer=("layout", "device", "label"),
                hint="check the label with lsblk -f",
            )
        partition = Path(lookup.stdout.decode().strip())
    parent, number = _parent_disk(partition)
    return _Disk(parent, False, number, f"{parent} ({label})")


def _mounted(device: Path) -> bool:
    try:
        rdev = os.stat(device).st_rdev
    except OSError:
        return False
    wanted = f"{os.major(rdev)}:{os.minor(rdev)}"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[2] == wanted for line in lines if len(line.split()) > 2)


def _partition_device(disk: Path, number: int) -> Path:
    sep = "p" if disk.name[-1:].isdigit() else ""
    return disk.with_name(f"{disk.name}{sep}{number}")


def grow(disk: _Disk, size_mib: int) -> list[str]:
    """Grow the last partition of ``disk`` to ``size_mib`` (0: the whole disk) and its
    file system; what changed."""
    changed: list[str] = []
    table = read_gpt(disk.path)
    if not table.partitions:
        raise StepError(f"{disk.shown} has no partition to grow", pointer=("layout",))
    last = max(table.partitions, key=lambda p: p.last)
    if disk.labelled is not None and disk.labelled != last.number:
        raise StepError(
            f"partition {disk.labelled} of {disk.shown} is not the last one (partition "
            f"{last.number} is): only the last partition can grow",
            pointer=("layout", "device"),
        )
    sectors = disk_bytes(disk.path) // table.sector
    usable_end = sectors - 1 - table.entry_sectors - 1  # backup entries and header at the end
    if size_mib:
        wanted_end = last.first + size_mib * MiB // table.sector - 1
        if wanted_end > usable_end:
            raise StepError(
                f"{disk.shown} has room for {(usable_end - last.first + 1) * table.sector // MiB}"
                f" MiB in partition {last.number}, not {size_mib} MiB",
                pointer=("layout", "expand_partition", "size"),
            )
    else:
        wanted_end = usable_end
    # sgdisk aligns nothing at the end; accept an end within one MiB of the goal
    slack = MiB // table.sector
    if last.last + slack < wanted_end:
        if table.backup_lba != sectors - 1:
            _checked(["sgdisk", "-e", str(disk.path)])
        n = last.number
        argv = [
            "sgdisk",
            "-d",
            str(n),
            "-n",
            f"{n}:{last.first}:{wanted_end}",
            "-t",
            f"{n}:{last.type_guid}",
            "-u",
            f"{n}:{last.guid}",
        ]
        if last.name:
            argv += ["-c", f"{n}:{last.name}"]
        for bit in range(64):
            if last.attributes >> bit & 1:
                argv += ["-A", f"{n}:set:{bit}"]
        _checked([*argv, str(disk.path)])
        grown = (wanted_end - last.first + 1) * table.sector // MiB
        changed.append(f"grew partition {n} of {disk.shown} to {grown} MiB")
        if not disk.image:
            _checked(["partx", "-u", "--nr", str(n), str(disk.path)])
    table = read_gpt(disk.path)
    part = next(p for p in table.partitions if p.number == last.number)
    part_bytes = (part.last - part.first + 1) * table.sector
    offset = part.first * table.sector
    found = ext_label_and_size(disk.path, offset)
    if found is None:
        raise StepError(
            f"partition {part.number} of {disk.shown} holds no ext2/3/4 file system: "
            "cosgitops grows only those",
            pointer=("layout",),
        )
    if part_bytes - found[1] < 1024 * 1024:  # already (nearly) fills it
        return changed
    new_size = f"{part_bytes // 1024}K"
    if disk.image:
        target = f"{disk.path}?offset={offset}"
        _checked(["e2fsck", "-f", "-p", target], ok=(0, 1))
        _checked(["resize2fs", target, new_size])
    else:
        device = _partition_device(disk.path, part.number)
        if not _mounted(device):
            _checked(["e2fsck", "-f", "-p", str(device)], ok=(0, 1))
        _checked(["resize2fs", str(device), new_size])
    changed.append(f"grew the file system of partition {part.number} to {part_bytes // MiB} MiB")
    return changed


def prepare_layout(ctx: RunContext, value: Any, step: Mapping[str, Any]) -> Apply:
    settings = value if isinstance(value, Mapping) else {}
    notes: list[str] = []
    for field_path, reason in KIND_BY_KEY["layout"].unsupported_fields.items():
        current: Any = settings
        for part in field_path:
            current = current.get(part) if isinstance(current, Mapping) else None
        if is_set(current):
            notes.append(f"layout.{'.'.join(field_path)} skipped: it {reason}")
    expand = settings.get("expand_partition")
    device = settings.get("device") if isinstance(settings.get("device"), Mapping) else None
    size = 0
    if isinstance(expand, Mapping):
        size = integer(
            expand.get("size"), what="size", pointer=("layout", "expand_partition", "size")
        )

    def apply() -> KindOutcome:
        if expand is None or device is None:
            why = "no expand_partition" if expand is None else "no device (as yip)"
            return KindOutcome("layout", "skipped", "; ".join([*notes, why]))
        found = _find_disk(ctx, device)
        if isinstance(found, str):
            return KindOutcome("layout", "skipped", "; ".join([*notes, found]))
        try:
            changed = grow(found, size)
        except OSError as error:
            raise StepError(
                f"cannot grow {found.shown}: {error.strerror or error}", pointer=("layout",)
            ) from error
        return outcome("layout", changed, notes)

    return apply
