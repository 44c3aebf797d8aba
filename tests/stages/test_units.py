"""The systemd units that run the stages at boot in the bootable base: systemd itself
accepts them, the preset enables them, and each prints its outcome to the console."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

import cosgitops
from cosgitops.stages.model import BOOT_STAGES

OVERLAY = Path(cosgitops.__file__).parent / "osbase" / "overlay"
UNITS = OVERLAY / "usr/lib/systemd/system"
PRESET = OVERLAY / "usr/lib/systemd/system-preset/80-cosgitops.preset"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def test_every_boot_stage_has_a_unit_that_reports_on_the_console() -> None:
    for stage in BOOT_STAGES:
        unit = _unit(f"cosgitops-stage-{stage}.service")
        service = unit["Service"]
        assert service["ExecStart"] == f"/usr/bin/cosgitops device run-stage {stage}"
        assert "COSGITOPS_CONSOLE_EVENTS=1" in service["Environment"].split()
        assert service["Type"] == "oneshot"
        assert "console" in service["StandardOutput"]


def test_the_early_stages_run_before_sysinit_and_network_after_it_is_online() -> None:
    for stage in ("rootfs", "initramfs", "fs"):
        unit = _unit(f"cosgitops-stage-{stage}.service")["Unit"]
        assert unit["DefaultDependencies"] == "no"
        assert "sysinit.target" in unit["Before"].split()
    assert (
        "cosgitops-stage-rootfs.service"
        in _unit("cosgitops-stage-initramfs.service")["Unit"]["After"].split()
    )
    assert "local-fs.target" in _unit("cosgitops-stage-rootfs.service")["Unit"]["Before"].split()
    assert "local-fs.target" in _unit("cosgitops-stage-fs.service")["Unit"]["After"].split()
    network = _unit("cosgitops-stage-network.service")["Unit"]
    assert "network-online.target" in network["After"].split()
    assert network["Wants"] == "network-online.target"
    assert "getty.target" in _unit("cosgitops-stage-boot.service")["Unit"]["Before"].split()
    timer = _unit("cosgitops-stage-reconcile.timer")["Timer"]
    assert timer["Unit"] == "cosgitops-stage-reconcile.service" and timer["OnUnitActiveSec"]


def test_the_preset_enables_every_unit_that_can_be_enabled() -> None:
    enabled = {
        line.split()[1]
        for line in PRESET.read_text().splitlines()
        if line.startswith("enable cosgitops-stage-")
    }
    installable = {
        path.name for path in UNITS.glob("cosgitops-stage-*") if "[Install]" in path.read_text()
    }
    assert enabled == installable
    assert "cosgitops-stage-reconcile.service" not in enabled  # the timer starts it


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_systemd_accepts_and_enables_them(debian_root: Path) -> None:
    shutil.copytree(
        OVERLAY / "usr/lib/systemd", debian_root / "usr/lib/systemd", dirs_exist_ok=True
    )
    stub = debian_root / "usr/bin/cosgitops"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    in_root = [
        "unshare",
        "--mount",
        "--fork",
        "--pid",
        f"--mount-proc={debian_root / 'proc'}",
        "chroot",
        str(debian_root),
        "sh",
        "-c",
    ]
    verify = subprocess.run(
        [*in_root, "systemd-analyze verify /usr/lib/systemd/system/cosgitops-stage-*"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr
    preset = subprocess.run(
        [*in_root, "systemctl preset-all"], capture_output=True, text=True, check=False, timeout=120
    )
    assert preset.returncode == 0, preset.stderr
    wants = debian_root / "etc/systemd/system"
    for link in (
        "sysinit.target.wants/cosgitops-stage-rootfs.service",
        "sysinit.target.wants/cosgitops-stage-initramfs.service",
        "sysinit.target.wants/cosgitops-stage-fs.service",
        "multi-user.target.wants/cosgitops-stage-boot.service",
        "multi-user.target.wants/cosgitops-stage-network.service",
        "timers.target.wants/cosgitops-stage-reconcile.timer",
    ):
        assert (wants / link).is_symlink(), link
