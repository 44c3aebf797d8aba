"""The forced failure's switch: grubenv on a powered-off disk image, changed in place
where GRUB reads and writes it (and GRUB sees the change at the next power-on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosgitops.bootdisk.image import write_disk_image
from cosgitops.bootdisk.read import DiskImage, read_grubenv
from cosgitops.bootdisk.tools import DiskError
from cosgitops.boottest.diskenv import grubenv_offset, update_grubenv
from tests.helpers.tinyboot import grubenv_block, staging

SCRIPT = r"""
search --no-floppy --label COS_STATE --set=state
load_env -f ($state)/grubenv
echo "COSGITOPS {\"event\": \"env\", \"cmdline\": \"$cos_cmdline\", \"tries\": \"$cos_tries\"}"
set cos_tries=
save_env -f ($state)/grubenv cos_tries
halt
"""


def _disk(tmp_path: Path, **extra: bytes) -> Path:
    state = {"grubenv": grubenv_block({"cos_tries": "x", "cos_active": "/slots/a.squashfs"})}
    state.update(extra)
    return write_disk_image(
        staging(tmp_path / "content", SCRIPT, state=state), tmp_path / "d.img"
    ).path


def test_a_variable_is_set_and_cleared_in_place(tmp_path: Path) -> None:
    disk = _disk(tmp_path, **{"state.json": b"{}\n"})
    image = DiskImage(disk)
    before = image.read_bytes("COS_STATE", "/state.json")
    offset = grubenv_offset(disk)
    assert offset > image.partition("COS_STATE").offset
    values = update_grubenv(disk, {"cos_cmdline": "init=/bin/false"})
    assert values == {
        "cos_tries": "x",
        "cos_active": "/slots/a.squashfs",
        "cos_cmdline": "init=/bin/false",
    }
    assert read_grubenv(disk) == values
    assert grubenv_offset(disk) == offset  # the file stayed where it was
    assert update_grubenv(disk, {"cos_cmdline": ""})["cos_cmdline"] == ""
    assert image.read_bytes("COS_STATE", "/state.json") == before  # nothing else moved


def test_a_disk_without_grubenv_is_refused(tmp_path: Path) -> None:
    content = staging(tmp_path / "content", SCRIPT)
    disk = write_disk_image(content, tmp_path / "d.img").path
    with pytest.raises(DiskError, match="grubenv"):
        update_grubenv(disk, {"cos_cmdline": "x"})


@pytest.mark.boot
def test_grub_reads_the_change_at_the_next_power_on(tmp_path: Path) -> None:
    from cosgitops.vm.machine import Machine

    disk = _disk(tmp_path)
    update_grubenv(disk, {"cos_cmdline": "init=/bin/false panic=5"})
    with Machine(disk, tmp_path / "vm") as machine:
        result = machine.boot(tmp_path / "serial" / "01.log", timeout=240)
    assert result.outcome == "poweroff", result.serial_log.read_text(errors="replace")
    event = result.event("env")
    assert event is not None
    assert (event["cmdline"], event["tries"]) == ("init=/bin/false panic=5", "x")
    # GRUB's own save_env and our in-place change share the block
    assert read_grubenv(disk)["cos_tries"] == ""
    assert update_grubenv(disk, {"cos_cmdline": ""})["cos_tries"] == ""
