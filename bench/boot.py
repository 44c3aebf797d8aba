#!/usr/bin/env python3
"""What a real device costs, measured in QEMU guests in one run.

A base is built (or reused) from Debian packages, ``example`` is released on it, a cOS
disk is written and booted; then two real changes are handed to the running device on
an update medium:

* 1.1.0 changes one overlay file;
* 1.2.0 moves to a base 1.1.0 that adds one package (``jq``).

Printed, side by side:

* power-on to a committed health check (GRUB, kernel, initramfs, systemd, cloud-config
  stages, ``boot-check``), and to the login prompt;
* the same image booted plainly (its kernel and initrd, the root on an ext4 disk,
  ``root=/dev/vda``: no GRUB, no image loopback, no overlays) to the login prompt: the
  cost of the boot integration;
* OTA bytes for each change against the whole image (what Elemental and Kairos devices
  download for any change), and the device-side apply time and bytes written.

    sudo .venv/bin/python bench/boot.py [--mirror LINE] [--wheelhouse DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cosgitops.bootdisk.build import build_disk  # noqa: E402
from cosgitops.bootdisk.filesystems import make_ext4  # noqa: E402
from cosgitops.bootdisk.medium import write_update_medium  # noqa: E402
from cosgitops.bootdisk.read import DiskImage  # noqa: E402
from cosgitops.demoboot import (  # noqa: E402
    DERIVATIVE,
    BootRecord,
    GuestSession,
    build_base_for,
    commit_version,
    scaffold_repository,
    sync_medium,
    write_example,
)
from cosgitops.release import release  # noqa: E402
from cosgitops.vm.events import event_matches  # noqa: E402
from cosgitops.vm.host import find_firmware, qemu_binary  # noqa: E402
from cosgitops.vm.machine import Machine, SharedFolder  # noqa: E402

MiB = 1024 * 1024


def _login(line: str) -> bool:
    return "login:" in line


def plain_boot(image: Path, work: Path, accel: str) -> float:
    """Seconds from power-on to the login prompt for the image booted plainly."""
    tree = work / "plain-root"
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(tree), str(image)], check=True)
    disk = work / "plain.img"
    size = sum(p.lstat().st_size for p in tree.rglob("*")) * 3 // 2 + 256 * MiB
    make_ext4(tree, disk, label="plain", size=size - size % MiB)
    kernel, initrd = work / "vmlinuz", work / "initrd.img"
    shutil.copyfile(tree / "boot" / "vmlinuz", kernel)
    shutil.copyfile(tree / "boot" / "initrd.img", initrd)
    shutil.rmtree(tree)
    firmware = find_firmware()
    argv = [
        qemu_binary(), "-machine", "q35", "-accel", accel, "-smp", "2", "-m", "1024",
        "-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot",
        "-drive", f"if=pflash,format=raw,readonly=on,file={firmware.code}",
        "-drive", f"if=none,id=sys,format=raw,file={disk}",
        "-device", "virtio-blk-pci,drive=sys",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "root=/dev/vda rw console=ttyS0,115200 quiet panic=10",
        "-serial", "stdio",
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    seen = b""
    try:
        while time.monotonic() - started < 900:
            chunk = process.stdout.read1(4096)
            if not chunk:
                break
            seen = (seen + chunk)[-4096:]
            if b"login:" in seen:
                return time.monotonic() - started
    finally:
        process.kill()
        process.wait()
    raise SystemExit("the plain boot never reached a login prompt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", action="append", help="apt source line (a local mirror)")
    parser.add_argument("--wheelhouse", type=Path)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/cosgitops/bases")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "boot")
    parser.add_argument("--accel", default="auto")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as tmp:
        work = Path(tmp)
        repo, public, share = work / "repo", work / "public", work / "medium"
        share.mkdir()
        scaffold_repository(repo)
        spec_base, _ = build_base_for(repo, args.mirror, args.wheelhouse, args.cache, print)
        write_example(repo, spec_base)
        release(repo, public_dir=public)
        disk = work / "disk.img"
        build_disk(repo, DERIVATIVE, disk, update_interval=5, max_attempts=1, public_dir=public)
        machine = Machine(disk, work / "vm", accel=args.accel, shared=SharedFolder(share))
        figures["accelerator"] = machine.accel
        session = GuestSession(machine, args.out / "serial", 1200, print)
        try:
            log = args.out / "serial" / "01-boot.log"
            machine.start(log)
            started = time.monotonic()
            outcome = machine.wait(until=_login, timeout=900)
            figures["power_on_to_login_s"] = round(time.monotonic() - started, 1)
            if not any(e.event == "boot-check" for e in outcome.events):
                outcome = machine.wait(until=event_matches("boot-check"), timeout=900)
            checked = next(e for e in outcome.events if e.event == "boot-check")
            assert checked.get("outcome") == "committed", checked.data
            figures["power_on_to_committed_s"] = round(time.monotonic() - started, 1)
            first = BootRecord(1, log, "running", figures["power_on_to_committed_s"],
                               [dict(e.data) for e in outcome.events])  # fmt: skip
            session.boots.append(first)
            session._started = started

            def hand_over(version: str) -> dict[str, Any]:
                staged = work / f"staged-{version}"
                medium = write_update_medium(public, staged, derivative=DERIVATIVE)
                sync_medium(medium.path, share)
                record = session.boots[-1]
                applied = session.until_reboot(record, version)
                nxt = session.boot_until("boot-check")
                session.expect_check(nxt, "committed")
                return applied

            commit_version(repo, "1.1.0", motd="one changed overlay file")
            release(repo, public_dir=public)
            overlay = hand_over("1.1.0")
            base_file = repo / "bases" / "debian" / "base.yaml"
            base_file.write_text(
                base_file.read_text()
                .replace("[iputils-ping]", "[iputils-ping, jq]")
                .replace("version: 1.0.0", "version: 1.1.0")
            )
            subprocess.run(["git", "-C", str(repo), "commit", "-qam", "base 1.1.0: jq"],
                           check=True)  # fmt: skip
            new_base, _ = build_base_for(repo, args.mirror, args.wheelhouse, args.cache, print)
            derivative = repo / "derivatives" / DERIVATIVE / "derivative.yaml"
            derivative.write_text(derivative.read_text().replace(spec_base, new_base))
            commit_version(repo, "1.2.0")
            release(repo, public_dir=public)
            package = hand_over("1.2.0")
            session.power_off(session.boots[-1])
        finally:
            machine.close()
        state = DiskImage(disk).read_json("COS_STATE", "/state.json")
        image_file = work / "active.squashfs"
        DiskImage(disk).copy_out(
            "COS_STATE", state["slots"]["active"]["storage"].removeprefix("state"), image_file
        )
        written = image_file.stat().st_size
        for name, event in (("one_overlay_file", overlay), ("one_added_package", package)):
            figures[name] = {
                "downloaded_bytes": event["bytesDownloaded"],
                "layers_downloaded": event["layersDownloaded"],
                "image_bytes": event["imageBytes"],
                "fraction_of_image": round(event["bytesDownloaded"] / event["imageBytes"], 5),
                "apply_seconds": event["seconds"],
                "bytes_written": written + event["bytesDownloaded"],
            }
        accel = "kvm" if figures["accelerator"] == "kvm" else "tcg"
        figures["plain_boot_to_login_s"] = round(plain_boot(image_file, work, accel), 1)
    figures["integration_cost_s"] = round(
        figures["power_on_to_login_s"] - figures["plain_boot_to_login_s"], 1
    )
    (args.out / "boot.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
