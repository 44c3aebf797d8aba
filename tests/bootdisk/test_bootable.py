"""Whether an OS image can boot from a cOS disk, judged on the squashfs image."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cosgitops.bootdisk.bootable import (
    BOOT_INTEGRATION,
    check_bootable,
    copy_boot_integration,
)
from cosgitops.bootdisk.tools import BootImageError
from cosgitops.device.flatten import LayerBlob, flatten_layers
from tests.device.test_flatten import E, Layers, d, f, sym

EFI_DIR = BOOT_INTEGRATION.lstrip("/") + "/EFI/BOOT"


def bzimage(size: int = 4096) -> bytes:
    data = bytearray(size)
    data[0x202:0x206] = b"HdrS"
    return bytes(data)


def arm64_image(size: int = 4096) -> bytes:
    data = bytearray(size)
    data[0x38:0x3C] = b"ARM\x64"
    return bytes(data)


def pe(machine: int, size: int = 2048) -> bytes:
    data = bytearray(size)
    data[:2] = b"MZ"
    struct.pack_into("<I", data, 0x3C, 0x80)
    data[0x80:0x84] = b"PE\x00\x00"
    struct.pack_into("<H", data, 0x84, machine)
    return bytes(data)


def bootable_entries() -> list[E]:
    return [
        f("boot/vmlinuz-6.1.0-amd64", bzimage()),
        sym("boot/vmlinuz", "vmlinuz-6.1.0-amd64"),
        f("boot/initrd.img-6.1.0-amd64", b"\x1f\x8binitrd"),
        sym("boot/initrd.img", "initrd.img-6.1.0-amd64"),
        f(f"{EFI_DIR}/BOOTX64.EFI", pe(0x8664)),
        f(f"{EFI_DIR}/grub.cfg", "search --label COS_STATE --set=root\n"),
        f("usr/lib/os-release", 'NAME="Test OS"\nVERSION_ID="1.0.0"\n'),
        sym("etc/os-release", "../usr/lib/os-release"),
    ]


def image_of(tmp_path: Path, entries: list[E], name: str = "image.squashfs") -> Path:
    layers = Layers(tmp_path / name.replace(".", "-"))
    blobs: list[LayerBlob] = layers.stack(entries)
    return flatten_layers(blobs, tmp_path / name).path


def test_a_bootable_image(tmp_path: Path) -> None:
    image = image_of(tmp_path, bootable_entries())
    boot = check_bootable(image)
    assert boot.kernel == "/boot/vmlinuz-6.1.0-amd64" and boot.kernel_size == 4096
    assert boot.initrd == "/boot/initrd.img-6.1.0-amd64"
    assert boot.efi_files == ("EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grub.cfg")
    assert boot.os_release == {"NAME": "Test OS", "VERSION_ID": "1.0.0"}
    assert boot.to_json()["platform"] == "linux/amd64"
    esp = tmp_path / "esp"
    assert copy_boot_integration(image, esp) == ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grub.cfg"]
    assert (esp / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes() == pe(0x8664)
    assert (esp / "EFI" / "BOOT" / "grub.cfg").read_text().startswith("search")


def _without(name: str) -> list[E]:
    return [entry for entry in bootable_entries() if entry.name != name]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        pytest.param(_without("boot/vmlinuz"), "no kernel at /boot/vmlinuz", id="no-kernel"),
        pytest.param(_without("boot/initrd.img-6.1.0-amd64"), "no initrd at /boot/initrd.img",
                     id="dangling-initrd"),
        pytest.param(_without(f"{EFI_DIR}/BOOTX64.EFI"), "no boot integration", id="no-efi"),
        pytest.param(_without(f"{EFI_DIR}/grub.cfg"), "no GRUB configuration", id="no-grub-cfg"),
        pytest.param([*_without("boot/vmlinuz-6.1.0-amd64"),
                      f("boot/vmlinuz-6.1.0-amd64", arm64_image())],
                     "not a linux/amd64 kernel", id="arm64-kernel"),
        pytest.param([*_without(f"{EFI_DIR}/BOOTX64.EFI"), f(f"{EFI_DIR}/BOOTX64.EFI", pe(0xAA64))],
                     "PE machine 0xaa64", id="arm64-efi"),
        pytest.param([*_without(f"{EFI_DIR}/BOOTX64.EFI"), f(f"{EFI_DIR}/BOOTX64.EFI", b"text")],
                     "not a PE binary", id="not-pe"),
        pytest.param([*_without("boot/initrd.img-6.1.0-amd64"), d("boot/initrd.img-6.1.0-amd64")],
                     "initrd /boot/initrd.img is a dir", id="initrd-dir"),
        pytest.param([f("etc/hostname", "x")], "no kernel.*no initrd.*no boot integration",
                     id="scratch"),
    ],
)  # fmt: skip
def test_images_that_cannot_boot_are_named(tmp_path: Path, entries: list[E], message: str) -> None:
    image = image_of(tmp_path, entries)
    with pytest.raises(BootImageError, match=message) as caught:
        check_bootable(image)
    assert caught.value.hint and "bootable base" in caught.value.hint


def test_platforms(tmp_path: Path) -> None:
    arm = [
        f("boot/vmlinuz", arm64_image()),
        f("boot/initrd.img", b"initrd"),
        f(f"{EFI_DIR}/BOOTAA64.EFI", pe(0xAA64)),
        f(f"{EFI_DIR}/grub.cfg", "x"),
    ]
    image = image_of(tmp_path, arm)
    assert check_bootable(image, platform="linux/arm64").platform == "linux/arm64"
    with pytest.raises(BootImageError, match="not a linux/amd64 kernel"):
        check_bootable(image)
    with pytest.raises(BootImageError, match="not supported for linux/riscv64"):
        check_bootable(image, platform="linux/riscv64")
