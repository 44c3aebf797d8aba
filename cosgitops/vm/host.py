"""What this host offers a guest: QEMU, UEFI firmware, and an accelerator that works.

KVM is used only when it really runs guest code: ``/dev/kvm`` can exist on a machine
where KVM cannot run a stock guest (nested virtualisation without VMX/SVM, where the
firmware's first FPU instruction fails with "KVM internal error"). The probe boots a
64 KiB "BIOS" that executes ``fninit`` and reports through QEMU's isa-debug-exit port;
it takes a fraction of a second and its verdict is kept for the process.
``COSGITOPS_VM_ACCEL=kvm|tcg`` overrides it.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cosgitops.errors import CosgitopsError

QEMU = "qemu-system-x86_64"
ACCEL_ENV = "COSGITOPS_VM_ACCEL"
FIRMWARE_DIRS = (Path("/usr/share/OVMF"), Path("/usr/share/ovmf"), Path("/usr/share/qemu"))
CODE_NAMES = ("OVMF_CODE_4M.fd", "OVMF_CODE.fd")
VARS_NAMES = {"OVMF_CODE_4M.fd": "OVMF_VARS_4M.fd", "OVMF_CODE.fd": "OVMF_VARS.fd"}
_PROBE_EXIT = 0x2A  # what the probe writes to the debug-exit port
_PROBE_TIMEOUT = 10.0


class VMError(CosgitopsError):
    """QEMU or the firmware is missing, or a guest could not be run."""


@dataclass(frozen=True)
class Firmware:
    code: Path  # read-only, shared
    vars_template: Path  # copied per machine (its UEFI variables)
    package_version: str = ""


def qemu_binary() -> str:
    found = shutil.which(QEMU)
    if found is None:
        raise VMError(f"{QEMU} is not installed", hint="install qemu-system-x86 (Debian)")
    return found


@functools.cache
def qemu_version() -> str:
    """``7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)``."""
    result = subprocess.run(
        [qemu_binary(), "--version"], capture_output=True, text=True, check=False
    )
    first = result.stdout.splitlines()[0] if result.stdout else ""
    return first.removeprefix("QEMU emulator version ").strip()


def _package_version(path: Path) -> str:
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        return ""
    owner = subprocess.run([dpkg, "-S", str(path)], capture_output=True, text=True, check=False)
    if owner.returncode != 0 or ":" not in owner.stdout:
        return ""
    package = owner.stdout.split(":", 1)[0].strip()
    version = subprocess.run(
        [dpkg, "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return f"{package} {version.stdout.strip()}" if version.returncode == 0 else package


@functools.cache
def find_firmware() -> Firmware:
    """OVMF (x86_64 UEFI) from the distribution's package."""
    for folder in FIRMWARE_DIRS:
        for code_name in CODE_NAMES:
            code = folder / code_name
            template = folder / VARS_NAMES[code_name]
            if code.is_file() and template.is_file():
                return Firmware(code, template, _package_version(code))
    raise VMError(
        "no UEFI firmware (OVMF_CODE_4M.fd and OVMF_VARS_4M.fd) was found",
        hint="install ovmf (Debian)",
    )


def _probe_image() -> bytes:
    image = bytearray(64 * 1024)
    code = bytes([
        0x9B, 0xDB, 0xE3,  # fninit (what OVMF does first; broken nested KVM fails here)
        0xB0, _PROBE_EXIT,  # mov al, 0x2a
        0xE6, 0xF4,  # out 0xf4, al  (isa-debug-exit: QEMU exits with (al << 1) | 1)
        0xF4, 0xEB, 0xFD,  # hlt; jmp back
    ])  # fmt: skip
    image[0xFFF0 : 0xFFF0 + len(code)] = code  # the reset vector
    return bytes(image)


def kvm_works() -> bool:
    """Whether KVM runs guest code here (probed once per process)."""
    return _kvm_works()


@functools.cache
def _kvm_works() -> bool:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="cosgitops-kvm-probe-") as scratch:
        bios = Path(scratch) / "probe.bin"
        bios.write_bytes(_probe_image())
        argv = [
            qemu_binary(), "-accel", "kvm", "-machine", "pc", "-nodefaults", "-display", "none",
            "-m", "16", "-bios", str(bios), "-no-reboot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]  # fmt: skip
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        output = b""
        deadline = time.monotonic() + _PROBE_TIMEOUT
        try:
            # A broken KVM does not exit: QEMU reports the internal error and pauses.
            while process.poll() is None and time.monotonic() < deadline:
                ready, _, _ = select.select([process.stderr], [], [], 0.05)
                if ready:
                    output += os.read(process.stderr.fileno(), 4096)
                    if b"KVM internal error" in output or b"failed to initialize" in output:
                        break
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stderr.close()
    return process.returncode == (_PROBE_EXIT << 1) | 1


def accelerator(choice: str = "auto") -> str:
    """``kvm`` or ``tcg``: ``auto`` (or $COSGITOPS_VM_ACCEL) takes KVM only when it works."""
    choice = os.environ.get(ACCEL_ENV, choice) if choice == "auto" else choice
    if choice not in ("auto", "kvm", "tcg"):
        raise VMError(f"unknown accelerator {choice!r}", hint="use auto, kvm or tcg")
    if choice == "auto":
        return "kvm" if kvm_works() else "tcg"
    return choice
