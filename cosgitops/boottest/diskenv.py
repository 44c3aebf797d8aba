"""Changing the GRUB environment block of a powered-off cOS disk image, in place.

The boot test forces a failure for one power-on through ``cos_cmdline`` (kernel
parameters GRUB appends to every entry) and takes it off again before the next. The
block is rewritten where it lies, 1024 bytes in the file's one data block, exactly as
GRUB's own ``save_env`` rewrites it: no file-system metadata changes, no mount, no
privileges. The block is located with ``debugfs`` and checked against the file's
content before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cosgitops.bootdisk.tools import DiskError, run

STATE_LABEL = "COS_STATE"
GRUBENV_PATH = "/grubenv"


def _debugfs(spec: str, request: str) -> str:
    result = run(["debugfs", "-R", request, spec], what=f"{STATE_LABEL}: {request}")
    return result.stdout.decode("utf-8", errors="replace")


def grubenv_offset(disk: Path) -> int:
    """The byte offset of COS_STATE's ``/grubenv`` block within the raw ``disk``."""
    from cosgitops.bootdisk.read import DiskImage

    partition = DiskImage(disk).partition(STATE_LABEL)
    spec = f"{disk}?offset={partition.offset}"
    block_text = _debugfs(spec, f"bmap {GRUBENV_PATH} 0").strip()
    sizes = [
        line.split(":", 1)[1].strip()
        for line in _debugfs(spec, "stats").splitlines()
        if line.startswith("Block size:")
    ]
    if not block_text.isdigit() or int(block_text) == 0 or not sizes or not sizes[0].isdigit():
        raise DiskError(f"{disk}: cannot locate {GRUBENV_PATH} on {STATE_LABEL} ({block_text!r})")
    return partition.offset + int(block_text) * int(sizes[0])


def update_grubenv(disk: Path, changes: Mapping[str, str]) -> dict[str, str]:
    """Set ``changes`` in the grubenv of the powered-off raw ``disk``; the new variables."""
    from cosgitops.bootdisk.read import read_grubenv
    from cosgitops.device.grubenv import SIZE, parse_grubenv, render_grubenv

    disk = Path(disk)
    offset = grubenv_offset(disk)
    current = read_grubenv(disk)
    with disk.open("r+b") as handle:
        handle.seek(offset)
        block = handle.read(SIZE)
        if len(block) != SIZE or parse_grubenv(block) != current:
            raise DiskError(f"{disk}: the block at {offset} is not {STATE_LABEL}'s grubenv")
        values = {**current, **changes}
        handle.seek(offset)
        handle.write(render_grubenv(values))
        handle.flush()
        os.fsync(handle.fileno())
    if read_grubenv(disk) != values:
        raise DiskError(f"{disk}: grubenv did not take the change")
    return values
