"""Recovery: the recovery entry boots, `device reset` restores the active image from the
recovery image, and a fresh disk whose first boot fails ends in recovery, not in a loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosgitops.bootdisk.build import build_disk
from cosgitops.bootdisk.read import DiskImage, read_grubenv
from cosgitops.demoboot import (
    DERIVATIVE,
    GuestSession,
    build_base_for,
    commit_version,
    scaffold_repository,
    write_example,
)
from cosgitops.release import release
from cosgitops.vm.machine import Machine
from tests.helpers.bootbase import BuiltBase

pytestmark = [pytest.mark.boot, pytest.mark.timeout(3600)]

ROOT = "--root /run/cosgitops/device"
# after this boot's assessment, whatever the order of the units before it
AFTER_CHECK = (
    "systemd-run --no-block --setenv=COSGITOPS_CONSOLE_EVENTS=1 "
    "-p After=cosgitops-boot-check.service"
)
# Device-local cloud-config (COS_OEM): drives the device through recovery and back, once.
SCRIPT = f"""\
name: recovery test
stages:
  network:
    - name: Ask for the recovery image once
      if: '[ ! -e /oem/step-1 ] && grep -q slot=active /run/cosgitops/boot'
      commands:
        - touch /oem/step-1 && sync
        - {AFTER_CHECK} /usr/bin/cosgitops device reboot --recovery {ROOT}
    - name: From recovery, restore the active image
      if: '[ ! -e /oem/step-2 ] && grep -q slot=recovery /run/cosgitops/boot'
      commands:
        - touch /oem/step-2 && sync
        - {AFTER_CHECK} /usr/bin/cosgitops device reset --reboot {ROOT}
"""


def _repository(tmp_path: Path, built_base: BuiltBase, *, healthy: bool) -> tuple[Path, Path]:
    repo, public = tmp_path / "repo", tmp_path / "public"
    scaffold_repository(repo)
    spec_base, _ = build_base_for(
        repo, built_base.sources, built_base.wheelhouse, built_base.cache, lambda _: None
    )
    write_example(repo, spec_base)
    if not healthy:
        commit_version(repo, "1.0.1", healthy=False)
    release(repo, public_dir=public)
    return repo, public


def test_recovery_boots_and_reset_restores_the_active_image(
    tmp_path: Path, built_base: BuiltBase
) -> None:
    repo, public = _repository(tmp_path, built_base, healthy=True)
    oem = tmp_path / "oem"
    oem.mkdir()
    (oem / "90_recovery_test.yaml").write_text(SCRIPT)
    disk = tmp_path / "disk.img"
    build_disk(repo, DERIVATIVE, disk, oem=oem, max_attempts=1, public_dir=public)
    first_image = read_grubenv(disk)["cos_active"]
    machine = Machine(disk, tmp_path / "vm")
    session = GuestSession(machine, tmp_path / "serial", 900)
    try:
        one = session.boot_until("reboot")
        assert (one.last("booted") or {}).get("slot") == "active"
        assert (one.last("boot-check") or {}).get("outcome") == "committed"
        assert (one.last("reboot") or {}).get("recovery") is True
        session.finish(one)
        two = session.boot_until("boot-check")
        booted = two.last("booted") or {}
        assert (booted.get("slot"), booted.get("version")) == ("recovery", "1.0.0")
        assert booted["root"] == "ro"
        assert (two.last("boot-check") or {}).get("outcome") == "recovery"
        session.finish(two)  # the reset reboots into the restored image
        three = session.boot_until("boot-check")
        session.expect_booted(three, "1.0.0", "active")
        session.expect_check(three, "nothing-pending")
        session.power_off(three)
    finally:
        machine.close()
    state = DiskImage(disk).read_json("COS_STATE", "/state.json")
    active = state["slots"]["active"]
    assert active["version"] == "1.0.0" and active["storage"].removeprefix("state") != first_image
    assert active["fileDigest"] == state["slots"]["recovery"]["fileDigest"], "a verified copy"
    assert read_grubenv(disk)["cos_oneshot"] == ""


def test_a_fresh_disk_whose_first_boot_fails_ends_in_recovery(
    tmp_path: Path, built_base: BuiltBase
) -> None:
    repo, public = _repository(tmp_path, built_base, healthy=False)
    disk = tmp_path / "disk.img"
    build_disk(repo, DERIVATIVE, disk, max_attempts=1, public_dir=public)
    machine = Machine(disk, tmp_path / "vm")
    session = GuestSession(machine, tmp_path / "serial", 900)
    try:
        one = session.boot_until("boot-check")
        session.expect_booted(one, "1.0.1", "active")
        session.expect_check(one, "retry")
        session.finish(one)
        for _ in range(2):  # and it stays there: no boot loop through the broken image
            boot = session.boot_until("boot-check")
            booted = boot.last("booted") or {}
            assert booted.get("slot") == "recovery"
            check = boot.last("boot-check") or {}
            assert check.get("outcome") == "recovery"
            assert "1.0.1 did not pass its boot assessment" in check.get("message", "")
            session.power_off(boot)
    finally:
        machine.close()
