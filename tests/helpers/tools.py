"""Tools the tests run from the machine (QEMU, mkfs, GRUB's tools, mmdebstrap).

`.ci/run` installs every one of them; in CI (``CI=true``) a missing tool fails the test
instead of skipping it, so a missing install step cannot hide behind a skip.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (.ci/run installs them)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_root() -> None:
    if os.geteuid() == 0:
        return
    if in_ci():
        pytest.fail("this test needs root, as CI runs")
    pytest.skip("this test needs root")
