from __future__ import annotations

import pytest

from tests.helpers.tools import require

TOOLS = ("mkfs.ext4", "debugfs", "dumpe2fs", "mkfs.vfat", "mmd", "mcopy", "mdir", "sgdisk",
         "qemu-img", "tar2sqfs", "rdsquashfs", "unsquashfs", "grub-mkstandalone")  # fmt: skip


@pytest.fixture(autouse=True)
def _disk_tools() -> None:
    """The disk tests run the real tools (.ci/run installs them; CI fails without them)."""
    require(*TOOLS)
