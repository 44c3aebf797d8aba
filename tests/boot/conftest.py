"""The boot tests: real QEMU guests booted from cOS disks that cosgitops wrote."""

from __future__ import annotations

import pytest

from tests.helpers.tools import require


@pytest.fixture(autouse=True)
def _boot_tools() -> None:
    require("qemu-system-x86_64", "tar2sqfs", "mkfs.ext4", "mkfs.vfat", "mcopy", "sgdisk")
