"""A QEMU machine for boot tests: UEFI, one system disk, no network, one process per
power-on.

Each :meth:`Machine.boot` starts QEMU once (``-no-reboot``: a guest reboot ends the
process, so every power-on is its own run with its own serial log) and returns when
the guest powers off or reboots, when a predicate on a serial line fires (the guest
keeps running: :meth:`Machine.wait` goes on, :meth:`Machine.kill` cuts the power), or
when the timeout passes (the guest is killed). Why a run ended comes from QEMU's own
``SHUTDOWN`` event on its QMP socket.

The machine: q35, OVMF (read-only code, a private copy of the variables that persists
across this machine's boots, like NVRAM), the system disk as virtio-blk with
``bootindex=1``, optional extra disks (an update medium) and a read-only 9p folder
(``mount_tag=cosupdate``), a virtio RNG, ``-nic none``, the first serial port to a file.
KVM when it works, else TCG with ``-smp 2`` and QEMU's default CPU model.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops.vm.events import GuestEvent, clean_line, iter_complete_lines, parse_event
from cosgitops.vm.host import (
    Firmware,
    VMError,
    accelerator,
    find_firmware,
    qemu_binary,
    qemu_version,
)
from cosgitops.vm.qmp import QMPClient, QMPError

Predicate = Callable[[str], bool]
_POLL = 0.05
_QMP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Drive:
    """An extra disk for the guest (e.g. an update medium), virtio-blk."""

    path: Path
    image_format: str = "raw"
    read_only: bool = True
    serial: str = ""


@dataclass(frozen=True)
class SharedFolder:
    """A host folder the guest mounts with ``mount -t 9p -o trans=virtio TAG DIR``."""

    path: Path
    tag: str = "cosupdate"
    read_only: bool = True


@dataclass
class BootResult:
    """How one power-on ended.

    ``outcome``: ``poweroff`` | ``reboot`` | ``panic`` (the guest ended itself),
    ``matched`` (the predicate fired; still running), ``timeout`` (killed),
    ``killed`` (:meth:`Machine.kill`), ``crashed`` (QEMU failed; see ``qemu_log``).
    """

    outcome: str
    serial_log: Path
    seconds: float
    matched_line: str | None = None
    events: list[GuestEvent] = field(default_factory=list)
    lines: int = 0
    exit_code: int | None = None
    qemu_log: Path | None = None

    @property
    def running(self) -> bool:
        return self.outcome == "matched"

    def event(self, name: str) -> GuestEvent | None:
        """The last event called ``name`` in this boot."""
        found = [event for event in self.events if event.event == name]
        return found[-1] if found else None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "serialLog": str(self.serial_log),
            "seconds": round(self.seconds, 2),
            "matchedLine": self.matched_line,
            "events": [dict(event.data) for event in self.events],
            "exitCode": self.exit_code,
        }


class _Run:
    """One QEMU process and the serial log it writes."""

    def __init__(self, process: subprocess.Popen[bytes], serial_log: Path, qemu_log: Path,
                 qmp: QMPClient) -> None:  # fmt: skip
        self.process = process
        self.serial_log = serial_log
        self.qemu_log = qemu_log
        self.qmp = qmp
        self.started = time.monotonic()
        self.offset = 0
        self.pending = bytearray()
        self.lines = 0
        self.events: list[GuestEvent] = []
        self.killed = False

    def read_lines(self) -> list[str]:
        try:
            with self.serial_log.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        self.pending += data
        lines = list(iter_complete_lines(self.pending))
        for line in lines:
            self.lines += 1
            event = parse_event(line, self.lines)
            if event is not None:
                self.events.append(event)
        return lines

    def partial_line(self) -> str:
        """The line being written (a prompt such as ``login:`` ends without a newline)."""
        return clean_line(self.pending.decode("utf-8", errors="replace"))

    def flush_partial(self) -> list[str]:
        """After the process ended: the last line, even without its newline."""
        lines = self.read_lines()
        if self.pending:
            self.pending += b"\n"
            lines += list(iter_complete_lines(self.pending))
        return lines


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


class Machine:
    """A UEFI virtual machine booting ``disk``; its files live in ``work_dir``."""

    def __init__(
        self,
        disk: Path,
        work_dir: Path,
        *,
        disk_format: str = "raw",
        memory_mib: int = 1024,
        cpus: int = 2,
        accel: str = "auto",
        drives: Sequence[Drive] = (),
        shared: SharedFolder | None = None,
        firmware: Firmware | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.disk = Path(disk).resolve()
        if not self.disk.is_file():
            raise VMError(f"the system disk {self.disk} does not exist")
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.disk_format = disk_format
        self.memory_mib = memory_mib
        self.accel = accelerator(accel)
        self.cpus = cpus if self.accel == "kvm" else 2
        self.drives = tuple(drives)
        self.shared = shared
        self.firmware = firmware or find_firmware()
        self.extra_args = tuple(extra_args)
        self.vars_file = self.work_dir / "OVMF_VARS.fd"
        shutil.copyfile(self.firmware.vars_template, self.vars_file)
        self.boots = 0
        self._run: _Run | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # ------------------------------------------------------------ configuration

    def command_line(self, serial_log: Path, qmp_socket: Path) -> list[str]:
        argv = [
            qemu_binary(), "-name", "cosgitops-guest", "-nodefaults", "-no-user-config",
            "-machine", "q35", "-accel", self.accel, "-smp", str(self.cpus),
            "-m", str(self.memory_mib),
            "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={self.firmware.code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.vars_file}",
            "-drive", f"if=none,id=system,format={self.disk_format},file={self.disk}",
            "-device", "virtio-blk-pci,drive=system,bootindex=1,serial=cos-system",
            "-device", "virtio-rng-pci",
            "-device", "pvpanic",
            "-serial", f"file:{serial_log}",
            "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        ]  # fmt: skip
        if self.accel == "kvm":
            argv += ["-cpu", "host"]
        for index, drive in enumerate(self.drives):
            options = f"if=none,id=extra{index},format={drive.image_format},file={drive.path}"
            if drive.read_only:
                options += ",readonly=on"
            serial = drive.serial or f"extra{index}"
            # a boot index makes OVMF connect the disk (it connects boot devices only)
            device = f"virtio-blk-pci,drive=extra{index},serial={serial},bootindex={index + 2}"
            argv += ["-drive", options, "-device", device]
        if self.shared is not None:
            folder = self.shared
            options = (f"local,path={folder.path},mount_tag={folder.tag},security_model=none,"
                       f"id=share0")  # fmt: skip
            if folder.read_only:
                options += ",readonly=on"
            argv += ["-virtfs", options]
        return [*argv, *self.extra_args]

    def versions(self) -> dict[str, str]:
        """What ran the guests, for reports."""
        return {
            "qemu": qemu_version(),
            "firmware": self.firmware.package_version or self.firmware.code.name,
            "accelerator": self.accel,
            "cpus": str(self.cpus),
            "memoryMiB": str(self.memory_mib),
        }

    # ------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        return self._run is not None and self._run.process.poll() is None

    def start(self, serial_log: Path) -> None:
        """Power on (one QEMU process) without waiting; then :meth:`wait`."""
        if self.running:
            raise VMError("the machine is already running; wait() or kill() it first")
        serial_log = Path(serial_log).resolve()
        serial_log.parent.mkdir(parents=True, exist_ok=True)
        serial_log.unlink(missing_ok=True)
        self.boots += 1
        qmp_socket = self.work_dir / f"qmp-{self.boots}.sock"
        qmp_socket.unlink(missing_ok=True)
        qemu_log = self.work_dir / f"qemu-{self.boots}.log"
        with qemu_log.open("wb") as log:
            process = subprocess.Popen(
                self.command_line(serial_log, qmp_socket),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.work_dir,
            )  # fmt: skip
        self._finalizer = weakref.finalize(self, _kill, process)
        qmp = QMPClient(qmp_socket)
        self._run = _Run(process, serial_log, qemu_log, qmp)
        try:
            qmp.connect(timeout=_QMP_TIMEOUT, alive=lambda: process.poll() is None)
        except QMPError:
            if process.poll() is None:
                self.kill()
                raise
            # QEMU refused to start: wait() reports it as a crash with its output

    def wait(self, *, until: Predicate | None = None, timeout: float = 300.0) -> BootResult:
        """Follow the running guest until it ends, ``until`` fires, or ``timeout``."""
        run = self._run
        if run is None:
            raise VMError("the machine is not running; start() or boot() it first")
        deadline = time.monotonic() + timeout
        while True:
            exited = run.process.poll() is not None
            lines = run.flush_partial() if exited else run.read_lines()
            if until is not None:
                partial = [] if exited else [run.partial_line()]
                for line in [*lines, *(text for text in partial if text)]:
                    if until(line):
                        if exited:
                            break
                        return self._result(run, "matched", line)
            if exited:
                return self._ended(run)
            if time.monotonic() > deadline:
                _kill(run.process)
                run.read_lines()
                return self._result(run, "timeout", None)
            time.sleep(_POLL)

    def boot(self, serial_log: Path, *, until: Predicate | None = None,
             timeout: float = 300.0) -> BootResult:  # fmt: skip
        """One power-on: :meth:`start` then :meth:`wait`."""
        self.start(serial_log)
        return self.wait(until=until, timeout=timeout)

    def kill(self) -> BootResult | None:
        """Cut the power at once (SIGKILL): what a power cut does to the guest."""
        run = self._run
        if run is None:
            return None
        if run.process.poll() is None:
            os.kill(run.process.pid, signal.SIGKILL)
            run.process.wait()
            run.killed = True
        return self._ended(run)

    def power_button(self, *, timeout: float = 120.0) -> BootResult:
        """Press the (ACPI) power button and wait for the guest to shut down."""
        run = self._run
        if run is None or run.process.poll() is not None:
            raise VMError("the machine is not running")
        run.qmp.execute("system_powerdown")
        return self.wait(timeout=timeout)

    def close(self) -> None:
        if self.running:
            self.kill()
        if self._run is not None:
            self._run.qmp.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ results

    def _ended(self, run: _Run) -> BootResult:
        run.flush_partial()
        code = run.process.returncode
        run.qmp.finish()
        if run.killed:
            outcome = "killed"
        else:
            reason = run.qmp.shutdown_reason()
            outcome = {
                "guest-reset": "reboot",
                "guest-shutdown": "poweroff",
                "guest-panic": "panic",
            }.get(reason or "", "crashed" if code else "poweroff")
        return self._result(run, outcome, None)

    def _result(self, run: _Run, outcome: str, line: str | None) -> BootResult:
        return BootResult(
            outcome=outcome,
            serial_log=run.serial_log,
            seconds=time.monotonic() - run.started,
            matched_line=line,
            events=list(run.events),
            lines=run.lines,
            exit_code=run.process.returncode,
            qemu_log=run.qemu_log,
        )
