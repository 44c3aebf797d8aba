"""The fault-injection suite for the cOS-disk backend: COS_STATE (here a 24 MiB tmpfs)
fills up while the device writes a new image; the active image stays bootable (it
verifies against its record and grubenv still names it), and once space is back every
command works."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cosgitops.device.agent import DeviceAgent, DeviceSetup
from tests.bootdisk.test_build import make_repository, next_version
from tests.device.test_faults import (
    _check,
    run_on_tmpfs,
    scenario,
    small_disk,  # noqa: F401 - the fixture
)

pytestmark = pytest.mark.slow

VERIFY = """
import sys
from cosgitops.device.agent import DeviceAgent
from cosgitops.device.cosdisk import GrubBootLoader, partition_path
agent = DeviceAgent(sys.argv[1])
try:
    active = agent.journal.load().active
    agent.slots.verify(active, "active")
    named = GrubBootLoader(agent.device).read().get("cos_active")
    print(active.version, "ok" if named == partition_path(active) else f"bad: grub names {named}")
except Exception as exc:
    print("?", "bad:", type(exc).__name__, exc)
"""

POINTS = ["journal-begun", "layer-downloaded", "transition-complete", "slot-stored"]


def _installed(tmp_path: Path) -> Path:
    repo = make_repository(tmp_path / "world")
    public = repo / "public"
    root = tmp_path / "world" / "device"
    DeviceAgent(root).install(
        DeviceSetup(
            index_url=str(public),
            derivative="example",
            trusted_root=public / "metadata" / "1.root.json",
            keys=(repo / ".cosgitops" / "keys" / "cosign.pub",),
            platform="linux/amd64",
            slot_backend="cos-disk",
        )
    )
    noise = repo / "derivatives" / "example" / "overlay" / "usr" / "share" / "noise.bin"
    noise.parent.mkdir(parents=True, exist_ok=True)
    noise.write_bytes(os.urandom(3 * 1024 * 1024))  # the fills land mid-download and mid-write
    next_version(repo, "0.2.0", "release 0.2.0\n")
    return root


@pytest.mark.usefixtures("small_disk")
@pytest.mark.parametrize("point", [*POINTS, "transition-complete+kill"])
def test_cos_state_fills_while_the_new_image_is_written(tmp_path: Path, point: str) -> None:
    root = _installed(tmp_path)
    step, crash = point.removesuffix("+kill"), point.endswith("+kill")
    steps: list[dict[str, Any]] = scenario(step, ["upgrade"], crash=crash)
    steps[0]["env"]["COSGITOPS_FILL_PATH"] = str(tmp_path / "disk" / "filler")
    results = run_on_tmpfs(tmp_path, root, steps, verify=VERIFY)
    first = results[0]
    if crash:
        assert first["code"] == -9, first
    else:
        assert first["code"] == 1 and "free" in first["err"], first
    assert results[1]["active"] == "0.1.0 ok", results[1]
    _check([r for r in results if r.get("code") != -9])
