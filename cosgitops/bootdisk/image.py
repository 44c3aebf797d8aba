"""Writing a GPT disk image in the cOS layout from staging folders, without privileges.

Everything is checked and sized first (tools present, folders readable, the layout fits
``size``); only then is anything written, and all of it goes to a temporary folder
beside the output: one image file per file system, then the disk (a sparse file:
``sgdisk`` writes the partition table, each file system is copied to its offset keeping
its holes), then ``qemu-img convert`` for qcow2. The finished file is synced and
renamed to the output name; an interruption (SIGINT, SIGTERM, any exception) removes
the temporary folder, so nothing ever appears under the output name half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cosgitops.bootdisk import layout as L
from cosgitops.bootdisk.filesystems import (
    check_esp_tree,
    copy_sparse,
    make_esp,
    make_ext4,
    tree_stats,
)
from cosgitops.bootdisk.gpt import read_gpt
from cosgitops.bootdisk.tools import DiskError, require, run
from cosgitops.errors import CosgitopsError, UsageError
from cosgitops.fsutil import fsync_dir
from cosgitops.progress import NULL_PROGRESS, Progress

ImageFormat = Literal["raw", "qcow2"]
FORMATS: tuple[ImageFormat, ...] = ("raw", "qcow2")


class Interrupted(CosgitopsError):
    """SIGTERM arrived while a disk was being written; nothing was left behind."""

    exit_code = 130


@dataclass(frozen=True)
class DiskContent:
    """What goes on the disk: one staging folder per partition.

    ``esp`` is copied to the root of COS_GRUB (``EFI/BOOT/BOOTX64.EFI``, ``grub.cfg``);
    the others become COS_OEM, COS_RECOVERY, COS_STATE and COS_PERSISTENT as they are.
    ``largest_image`` sizes the room for later images (default: the largest file in
    the state and recovery folders).
    """

    esp: Path
    oem: Path
    recovery: Path
    state: Path
    persistent: Path
    largest_image: int | None = None

    def folder(self, label: str) -> Path:
        return {
            L.ESP: self.esp,
            L.OEM: self.oem,
            L.RECOVERY: self.recovery,
            L.STATE: self.state,
            L.PERSISTENT: self.persistent,
        }[label]


@dataclass(frozen=True)
class DiskResult:
    path: Path
    image_format: ImageFormat
    size: int  # the disk's size as a guest sees it
    file_size: int  # bytes the file takes on the host (sparse/qcow2)
    layout: L.DiskLayout
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.image_format,
            "size": self.size,
            "fileSize": self.file_size,
            "layout": self.layout.to_json(),
            "seconds": round(self.seconds, 3),
        }


def measure_content(content: DiskContent) -> L.ContentSizes:
    """How much each staging folder holds (reads only); refuses what a partition
    cannot hold (special files anywhere, symlinks and non-FAT names on the ESP)."""
    stats = {label: tree_stats(content.folder(label), label=label) for label in L.LABELS}
    check_esp_tree(content.esp, label=L.ESP)
    largest = content.largest_image
    if largest is None:
        largest = max(stats[L.STATE].largest_file, stats[L.RECOVERY].largest_file)
    return L.ContentSizes(
        esp=stats[L.ESP].bytes,
        oem=stats[L.OEM].bytes,
        recovery=stats[L.RECOVERY].bytes,
        state=stats[L.STATE].bytes,
        persistent=stats[L.PERSISTENT].bytes,
        largest_image=largest,
    )


def plan_disk(
    content: DiskContent, *, size: int | None = None, policy: L.LayoutPolicy = L.DEFAULT_POLICY
) -> L.DiskLayout:
    """The layout ``content`` gets on a disk of ``size`` bytes (None: the minimum);
    :class:`~cosgitops.bootdisk.tools.DiskSizeError` if it does not fit. Writes nothing."""
    return L.plan_layout(L.minimum_sizes(measure_content(content), policy), size=size)


def _tools(image_format: ImageFormat) -> None:
    names = ["mkfs.ext4", "debugfs", "dumpe2fs", "mkfs.vfat", "mmd", "mcopy", "sgdisk"]
    if image_format == "qcow2":
        names.append("qemu-img")
    require(*names)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception so the clean-up runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(
            "interrupted by SIGTERM", hint="the disk image was not written; run it again"
        )

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_gpt(disk: Path, disk_layout: L.DiskLayout) -> None:
    argv = ["sgdisk", "--clear", "--set-alignment=2048"]
    for plan in disk_layout.partitions:
        argv += [
            f"--new={plan.number}:{plan.first_lba}:{plan.last_lba}",
            f"--typecode={plan.number}:{plan.type_code}",
            f"--change-name={plan.number}:{plan.label}",
        ]
    run([*argv, str(disk)], what="writing the partition table")


def _check_written(disk: Path, disk_layout: L.DiskLayout) -> None:
    table = read_gpt(disk)
    found = [(p.name, p.offset, p.size) for p in table.partitions]
    wanted = [(p.label, p.offset, p.size) for p in disk_layout.partitions]
    if found != wanted:
        raise DiskError(f"the partition table sgdisk wrote is not the planned one: {found}")


def write_disk_image(
    content: DiskContent,
    output: Path,
    *,
    size: int | None = None,
    image_format: ImageFormat = "raw",
    progress: Progress = NULL_PROGRESS,
    policy: L.LayoutPolicy = L.DEFAULT_POLICY,
) -> DiskResult:
    """Write the disk ``content`` makes to ``output`` (raw or qcow2), atomically."""
    started = time.monotonic()
    if image_format not in FORMATS:
        raise UsageError(f"unknown disk format {image_format!r}", hint="use raw or qcow2")
    output = Path(output)
    if output.is_dir():
        raise UsageError(f"{output} is a folder", hint="name the disk image file to write")
    _tools(image_format)
    disk_layout = plan_disk(content, size=size, policy=policy)
    output.parent.mkdir(parents=True, exist_ok=True)
    with _sigterm_raises():
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{output.name}.", dir=output.parent))
        try:
            raw = work / "disk.raw"
            _truncate_file(raw, disk_layout.size)
            task = progress.task(f"partition table ({disk_layout.size // L.MiB} MiB)")
            _write_gpt(raw, disk_layout)
            task.close()
            with raw.open("r+b") as disk:
                for plan in disk_layout.partitions:
                    task = progress.task(f"{plan.label} ({plan.size // L.MiB} MiB)")
                    fs_image = work / f"{plan.label}.img"
                    source = content.folder(plan.label)
                    if plan.filesystem == "vfat":
                        make_esp(source, fs_image, label=plan.label, size=plan.size)
                    else:
                        make_ext4(source, fs_image, label=plan.label, size=plan.size)
                    copy_sparse(fs_image, disk.fileno(), plan.offset)
                    fs_image.unlink()
                    task.close()
                disk.flush()
                os.fsync(disk.fileno())
            _check_written(raw, disk_layout)
            final = raw
            if image_format == "qcow2":
                task = progress.task("qcow2")
                final = work / "disk.qcow2"
                run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                     str(final)], what="converting to qcow2")  # fmt: skip
                raw.unlink()
                with final.open("rb") as handle:
                    os.fsync(handle.fileno())
                task.close()
            os.chmod(final, 0o644)
            os.replace(final, output)
            fsync_dir(output.parent)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    info = output.stat()
    return DiskResult(
        path=output,
        image_format=image_format,
        size=disk_layout.size,
        file_size=info.st_blocks * 512,
        layout=disk_layout,
        seconds=time.monotonic() - started,
    )


def _truncate_file(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        handle.truncate(size)
