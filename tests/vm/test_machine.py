"""The QEMU runner, booting a tiny GRUB payload from a disk the project's own writer
made: firmware, GPT, ESP, GRUB reading ext4 and squashfs from the cOS partitions,
grubenv written across boots, power cuts and timeouts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cosgitops.bootdisk.filesystems import make_ext4
from cosgitops.bootdisk.image import write_disk_image
from cosgitops.bootdisk.read import read_grubenv
from cosgitops.vm.events import event_matches
from cosgitops.vm.host import VMError
from cosgitops.vm.machine import Drive, Machine, SharedFolder
from tests.device.test_flatten import Layers, f, sym
from tests.helpers.tinyboot import grubenv_block, staging

BOOT_TIMEOUT = 240  # TCG on a busy 2-core machine; a boot takes 5-15 s


def disk_with(tmp_path: Path, script: str, **state: bytes) -> Path:
    content = staging(tmp_path / "content", script, state=state)
    return write_disk_image(content, tmp_path / "disk.img").path


@pytest.mark.boot
def test_grub_reads_ext4_and_squashfs_from_the_cos_partitions(tmp_path: Path) -> None:
    layers = Layers(tmp_path / "layers")
    blobs = layers.stack([
        f("usr/lib/os-release", 'PRETTY_NAME="Tiny OS 1.0"\n'),
        sym("etc/os-release", "../usr/lib/os-release"),
    ])  # fmt: skip
    squashfs = layers.flatten(blobs).path.read_bytes()
    script = r"""
search --no-floppy --label COS_STATE --set=state
echo "COSGITOPS {\"event\": \"booted\", \"state\": \"$state\"}"
cat ($state)/hello.txt
loopback image ($state)/slots/tiny.squashfs
cat (image)/etc/os-release
echo "COSGITOPS {\"event\": \"done\"}"
halt
"""
    disk = disk_with(tmp_path, script, **{"hello.txt": b"hello from COS_STATE\n",
                                          "slots/tiny.squashfs": squashfs})  # fmt: skip
    with Machine(disk, tmp_path / "vm") as machine:
        started = time.monotonic()
        result = machine.boot(tmp_path / "serial" / "01.log", timeout=BOOT_TIMEOUT)
        elapsed = time.monotonic() - started
        assert result.outcome == "poweroff", result.serial_log.read_text(errors="replace")
        assert not machine.running
    assert [event.event for event in result.events] == ["booted", "done"]
    assert result.event("booted")["state"] == "hd0,gpt4"  # type: ignore[index]
    log = result.serial_log.read_text(errors="replace")
    assert "hello from COS_STATE" in log
    assert 'PRETTY_NAME="Tiny OS 1.0"' in log  # through a symlink inside the gzip squashfs
    print(f"tiny payload: power-on to power-off in {elapsed:.1f} s ({machine.accel})")


@pytest.mark.boot
def test_grubenv_survives_reboots_and_each_power_on_is_one_process(tmp_path: Path) -> None:
    script = r"""
search --no-floppy --label COS_STATE --set=state
load_env -f ($state)/grubenv
echo "COSGITOPS {\"event\": \"tries\", \"value\": \"$cos_tries\"}"
if [ "$cos_tries" = "xx" ]; then set cos_tries=x; else set cos_tries=; fi
save_env -f ($state)/grubenv cos_tries
reboot
"""
    disk = disk_with(tmp_path, script, grubenv=grubenv_block({"cos_tries": "xx"}))
    machine = Machine(disk, tmp_path / "vm")
    first = machine.boot(tmp_path / "serial" / "01.log", timeout=BOOT_TIMEOUT)
    assert first.outcome == "reboot"
    assert first.event("tries")["value"] == "xx"  # type: ignore[index]
    assert read_grubenv(disk)["cos_tries"] == "x"  # GRUB wrote the block on our ext4
    second = machine.boot(tmp_path / "serial" / "02.log", timeout=BOOT_TIMEOUT)
    assert second.outcome == "reboot" and machine.boots == 2
    assert second.event("tries")["value"] == "x"  # type: ignore[index]
    assert read_grubenv(disk)["cos_tries"] == ""
    assert first.serial_log != second.serial_log and first.serial_log.is_file()


@pytest.mark.boot
def test_a_predicate_returns_early_and_kill_cuts_the_power(tmp_path: Path) -> None:
    script = r"""
echo "COSGITOPS {\"event\": \"ready\", \"n\": 1}"
echo -n "prompt without a newline: "
sleep 300
halt
"""
    machine = Machine(disk_with(tmp_path, script), tmp_path / "vm")
    result = machine.boot(tmp_path / "serial.log", until=event_matches("ready", n=1),
                          timeout=BOOT_TIMEOUT)  # fmt: skip
    assert result.outcome == "matched" and result.running
    assert result.matched_line is not None and "ready" in result.matched_line
    assert machine.running
    with pytest.raises(VMError, match="already running"):
        machine.start(tmp_path / "other.log")
    prompt = machine.wait(until=lambda line: line.endswith("newline: "), timeout=BOOT_TIMEOUT)
    assert prompt.outcome == "matched" and prompt.matched_line == "prompt without a newline: "
    cut = machine.kill()
    assert cut is not None and cut.outcome == "killed" and not machine.running
    assert [event.event for event in cut.events] == ["ready"]


@pytest.mark.boot
def test_a_timeout_kills_the_guest(tmp_path: Path) -> None:
    machine = Machine(disk_with(tmp_path, "sleep 300\nhalt\n"), tmp_path / "vm")
    result = machine.boot(tmp_path / "serial.log", timeout=3)
    assert result.outcome == "timeout"
    assert not machine.running and 3 <= result.seconds < 30


@pytest.mark.boot
def test_an_update_medium_disk_and_a_shared_folder(tmp_path: Path) -> None:
    medium = tmp_path / "medium"
    medium.mkdir()
    (medium / "medium.json").write_text('{"derivative": "tiny"}\n')
    medium_image = tmp_path / "medium.img"
    make_ext4(medium, medium_image, label="COS_UPDATE", size=16 * 1024 * 1024)
    script = r"""
search --no-floppy --label COS_UPDATE --set=medium
echo "COSGITOPS {\"event\": \"medium\", \"at\": \"$medium\"}"
cat ($medium)/medium.json
halt
"""
    machine = Machine(
        disk_with(tmp_path, script), tmp_path / "vm",
        drives=[Drive(medium_image, serial="cos-update")],
        shared=SharedFolder(medium),
    )  # fmt: skip
    argv = machine.command_line(tmp_path / "s.log", tmp_path / "q.sock")
    share = f"local,path={medium},mount_tag=cosupdate,security_model=none,id=share0,readonly=on"
    assert share in argv
    assert "-nic" in argv and argv[argv.index("-nic") + 1] == "none"
    result = machine.boot(tmp_path / "serial.log", timeout=BOOT_TIMEOUT)
    assert result.outcome == "poweroff"
    assert result.event("medium")["at"] == "hd1"  # type: ignore[index]
    assert '{"derivative": "tiny"}' in result.serial_log.read_text(errors="replace")


def test_a_qemu_that_cannot_start_is_a_crash(tmp_path: Path) -> None:
    disk = tmp_path / "not-a-disk.img"
    disk.write_bytes(b"raw bytes, not qcow2")
    machine = Machine(disk, tmp_path / "vm", disk_format="qcow2")
    result = machine.boot(tmp_path / "serial.log", timeout=60)
    assert result.outcome == "crashed" and result.exit_code
    assert result.qemu_log is not None and "qcow2" in result.qemu_log.read_text().lower()


def test_machine_set_up(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 1024 * 1024)
    first = Machine(disk, tmp_path / "one")
    second = Machine(disk, tmp_path / "two", accel="tcg")
    assert first.vars_file != second.vars_file
    assert first.vars_file.read_bytes() == first.firmware.vars_template.read_bytes()
    argv = second.command_line(tmp_path / "serial.log", tmp_path / "qmp.sock")
    joined = " ".join(argv)
    assert "virtio-blk-pci,drive=system,bootindex=1,serial=cos-system" in joined
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert f"readonly=on,file={first.firmware.code}" in joined
    assert argv[argv.index("-smp") + 1] == "2" and "-cpu" not in argv  # TCG: default CPU
    versions = second.versions()
    assert versions["accelerator"] == "tcg" and versions["qemu"][0].isdigit()
    assert versions["firmware"]
    with pytest.raises(VMError, match="does not exist"):
        Machine(tmp_path / "absent.img", tmp_path / "three")
    with pytest.raises(VMError, match="not running"):
        second.wait()
    assert second.kill() is None
