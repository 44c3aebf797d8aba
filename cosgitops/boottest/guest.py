"""The boot test's guest steps: a real cOS disk, booted in QEMU, upgraded by the real
agent inside it, and made to fail once so that GRUB has to fall back by itself.

With a release to upgrade from (``origin``)::

    disk            a disk holding the origin (active and recovery), an update medium
                    (9p share) holding the origin and the candidate, a fresh machine
    boot-from       the origin boots from the active image and commits its boot
    upgrade         the agent finds the candidate on the medium, verifies and writes it,
                    arms a tentative boot and reboots; the disk is copied at that point
    boot-candidate  the candidate boots tentatively from the active image
    health          the derivative's health checks (and the device's) pass: committed
    fallback        on the copy (the candidate armed, not yet booted), the candidate boots
                    with a forced failure (``init=/bin/false``: the kernel panics before
                    any of our code runs); the next power-on GRUB, having no try left,
                    boots the passive image, the origin, and the agent records the
                    fall-back

A fresh install (nothing published on the channel) puts the candidate itself on the disk
(its first boot is assessed, like an upgrade's) and falls back to the recovery image.

The forced failure is set in ``cos_cmdline`` of the powered-off copy's grubenv and taken
off before the next power-on (:mod:`cosgitops.boottest.diskenv`); nothing else of the
disk is touched from outside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosgitops.boottest.steps import StepContext, StepFailed
from cosgitops.progress import human_size

if TYPE_CHECKING:
    from cosgitops.boottest.medium import TestMedium
    from cosgitops.boottest.run import _Run
    from cosgitops.demoboot import BootRecord, GuestSession

FORCED_FAILURE = "init=/bin/false"
UPDATE_INTERVAL = 5  # seconds between the guest agent's looks at the medium
ENDED_BY_ITSELF = ("reboot", "panic", "poweroff")


@dataclass
class _Guests:
    """The machines of one boot test, closed together."""

    machines: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for machine in self.machines:
            with contextlib.suppress(Exception):
                machine.close()


def _images(run: _Run) -> list[Any]:
    from cosgitops.boottest.medium import MediumImage
    from cosgitops.oci import open_store

    assert run.candidate is not None
    images = []
    if run.origin is not None:
        store = open_store(run.origin.image.split("@", 1)[0], run.store_options)
        images.append(MediumImage(run.origin.version, store, run.origin.digest, run.origin))
    images.append(MediumImage(run.derivative.version, run.candidate.store, run.candidate.digest))
    return images


def _session(run: _Run, disk: Path, name: str, medium: TestMedium, guests: _Guests, *,
             prefix: str = "") -> GuestSession:  # fmt: skip
    from cosgitops.demoboot import GuestSession
    from cosgitops.vm.machine import Machine, SharedFolder

    machine = Machine(disk, run.work_dir / name, accel=run.options.accelerator,
                      shared=SharedFolder(medium.root))  # fmt: skip
    guests.machines.append(machine)
    run.environment.update(machine.versions())
    return GuestSession(machine, run.serial_dir, run.options.boot_timeout, log_prefix=prefix)


def _watched(step: StepContext, record: BootRecord) -> None:
    step.serial_log = record.log


def _booted(record: BootRecord) -> str:
    booted = record.last("booted") or {}
    return f"{booted.get('version')} from the {booted.get('slot')} image"


def run_guest_steps(run: _Run) -> None:
    """The disk, the boots, the upgrade, the health checks and the fallback, as steps of
    ``run.runner``; a failing step skips the rest."""
    guests = _Guests()
    try:
        _steps(run, guests)
    finally:
        guests.close()


def _steps(run: _Run, guests: _Guests) -> None:
    from cosgitops import __version__
    from cosgitops.bootdisk.build import build_disk
    from cosgitops.bootdisk.read import copy_sparse
    from cosgitops.boottest.diskenv import update_grubenv
    from cosgitops.boottest.medium import write_test_medium

    runner, origin, candidate = run.runner, run.origin, run.derivative.version
    name = run.derivative.name
    first = origin.version if origin is not None else candidate
    disk, fallback_disk = run.work_dir / "disk.img", run.work_dir / "fallback.img"
    run.serial_dir.mkdir(parents=True, exist_ok=True)
    for old in run.serial_dir.glob("*.log"):
        old.unlink()
    run.environment["cosgitops"] = __version__

    with runner.step("disk", f"a cOS disk with {first}, and an update medium") as step:
        if step is None:
            return
        medium = write_test_medium(run.work_dir / "fleet", run.repository, run.derivative,
                                   _images(run), limits=run.limits)  # fmt: skip
        for path in (disk, fallback_disk):
            path.unlink(missing_ok=True)
        built = build_disk(medium.repository, name, disk, version=first, max_attempts=1,
                           update_interval=UPDATE_INTERVAL, public_dir=medium.index,
                           limits=run.limits)  # fmt: skip
        session = _session(run, disk, "vm", medium, guests)
        step.detail = (
            f"{human_size(built.disk.size)} GPT disk, {first} active and recovery; "
            f"{len(medium.manifests)} release(s) on the medium"
        )
    if runner.failed:
        return
    run.attestable = True  # from here on the result says how the candidate boots

    if origin is None:
        copy_sparse(disk, fallback_disk)  # the fresh disk: its first boot is tentative
    else:
        with runner.step("boot-from", f"{origin.version} boots and commits") as step:
            if step is None:
                return
            record = session.boot_until("boot-check")
            _watched(step, record)
            session.expect_booted(record, origin.version, "active")
            session.expect_check(record, "committed")
            step.detail = f"{_booted(record)}, committed in {record.seconds:.0f}s"
        if runner.failed:
            return
        with runner.step("upgrade", f"the agent installs {candidate} from the medium") as step:
            if step is None:
                return
            _watched(step, record)
            applied = session.wait_for(record, "upgrade")
            if applied.get("outcome") != "applied" or applied.get("version") != candidate:
                why = applied.get("message") or applied.get("summary") or applied.get("outcome")
                raise StepFailed(f"the device did not install {candidate}: {why}")
            session.finish(record)
            copy_sparse(disk, fallback_disk)
            step.detail = (
                f"{applied.get('layersDownloaded')} layer(s), "
                f"{human_size(int(applied.get('bytesDownloaded') or 0))} of a "
                f"{human_size(int(applied.get('imageBytes') or 0))} image in "
                f"{applied.get('seconds')}s"
            )
        if runner.failed:
            return

    with runner.step("boot-candidate", f"{candidate} boots tentatively") as step:
        if step is None:
            return
        record = session.boot_until("boot-check")
        _watched(step, record)
        session.expect_booted(record, candidate, "active")
        step.detail = f"{_booted(record)} in {record.seconds:.0f}s"
    if runner.failed:
        return

    with runner.step("health", "the health checks pass and the boot commits") as step:
        if step is None:
            return
        _watched(step, record)
        check = record.last("boot-check") or {}
        if check.get("outcome") != "committed":
            raise StepFailed(
                f"{candidate} did not commit its boot: "
                f"{check.get('message') or check.get('outcome') or 'no boot-check result'}"
            )
        names = [str(item.get("name")) for item in check.get("checks") or []]
        step.detail = f"{len(names)} check(s) passed" + (f": {', '.join(names)}" if names else "")
        session.machine.kill()
    if runner.failed:
        return

    back_to = (origin.version, "passive") if origin is not None else (candidate, "recovery")
    with runner.step("fallback", f"a failing {candidate} falls back to {back_to[0]}") as step:
        if step is None:
            return
        with _forced_failure(fallback_disk, update_grubenv):
            fallback = _session(run, fallback_disk, "vm-fallback", medium, guests,
                                prefix="fallback-")  # fmt: skip
            failing = fallback.boot_to_end()
        _watched(step, failing)
        if failing.outcome not in ENDED_BY_ITSELF or failing.last("boot-check") is not None:
            raise StepFailed(
                f"the boot with {FORCED_FAILURE} did not fail by itself ({failing.outcome})"
            )
        record = fallback.boot_until("boot-check")
        _watched(step, record)
        fallback.expect_booted(record, *back_to)
        expected = "fell-back" if origin is not None else "recovery"
        fallback.expect_check(record, expected)
        fallback.machine.kill()
        step.detail = (
            f"{FORCED_FAILURE} ended boot 1 ({failing.outcome}); GRUB then booted "
            f"{_booted(record)} and the agent said {expected}"
        )


@contextlib.contextmanager
def _forced_failure(disk: Path, update: Any) -> Iterator[None]:
    """``cos_cmdline`` carries the failure for the power-on in the body, then nothing."""
    update(disk, {"cos_cmdline": FORCED_FAILURE})
    try:
        yield
    finally:
        update(disk, {"cos_cmdline": ""})
