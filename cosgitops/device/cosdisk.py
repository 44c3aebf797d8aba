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

from cosgitops.device.grubenv import read_grubenv, write_grubenv
from cosgitops.device.layout import DeviceRoot
from cosgitops.device.state import DeviceState, SlotRecord
from cosgitops.errors import DeviceError

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
