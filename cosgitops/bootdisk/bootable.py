"""Can this OS image boot from a cOS disk? Checked on the squashfs image, unmounted.

An image boots from the layout when it holds a kernel at ``/boot/vmlinuz`` and an
initrd at ``/boot/initrd.img`` (symlinks followed, as GRUB does), and the boot
integration at ``/usr/lib/cosgitops/boot/efi/`` (``EFI/BOOT/BOOTX64.EFI`` and its
``grub.cfg``, which the disk writer copies to the ESP); and when the kernel and the EFI
binary are built for the disk's platform.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from cosgitops.bootdisk.tools import BootImageError
from cosgitops.device.flatten import SquashfsImage
from cosgitops.errors import NotFoundError

KERNEL = "/boot/vmlinuz"
INITRD = "/boot/initrd.img"
BOOT_INTEGRATION = "/usr/lib/cosgitops/boot/efi"


@dataclass(frozen=True)
class PlatformBoot:
    efi_binary: str  # EFI/BOOT/<name>, the removable-media path firmware boots
    pe_machine: int  # the PE/COFF machine type of that binary


PLATFORMS = {
    "linux/amd64": PlatformBoot("BOOTX64.EFI", 0x8664),
    "linux/arm64": PlatformBoot("BOOTAA64.EFI", 0xAA64),
}


@dataclass(frozen=True)
class BootFiles:
    platform: str
    kernel: str  # the resolved path
    kernel_size: int
    initrd: str
    initrd_size: int
    efi_files: tuple[str, ...]  # relative to BOOT_INTEGRATION
    os_release: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "platform": self.platform,
            "kernel": self.kernel,
            "kernelSize": self.kernel_size,
            "initrd": self.initrd,
            "initrdSize": self.initrd_size,
            "efiFiles": list(self.efi_files),
            "osRelease": dict(self.os_release),
        }


def _kernel_arch(header: bytes) -> str | None:
    """linux/amd64 for an x86 bzImage, linux/arm64 for an arm64 Image, else None."""
    if len(header) >= 0x206 and header[0x202:0x206] == b"HdrS":
        return "linux/amd64"
    if len(header) >= 0x3C and header[0x38:0x3C] == b"ARM\x64":
        return "linux/arm64"
    return None


def _pe_machine(data: bytes) -> int | None:
    if len(data) < 0x40 or data[:2] != b"MZ":
        return None
    (offset,) = struct.unpack_from("<I", data, 0x3C)
    if offset + 6 > len(data) or data[offset : offset + 4] != b"PE\x00\x00":
        return None
    (machine,) = struct.unpack_from("<H", data, offset + 4)
    return int(machine)


def check_bootable(image: SquashfsImage | Path, *, platform: str = "linux/amd64") -> BootFiles:
    """The boot files of ``image``; :class:`BootImageError` naming everything missing."""
    squashfs = image if isinstance(image, SquashfsImage) else SquashfsImage(image)
    expected = PLATFORMS.get(platform)
    if expected is None:
        raise BootImageError(
            f"disk images are not supported for {platform}",
            hint=f"supported platforms: {', '.join(PLATFORMS)}",
        )
    problems: list[str] = []
    files: dict[str, tuple[str, int]] = {}
    for what, path in (("kernel", KERNEL), ("initrd", INITRD)):
        try:
            entry = squashfs.resolve(path)
        except NotFoundError:
            problems.append(f"no {what} at {path}")
            continue
        if entry.kind != "file" or entry.size == 0:
            problems.append(f"the {what} {path} is a {entry.kind} of {entry.size} bytes")
            continue
        files[what] = (entry.path, entry.size)
    if "kernel" in files:
        arch = _kernel_arch(squashfs.read_bytes(files["kernel"][0], max_bytes=256 * 1024 * 1024))
        if arch != platform:
            problems.append(f"the kernel {files['kernel'][0]} is not a {platform} kernel"
                            f" ({arch or 'unknown format'})")  # fmt: skip
    efi = f"{BOOT_INTEGRATION}/EFI/BOOT/{expected.efi_binary}"
    grub_cfg = f"{BOOT_INTEGRATION}/EFI/BOOT/grub.cfg"
    efi_files: list[str] = []
    try:
        efi_entry = squashfs.resolve(efi)
        machine = _pe_machine(squashfs.read_bytes(efi_entry.path, max_bytes=64 * 1024 * 1024))
        if machine != expected.pe_machine:
            found = "not a PE binary" if machine is None else f"PE machine {machine:#06x}"
            problems.append(f"{efi} is not an EFI binary for {platform} ({found})")
        if squashfs.stat(grub_cfg) is None:
            problems.append(f"no GRUB configuration at {grub_cfg}")
        efi_files = [
            path[len(BOOT_INTEGRATION) + 1 :]
            for kind, path in squashfs.entries()
            if kind == "file" and path.startswith(BOOT_INTEGRATION + "/")
        ]
    except NotFoundError:
        problems.append(f"no boot integration at {efi}")
    if problems:
        raise BootImageError(
            f"the image cannot boot from a disk: {'; '.join(problems)}",
            hint="build it on a bootable base (kind: Base), which installs a kernel, an "
            "initrd and the cosgitops boot integration",
        )
    return BootFiles(
        platform=platform,
        kernel=files["kernel"][0],
        kernel_size=files["kernel"][1],
        initrd=files["initrd"][0],
        initrd_size=files["initrd"][1],
        efi_files=tuple(sorted(efi_files)),
        os_release=squashfs.os_release(),
    )


def copy_boot_integration(image: SquashfsImage | Path, esp: Path) -> list[str]:
    """Copy ``/usr/lib/cosgitops/boot/efi/`` of the image into an ESP staging folder."""
    squashfs = image if isinstance(image, SquashfsImage) else SquashfsImage(image)
    return squashfs.copy_tree(BOOT_INTEGRATION, esp)
