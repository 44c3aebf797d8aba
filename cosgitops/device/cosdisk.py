"""The cOS-disk slot backend: images on COS_STATE, chosen by GRUB through ``grubenv``.

On a device booted from a cosgitops disk the device root is assembled by the boot
script at ``/run/cosgitops/device`` from bind mounts (``state`` = COS_STATE,
``recovery`` = COS_RECOVERY, ``oem`` = /oem, ``persistent`` = /usr/local, ``agent`` =
/oem/.cosgitops/agent with its layer cache on COS_PERSISTENT), so the journal, the
slots and the layer cache live where the folder backend keeps them. What differs:

* slots are squashfs images (``state/slots/<name>.squashfs``), the only form GRUB boots;
* the switch is GRUB's: ``state/grubenv`` names the active, passive and recovery
  images and carries the boot assessment (``cos_tentative`` and the ``cos_tries``
  counter GRUB decrements), written from the journal after every change of it;
* the running system is the slot the boot script mounted (``/run/cosgitops/boot``), so
  health checks run against ``/`` and a boot of the passive image while the journal
  still waits for the active one means GRUB fell back.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops.device.grubenv import read_grubenv, write_grubenv
from cosgitops.device.layout import DeviceRoot
from cosgitops.device.state import DeviceState, SlotRecord
from cosgitops.errors import CosgitopsError, DeviceError

BOOT_FILE = Path("/run/cosgitops/boot")
GRUBENV = "grubenv"
BACKEND = "cos-disk"
# The variables the agent owns; GRUB only ever rewrites cos_tries (and clears cos_oneshot).
ACTIVE, PASSIVE, RECOVERY = "cos_active", "cos_passive", "cos_recovery"
TENTATIVE, TRIES, ONESHOT = "cos_tentative", "cos_tries", "cos_oneshot"
ARMED_FOR = "cos_tentative_image"  # which active image the counter was armed for


@dataclass(frozen=True)
class BootedImage:
    """What the boot script mounted as the root of the running system."""

    slot: str  # active | passive | recovery (as GRUB chose it)
    image: str  # path of the image on its partition, e.g. /slots/1.1.0-ab12.squashfs

    @property
    def partition(self) -> str:
        return "recovery" if self.slot == "recovery" else "state"

    def matches(self, record: SlotRecord | None) -> bool:
        if record is None or not record.storage.startswith(self.partition + "/"):
            return False
        return partition_path(record) == self.image


def read_boot_file(path: Path = BOOT_FILE) -> BootedImage | None:
    """The running system's image, or None when this system did not boot from a
    cosgitops disk (a device root on disk, a container, a test)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    values = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    slot, image = values.get("slot", ""), values.get("image", "")
    if slot not in ("active", "passive", "recovery") or not image.startswith("/"):
        raise DeviceError(
            f"{path} names no image ({text.strip()[:200]!r})",
            hint="it is written by the cosgitops boot script; reboot the device",
        )
    return BootedImage(slot, image)


def partition_path(record: SlotRecord) -> str:
    """``state/slots/X.squashfs`` -> ``/slots/X.squashfs``: the path GRUB and the boot
    script use on the partition itself."""
    parts = Path(record.storage).parts
    if len(parts) < 2 or parts[0] not in ("state", "recovery"):
        raise DeviceError(
            f"the slot of {record.version} is stored at {record.storage!r}, not on a partition",
            hint="a cOS disk keeps images under state/slots or recovery/slots",
        )
    return "/" + "/".join(parts[1:])


def _image(record: SlotRecord | None) -> str:
    if record is None or not record.storage:
        return ""
    if record.format != "squashfs":
        raise DeviceError(
            f"release {record.version} is stored as {record.format!r}; GRUB boots squashfs images",
            hint="set slots.backend: cos-disk only on a device booted from a cosgitops disk",
        )
    return partition_path(record)


class GrubBootLoader:
    """Keeps ``state/grubenv`` in step with the journal."""

    def __init__(self, device: DeviceRoot) -> None:
        self.path = device.state_dir / GRUBENV

    def read(self) -> dict[str, str]:
        return read_grubenv(self.path)

    def wanted(
        self, state: DeviceState, current: dict[str, str], max_attempts: int
    ) -> dict[str, str]:
        """The environment ``state`` asks for, given what GRUB has now (pure)."""
        values = dict(current)
        active = _image(state.active)
        values[ACTIVE] = active
        values[PASSIVE] = _image(state.passive)
        values[RECOVERY] = _image(state.recovery)
        if state.boot.pending and active:
            if current.get(TENTATIVE) != "1" or current.get(ARMED_FOR) != active:
                # Arm the counter once per pending image; after that only GRUB counts
                # down, so a reboot does not hand the image fresh tries.
                left = max(1, max_attempts - state.boot.attempts)
                values[TENTATIVE] = "1"
                values[TRIES] = "x" * left
                values[ARMED_FOR] = active
        else:
            values[TENTATIVE] = ""
            values[TRIES] = ""
            values[ARMED_FOR] = ""
        return values

    def follow(self, state: DeviceState, max_attempts: int) -> bool:
        """Rewrite grubenv when ``state`` asks for something else; True if it changed."""
        current = self.read()
        wanted = self.wanted(state, current, max_attempts)
        if wanted == current:
            return False
        write_grubenv(self.path, wanted)
        return True

    def tries_left(self) -> int:
        return len(self.read().get(TRIES, ""))

    def exhaust(self) -> None:
        """No tentative boot left: GRUB boots the fallback (passive, else recovery) next."""
        values = self.read()
        values[TENTATIVE] = "1"
        values[TRIES] = ""
        write_grubenv(self.path, values)

    def boot_recovery_once(self) -> None:
        values = self.read()
        values[ONESHOT] = "recovery"
        write_grubenv(self.path, values)


def running_record(state: DeviceState, booted: BootedImage) -> SlotRecord | None:
    """The journal's record of the image that is running, if it names it."""
    for name in ("active", "passive", "recovery"):
        record = state.slot(name)
        with contextlib.suppress(DeviceError):
            if record is not None and booted.matches(record):
                return record
    return None


def system_facts() -> dict[str, object]:
    """How the running system is mounted, for the ``booted`` event: the root read-only,
    the ephemeral overlays, the persistent partitions."""
    mounts: dict[str, str] = {}
    root_mode = "unknown"
    watched = ("/", "/etc", "/var", "/oem", "/usr/local", "/home", "/tmp")  # noqa: S108 - mount points reported
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 4:
                continue
            target = fields[1].replace("\\040", " ")
            if target not in watched:
                continue
            options = fields[3].split(",")
            mode = "ro" if "ro" in options else "rw"
            mounts[target] = f"{fields[2]} {mode}"
            if target == "/":
                root_mode = mode
    return {"root": root_mode, "mounts": mounts}


class BootableApplier:
    """An applier whose slots must be bootable images: after the wrapped applier wrote
    the image, it is checked to hold a kernel, an initrd and the boot integration, and
    refused otherwise (the journal then drops the slot). A device never switches to an
    image GRUB cannot boot."""

    def __init__(self, inner: Any, device: DeviceRoot) -> None:
        self.inner = inner
        self.device = device

    def check_space(self, image: Any, partition: str) -> None:
        self.inner.check_space(image, partition)

    def apply(self, image: Any, store: Any, partition: str, progress: Any) -> Any:
        from cosgitops.bootdisk.bootable import check_bootable

        result = self.inner.apply(image, store, partition, progress)
        path = self.device.root / result.record.storage
        try:
            check_bootable(path)
        except CosgitopsError as error:
            raise DeviceError(
                f"release {image.release.version} cannot boot on this device: {error.message}",
                hint="the release was not installed; publish an image built on a cosgitops "
                "base (a kernel, an initrd and the boot integration)",
            ) from error
        return result


def copy_image_slot(device: DeviceRoot, slots: Any, source: SlotRecord) -> SlotRecord:
    """A byte copy of the image slot ``source`` (the recovery image) as a new slot on
    COS_STATE, checked against the digest recorded when it was installed."""
    import os
    import shutil

    from cosgitops.device import faults
    from cosgitops.device.slots import SQUASHFS_SUFFIX, file_digest
    from cosgitops.device.state import now_text
    from cosgitops.fsutil import fsync_dir

    origin = slots.location(source, "recovery")
    base = device.partition("state")
    transition = base / f"transition{SQUASHFS_SUFFIX}"
    transition.unlink(missing_ok=True)
    with open(origin, "rb") as reader, open(transition, "xb") as writer:
        shutil.copyfileobj(reader, writer, 1024 * 1024)
        writer.flush()
        os.fsync(writer.fileno())
    faults.crash_point("reset-copied")
    digest = file_digest(transition)
    if source.file_digest and digest != source.file_digest:
        transition.unlink(missing_ok=True)
        raise DeviceError(
            "the copy of the recovery image does not match it",
            hint="the recovery image changed while it was copied; run the reset again",
        )
    label = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{source.version}-reset")
    target = base / "slots" / f"{label[:60]}-{os.urandom(4).hex()}{SQUASHFS_SUFFIX}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(transition, target)
    fsync_dir(target.parent)
    faults.crash_point("reset-stored")
    return SlotRecord(
        version=source.version,
        digest=source.digest,
        image=source.image,
        storage=str(target.relative_to(device.root)),
        format="squashfs",
        manifest_digest=source.manifest_digest,
        layers=source.layers,
        file_digest=digest,
        installed=now_text(),
    )


def request_reboot() -> None:
    """Ask systemd for a reboot; GRUB then picks the image from grubenv."""
    import shutil
    import subprocess

    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise DeviceError("cannot reboot: systemctl is not on PATH", hint="reboot by hand")
    result = subprocess.run([systemctl, "reboot"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DeviceError(f"systemctl reboot failed: {result.stderr.strip()[-300:]}")
