"""Power cuts while the device writes a new image: the next boot still runs the previous
release, and the next upgrade completes. QEMU is killed (SIGKILL) at named points of
the upgrade, reached for real inside the guest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosgitops.bootdisk.build import build_disk
from cosgitops.bootdisk.medium import write_update_medium
from cosgitops.bootdisk.read import DiskImage, read_grubenv
from cosgitops.demoboot import (
    DERIVATIVE,
    GuestSession,
    build_base_for,
    commit_version,
    scaffold_repository,
    sync_medium,
    write_example,
)
from cosgitops.release import release
from cosgitops.vm.machine import Machine, SharedFolder
from tests.helpers.bootbase import BuiltBase

pytestmark = [pytest.mark.boot, pytest.mark.timeout(3600)]

CUTS = ("layer-downloaded", "transition-complete", "slot-stored", "state-committed")


def journal(disk: Path) -> dict:
    state = DiskImage(disk).read_json("COS_STATE", "/state.json")
    assert isinstance(state, dict)
    return state


def test_power_cuts_while_writing_the_new_image(tmp_path: Path, built_base: BuiltBase) -> None:
    repo, public, share = tmp_path / "repo", tmp_path / "public", tmp_path / "medium"
    share.mkdir()
    scaffold_repository(repo)
    spec_base, _ = build_base_for(
        repo, built_base.sources, built_base.wheelhouse, built_base.cache, lambda _: None
    )
    write_example(repo, spec_base)
    release(repo, public_dir=public)
    commit_version(repo, "1.1.0", motd="1.1.0")
    release(repo, public_dir=public)
    medium = write_update_medium(public, tmp_path / "staged", derivative=DERIVATIVE)
    sync_medium(medium.path, share)
    oem = tmp_path / "oem"
    (oem / ".cosgitops").mkdir(parents=True)
    (oem / ".cosgitops" / "hang-at").write_text("".join(f"{cut}\n" for cut in CUTS))
    disk = tmp_path / "disk.img"
    build_disk(repo, DERIVATIVE, disk, version="1.0.0", oem=oem, update_interval=5,
               max_attempts=1, public_dir=public)  # fmt: skip
    machine = Machine(disk, tmp_path / "vm", shared=SharedFolder(share))
    session = GuestSession(machine, tmp_path / "serial", 900)
    try:
        for number, cut in enumerate(CUTS, start=1):
            record = session.boot_until("fault")
            booted = record.last("booted") or {}
            assert (booted.get("version"), booted.get("slot")) == ("1.0.0", "active"), number
            assert (record.last("fault") or {}).get("step") == cut
            session.cut_power(record)
            state = journal(disk)
            env = read_grubenv(disk)
            assert env["cos_active"] == state["slots"]["passive" if cut == "state-committed"
                                                       else "active"]["storage"][5:]  # fmt: skip
            if cut == "state-committed":
                # the journal names 1.1.0, GRUB still the release that runs
                assert state["slots"]["active"]["version"] == "1.1.0"
                assert state["boot"]["pending"] is True and env["cos_tentative"] == ""
            else:
                assert state["slots"]["active"]["version"] == "1.0.0", json.dumps(state)
                assert state["transaction"] is not None, "the cut left the upgrade begun"
        # after the last cut GRUB boots 1.0.0, the agent sees the journal ahead of GRUB,
        # arms the new image and reboots into it
        record = session.boot_until("boot-check")
        assert (record.last("booted") or {}).get("version") == "1.0.0"
        assert (record.last("boot-check") or {}).get("outcome") == "reboot-needed"
        session.finish(record)
        record = session.boot_until("boot-check")
        session.expect_booted(record, "1.1.0", "active")
        session.expect_check(record, "committed")
        session.power_off(record)
    finally:
        machine.close()
    state = journal(disk)
    assert state["slots"]["active"]["version"] == "1.1.0"
    assert state["slots"]["passive"]["version"] == "1.0.0"
    assert state["boot"]["pending"] is False and state["transaction"] is None
    assert DiskImage(disk).read_text("COS_OEM", "/.cosgitops/hang-at").strip() == ""
    slots = DiskImage(disk).listdir("COS_STATE", "/slots")
    assert len(slots) == 2, f"half-written images were removed: {slots}"
