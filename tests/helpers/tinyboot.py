"""A tiny UEFI payload for boot tests that need no OS: GRUB built with
``grub-mkstandalone`` (the host's grub-efi-amd64-bin) around an embedded grub.cfg that
talks on the serial console, on a cOS-layout disk the project's own writer makes.

It boots in a few seconds under TCG and exercises the firmware, the GPT, the ESP, and
whatever the script reads: GRUB finding COS_STATE by label, reading an ext4 file,
looping a squashfs image, writing grubenv.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cosgitops.bootdisk.image import DiskContent
from cosgitops.device.grubenv import render_grubenv

SERIAL_PRELUDE = """\
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
terminfo -g 250x50 serial vt100
set pager=0
"""
# terminfo: GRUB wraps serial output at 80 columns unless told the terminal is wider
MODULES = (
    "part_gpt fat ext2 squash4 loopback search serial terminfo echo cat test sleep halt "
    "reboot loadenv"
)


def grub_efi(dest: Path, script: str) -> Path:
    """``dest`` = a BOOTX64.EFI that runs ``script`` (after the serial console set-up)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.cfg"
    work.write_text(SERIAL_PRELUDE + script)
    subprocess.run(
        ["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(dest), f"--modules={MODULES}",
         "--install-modules=" + MODULES, "--locales=", "--themes=", "--fonts=",
         f"boot/grub/grub.cfg={work}"],
        check=True, capture_output=True,
    )  # fmt: skip
    work.unlink()
    return dest


def grubenv_block(values: dict[str, str] | None = None) -> bytes:
    """A 1024-byte GRUB environment block (as the agent writes it)."""
    return render_grubenv(values or {})


def staging(root: Path, script: str, *, state: dict[str, bytes] | None = None) -> DiskContent:
    """Staging folders for a disk whose ESP boots ``script``; ``state`` adds files
    (relative path -> bytes) to COS_STATE."""
    folders = {name: root / name for name in ("esp", "oem", "recovery", "state", "persistent")}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    grub_efi(folders["esp"] / "EFI" / "BOOT" / "BOOTX64.EFI", script)
    for relative, data in (state or {}).items():
        target = folders["state"] / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return DiskContent(**folders)
