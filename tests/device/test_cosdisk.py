"""The cOS-disk backend's boot selection: grubenv follows the journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosgitops.device.cosdisk import (
    ARMED_FOR,
    BootedImage,
    GrubBootLoader,
    partition_path,
    read_boot_file,
    running_record,
)
from cosgitops.device.grubenv import read_grubenv
from cosgitops.device.layout import DeviceRoot
from cosgitops.device.state import BootAssessment, DeviceState, SlotRecord
from cosgitops.errors import DeviceError


def record(version: str, storage: str) -> SlotRecord:
    return SlotRecord(version, f"sha256:{version}", f"r/x@sha256:{version}", storage, "squashfs")


ONE = record("1.0.0", "state/slots/1.0.0-aa.squashfs")
TWO = record("1.1.0", "state/slots/1.1.0-bb.squashfs")
REC = record("1.0.0", "recovery/slots/1.0.0-cc.squashfs")


@pytest.fixture
def loader(tmp_path: Path) -> GrubBootLoader:
    (tmp_path / "state").mkdir()
    return GrubBootLoader(DeviceRoot(tmp_path))


def test_partition_paths() -> None:
    assert partition_path(TWO) == "/slots/1.1.0-bb.squashfs"
    assert partition_path(REC) == "/slots/1.0.0-cc.squashfs"
    with pytest.raises(DeviceError, match="not on a partition"):
        partition_path(record("9", "elsewhere.squashfs"))


def test_committed_state_names_images_and_is_not_tentative(loader: GrubBootLoader) -> None:
    state = DeviceState(active=TWO, passive=ONE, recovery=REC)
    assert loader.follow(state, 3)
    env = loader.read()
    assert env["cos_active"] == "/slots/1.1.0-bb.squashfs"
    assert env["cos_passive"] == "/slots/1.0.0-aa.squashfs"
    assert env["cos_recovery"] == "/slots/1.0.0-cc.squashfs"
    assert env["cos_tentative"] == "" and env["cos_tries"] == ""
    assert not loader.follow(state, 3), "an unchanged state rewrites nothing"


def test_pending_release_arms_the_counter_once(loader: GrubBootLoader) -> None:
    pending = DeviceState(active=TWO, passive=ONE, recovery=REC, boot=BootAssessment(True, 0))
    loader.follow(pending, 3)
    env = loader.read()
    assert env["cos_tentative"] == "1" and env["cos_tries"] == "xxx"
    assert env[ARMED_FOR] == "/slots/1.1.0-bb.squashfs"
    # GRUB takes one try per boot; the next follow() must not hand them back
    env["cos_tries"] = "x"
    from cosgitops.device.grubenv import write_grubenv

    write_grubenv(loader.path, env)
    counted = DeviceState(active=TWO, passive=ONE, recovery=REC, boot=BootAssessment(True, 2))
    assert not loader.follow(counted, 3)
    assert read_grubenv(loader.path)["cos_tries"] == "x"


def test_arming_counts_the_boots_already_made(loader: GrubBootLoader) -> None:
    state = DeviceState(active=TWO, passive=ONE, boot=BootAssessment(True, 2))
    loader.follow(state, 3)
    assert loader.read()["cos_tries"] == "x"


def test_commit_clears_the_assessment(loader: GrubBootLoader) -> None:
    loader.follow(DeviceState(active=TWO, passive=ONE, boot=BootAssessment(True, 0)), 3)
    loader.follow(DeviceState(active=TWO, passive=ONE), 3)
    env = loader.read()
    assert env["cos_tentative"] == "" and env["cos_tries"] == "" and env[ARMED_FOR] == ""


def test_a_new_pending_image_is_armed_again(loader: GrubBootLoader) -> None:
    three = record("1.2.0", "state/slots/1.2.0-dd.squashfs")
    loader.follow(DeviceState(active=TWO, passive=ONE, boot=BootAssessment(True, 0)), 2)
    loader.exhaust()
    loader.follow(DeviceState(active=three, passive=TWO, boot=BootAssessment(True, 0)), 2)
    assert loader.read()["cos_tries"] == "xx"


def test_folder_slots_cannot_be_booted(loader: GrubBootLoader) -> None:
    folder = SlotRecord("1.0.0", "sha256:1", "r@sha256:1", "state/slots/1.0.0-aa", "dir")
    with pytest.raises(DeviceError, match="GRUB boots squashfs"):
        loader.follow(DeviceState(active=folder), 3)


def test_oneshot_recovery_and_exhaust(loader: GrubBootLoader) -> None:
    loader.follow(DeviceState(active=TWO, recovery=REC), 3)
    loader.boot_recovery_once()
    assert loader.read()["cos_oneshot"] == "recovery"
    loader.exhaust()
    assert loader.tries_left() == 0 and loader.read()["cos_tentative"] == "1"


def test_boot_file(tmp_path: Path) -> None:
    path = tmp_path / "boot"
    assert read_boot_file(path) is None
    path.write_text("slot=passive\nimage=/slots/1.0.0-aa.squashfs\n")
    booted = read_boot_file(path)
    assert booted == BootedImage("passive", "/slots/1.0.0-aa.squashfs")
    state = DeviceState(active=TWO, passive=ONE, recovery=REC)
    assert running_record(state, booted) == ONE
    recovery = BootedImage("recovery", "/slots/1.0.0-cc.squashfs")
    assert running_record(state, recovery) == REC
    assert running_record(state, BootedImage("active", "/slots/1.0.0-cc.squashfs")) is None
    path.write_text("slot=sideways\n")
    with pytest.raises(DeviceError, match="names no image"):
        read_boot_file(path)
