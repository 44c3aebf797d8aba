from __future__ import annotations

import pytest

from tests.bootdisk.conftest import TOOLS
from tests.helpers.tools import require


@pytest.fixture(autouse=True)
def _vm_tools() -> None:
    """QEMU, and the tools that make the disks it boots (CI fails without them)."""
    require("qemu-system-x86_64", *TOOLS)
