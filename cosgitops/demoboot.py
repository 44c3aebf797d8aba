"""``cosgitops demo --boot``: the whole loop on a real OS, in a QEMU guest.

commit a base and a derivative (the pre-commit hook validates) -> build the base from
Debian packages (or reuse one an earlier run built) -> release 1.0.0 -> write a cOS disk
-> boot it -> release 1.1.0 (one overlay file changed) and hand it to the running device
on an update medium (a read-only 9p share: the guest has no network) -> the device
downloads only the changed layers, reboots, and commits 1.1.0 -> release 1.2.0, whose
health check fails -> the tentative boot fails, GRUB falls back to 1.1.0 by itself, and
1.2.0 is rejected and never offered again. Along the way the guest reports, on its
serial console, the running version, the read-only root, the mounts, and a probe that
shows /etc losing a change at every boot while /oem and /usr/local keep theirs.

It leaves ``DIR/disk.img`` (the disk after the last boot), ``DIR/serial/`` (one log per
boot, in boot order), ``DIR/repo`` and ``DIR/public``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops.demo import (
    DemoError,
    Narrate,
    _commit,
    _git,
    _install_hook,
    _set_version,
    prepare_demo_directory,
)
from cosgitops.progress import human_size

DERIVATIVE = "example"
BASE = "debian"
HEALTH_FILE = "etc/example/health"
_PARTS = ("repo", "public", "serial", "vm", "medium", "disk.img")
MEDIUM_SHARE = "medium"  # the folder the guest sees as its update medium
UPDATE_INTERVAL = 5.0
DEMO_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDxf6bqflMU1MwHDLhOSd0X94BYb4kGf77BuRS8b7g10 "
    "demo@cosgitops"
)

PROBE = """\
#!/bin/sh
# cosgitops demo: one line per boot on /etc (ephemeral), /oem and /usr/local (persistent),
# then what the cloud-config made, as an event on the console.
echo boot >> /etc/cosgitops-demo.log
mkdir -p /oem/demo && echo boot >> /oem/demo/boots.log
echo boot >> /usr/local/demo-boots.log
count() { wc -l < "$1" | tr -d ' '; }
user=$(getent passwd demo >/dev/null && echo present || echo missing)
key=$(test -s /home/demo/.ssh/authorized_keys && echo present || echo missing)
unit=$(systemctl is-enabled systemd-networkd.service 2>/dev/null || echo unknown)
printf 'COSGITOPS {"event": "probe", "etcLines": %s, "oemLines": %s, "localLines": %s, \
"hostname": "%s", "user": "%s", "key": "%s", "unit": "%s", "file": "%s"}\\n' \
  "$(count /etc/cosgitops-demo.log)" "$(count /oem/demo/boots.log)" \
  "$(count /usr/local/demo-boots.log)" "$(hostname)" "$user" "$key" "$unit" \
  "$(cat /etc/cosgitops-demo/hello 2>/dev/null | head -c 60)" > /dev/console
"""

CLOUD_CONFIG = f"""\
# yaml-language-server: $schema=https://cosgitops.dev/schemas/cloud-config.schema.json
name: cosgitops demo
stages:
  boot:
    - name: A file
      files:
        - path: /etc/cosgitops-demo/hello
          permissions: 0644
          content: written by the boot stage
    - name: A user with a key
      users:
        demo:
          passwd: "!"
          shell: /bin/sh
          ssh_authorized_keys: ["{DEMO_KEY}"]
    - name: A unit
      systemctl:
        enable: [systemd-networkd.service]
  network:
    - name: The persistence probe
      commands: [/usr/lib/cosgitops-demo/probe]
"""


@dataclass
class BootRecord:
    number: int
    log: Path
    outcome: str
    seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)

    def first(self, name: str) -> dict[str, Any] | None:
        return next((event for event in self.events if event.get("event") == name), None)

    def last(self, name: str) -> dict[str, Any] | None:
        found = [event for event in self.events if event.get("event") == name]
        return found[-1] if found else None

    def to_json(self) -> dict[str, Any]:
        return {
            "boot": self.number,
            "serialLog": str(self.log),
            "outcome": self.outcome,
            "seconds": round(self.seconds, 1),
            "events": self.events,
        }


@dataclass
class BootDemoResult:
    directory: Path
    disk: Path
    boots: list[BootRecord] = field(default_factory=list)
    base_seconds: float = 0.0
    base_reused: bool = False
    upgrade_bytes: int = 0
    image_bytes: int = 0
    seconds: float = 0.0
    state: dict[str, Any] = field(default_factory=dict)  # state.json read from the disk
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "disk": str(self.disk),
            "seconds": round(self.seconds, 1),
            "base": {"seconds": round(self.base_seconds, 1), "reused": self.base_reused},
            "upgradeBytes": self.upgrade_bytes,
            "imageBytes": self.image_bytes,
            "boots": [boot.to_json() for boot in self.boots],
            "state": self.state,
            "rejected": self.rejected,
        }


def _prepare(directory: Path, force: bool) -> None:
    prepare_demo_directory(directory, force, _PARTS, "an earlier boot demo's own files")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cosgitops" / "bases"


def sync_medium(source: Path, share: Path) -> None:
    """Copy a freshly written update medium into the folder the guest reads, in an order
    a reader never minds: images first, then the index with timestamp.json last (TUF
    reads it first, so a device sees the old index or the whole new one)."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    timestamp = [p for p in files if p.name == "timestamp.json"]
    ordered = [p for p in files if p not in timestamp and p.name != "medium.json"]
    ordered += timestamp + [p for p in files if p.name == "medium.json"]
    for path in ordered:
        target = share / path.relative_to(source)
        if target.is_file() and target.read_bytes() == path.read_bytes():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(path.read_bytes())
        os.replace(name, target)


def run_boot_demo(
    directory: Path,
    *,
    force: bool = False,
    narrate: Narrate | None = None,
    mirrors: Sequence[str] | None = None,
    wheelhouse: Path | None = None,
    cache_dir: Path | None = None,
    accel: str = "auto",
    boot_timeout: float = 900.0,
) -> BootDemoResult:
    """Run the story in ``directory``; raise :class:`DemoError` when a step misbehaves."""
    from cosgitops.bootdisk.build import build_disk
    from cosgitops.bootdisk.medium import write_update_medium
    from cosgitops.bootdisk.read import DiskImage
    from cosgitops.release import release
    from cosgitops.vm.machine import Machine, SharedFolder

    say: Narrate = narrate or (lambda _line: None)
    started = time.monotonic()
    directory = Path(directory).absolute()
    _prepare(directory, force)
    repo, public = directory / "repo", directory / "public"
    serial, share = directory / "serial", directory / MEDIUM_SHARE
    serial.mkdir()
    share.mkdir()
    result = BootDemoResult(directory, directory / "disk.img")

    def step(title: str) -> None:
        say("")
        say(f"== {title}")

    def release_now() -> None:
        report = release(repo, public_dir=public)
        for outcome in report.outcomes:
            if outcome.status == "failed":
                raise DemoError(f"release of {outcome.name} failed: {outcome.error}")
            if outcome.status == "released":
                say(
                    f"   released {outcome.name} {outcome.version} -> "
                    f"{outcome.image.rsplit('/', 1)[-1]}"
                )

    def hand_over(version: str) -> None:
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            medium = write_update_medium(public, Path(tmp) / "medium", derivative=DERIVATIVE)
            sync_medium(medium.path, share)
        say(f"   {version} is on the update medium the guest sees ({MEDIUM_SHARE}/)")

    # ---------------------------------------------------------------- repository
    step("1. A git repository defines a base and a derivative")
    hook = scaffold_repository(repo)
    say(f"   bases/{BASE}/base.yaml and derivatives/{DERIVATIVE}; pre-commit hook: {hook}")

    # ---------------------------------------------------------------- base
    step("2. Build the bootable base from Debian packages")
    base_seconds = time.monotonic()
    spec_base, reused = build_base_for(
        repo, mirrors, wheelhouse, cache_dir or default_cache_dir(), say
    )
    result.base_seconds, result.base_reused = time.monotonic() - base_seconds, reused

    # ---------------------------------------------------------------- release 1.0.0
    step("3. Release 1.0.0 on that base, with a health check declared in Git")
    write_example(repo, spec_base)
    release_now()

    # ---------------------------------------------------------------- disk
    step("4. Write a cOS disk and boot it")
    built = build_disk(
        repo,
        DERIVATIVE,
        result.disk,
        update_interval=UPDATE_INTERVAL,
        max_attempts=1,
        public_dir=public,
    )
    say(
        f"   {result.disk}: {human_size(built.disk.size)} GPT disk, {built.version} as the "
        "active and the recovery image"
    )
    machine = Machine(result.disk, directory / "vm", accel=accel, shared=SharedFolder(share))
    session = GuestSession(machine, serial, boot_timeout, say)
    result.boots = session.boots

    try:
        first = session.boot_until("boot-check")
        session.expect_booted(first, "1.0.0", "active")
        session.expect_check(first, "committed")
        session.wait_for(first, "probe")

        # ------------------------------------------------------------ 1.1.0
        step("5. Release 1.1.0 (one overlay file changed) and hand it to the device")
        commit_version(repo, "1.1.0", motd="Now with release 1.1.0.")
        release_now()
        hand_over("1.1.0")
        upgrade = session.until_reboot(first, "1.1.0")
        result.upgrade_bytes = int(upgrade.get("bytesDownloaded", 0))
        result.image_bytes = int(upgrade.get("imageBytes", 0))
        second = session.boot_until("boot-check")
        session.expect_booted(second, "1.1.0", "active")
        session.expect_check(second, "committed")
        probe_event = session.wait_for(second, "probe")
        if probe_event.get("etcLines") != 1 or int(probe_event.get("oemLines", 0)) < 2:
            raise DemoError(f"the persistence probe says {probe_event}")
        say(
            "   after the reboot: /etc holds only this boot's change "
            f"({probe_event['etcLines']} line), /oem and /usr/local keep every boot's "
            f"({probe_event['oemLines']} and {probe_event['localLines']} lines)"
        )

        # ------------------------------------------------------------ 1.2.0
        step("6. Release 1.2.0 whose health check fails: GRUB falls back by itself")
        commit_version(repo, "1.2.0", healthy=False)
        release_now()
        hand_over("1.2.0")
        session.until_reboot(second, "1.2.0")
        third = session.boot_until("boot-check")
        session.expect_booted(third, "1.2.0", "active")
        session.expect_check(third, "retry")
        session.finish(third)
        fourth = session.boot_until("boot-check")
        session.expect_booted(fourth, "1.1.0", "passive")
        session.expect_check(fourth, "fell-back")
        settled = session.wait_for(fourth, "upgrade", outcome="none")
        say(f"   the device looks again: {settled.get('summary')}")
        session.power_off(fourth)
    finally:
        machine.close()

    # ---------------------------------------------------------------- the disk
    step("7. The disk afterwards, read without booting it")
    disk = DiskImage(result.disk)
    result.state = disk.read_json("COS_STATE", "/state.json")
    rejected = disk.read_json("COS_OEM", "/.cosgitops/agent/rejected.json")
    result.rejected = list(rejected.get("rejected", []))
    active = (result.state.get("slots") or {}).get("active") or {}
    say(
        f"   state.json: active {active.get('version')}, rejected "
        f"{', '.join(item['version'] for item in result.rejected) or 'nothing'}"
    )
    if active.get("version") != "1.1.0" or not any(
        item.get("version") == "1.2.0" for item in result.rejected
    ):
        raise DemoError(
            f"the disk's journal does not show 1.1.0 active and 1.2.0 rejected: {active}"
        )
    result.seconds = time.monotonic() - started
    return result


def scaffold_repository(repo: Path, name: str = "boot-demo") -> str:
    """``cosgitops init``, a git repository, the pre-commit hook, the first commit."""
    from cosgitops.scaffold import init_repository

    init_repository(repo, name=name)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "cosgitops demo")
    _git(repo, "config", "user.email", "demo@cosgitops.invalid")
    _git(repo, "config", "commit.gpgsign", "false")
    hook = _install_hook(repo)
    if _commit(repo, "a fleet: bases/debian and derivatives/example").returncode != 0:
        raise DemoError("the hook refused the scaffold")
    return hook


def write_example(repo: Path, spec_base: str, *, version: str = "1.0.0") -> None:
    """The example derivative on ``spec_base``: a health check declared in Git, the
    demo's cloud-config (a file, a user with a key, a unit) and its persistence probe;
    committed through the hook."""
    folder = repo / "derivatives" / DERIVATIVE
    derivative_file = folder / "derivative.yaml"
    text = derivative_file.read_text()
    text = text.replace("base: scratch", f"base: {spec_base}")
    text = text.replace(
        "  release:\n",
        "  health:\n    checks:\n"
        f"      - {{name: health-file, command: 'grep -qx ok /{HEALTH_FILE}', "
        "timeoutSeconds: 20}\n  release:\n",
    )
    derivative_file.write_text(text)
    _set_version(derivative_file, version)
    (folder / "overlay" / HEALTH_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / "overlay" / HEALTH_FILE).write_text("ok\n")
    probe = folder / "overlay" / "usr" / "lib" / "cosgitops-demo" / "probe"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(PROBE)
    probe.chmod(0o755)
    (folder / "oem" / "50_demo.yaml").write_text(CLOUD_CONFIG)
    if _commit(repo, f"example {version} on the Debian base").returncode != 0:
        raise DemoError(f"the hook refused the {version} commit")


def commit_version(
    repo: Path, version: str, *, healthy: bool = True, motd: str | None = None
) -> None:
    """Raise the example's version (changing the motd, or breaking its health file) and
    commit it through the hook."""
    folder = repo / "derivatives" / DERIVATIVE
    if motd is not None:
        target = folder / "overlay" / "etc" / "motd"
        target.write_text(target.read_text() + motd + "\n")
    (folder / "overlay" / HEALTH_FILE).write_text("ok\n" if healthy else "degraded\n")
    _set_version(folder / "derivative.yaml", version)
    if _commit(repo, f"example {version}").returncode != 0:
        raise DemoError(f"the hook refused the {version} commit")


def build_base_for(
    repo: Path,
    mirrors: Sequence[str] | None,
    wheelhouse: Path | None,
    cache_dir: Path,
    say: Narrate,
) -> tuple[str, bool]:
    """Build the base into the cache (or find it there) and copy it into the repository's
    registry; return the spec.base a derivative names and whether it was reused."""
    from cosgitops.commands.common import load_repository_at
    from cosgitops.oci import open_store
    from cosgitops.oci.transfer import copy_image
    from cosgitops.osbase.build import build_base

    repository, _derivatives = load_repository_at(repo)
    cache_dir.mkdir(parents=True, exist_ok=True)
    built = build_base(
        repository, BASE, wheelhouse=wheelhouse, sources=mirrors, target=f"oci:{cache_dir / BASE}"
    )
    how = "reused from an earlier run" if built.reused else f"built in {built.seconds:.0f}s"
    say(
        f"   base {BASE} {built.version}: {len(built.packages)} packages, "
        f"{human_size(built.size)} in {len(built.layers)} layers ({how})"
    )
    local = f"{repository.registry.rstrip('/')}/bases/{BASE}"
    target = open_store(f"oci:{repository.root / local.removeprefix('oci:')}")
    copy_image(open_store(f"oci:{cache_dir / BASE}"), built.digest, target, tag=built.version,
               work_dir=repo)  # fmt: skip
    return f"{local}:{built.version}@{built.digest}", built.reused


class GuestSession:
    """One guest, followed boot by boot through its console events."""

    def __init__(
        self,
        machine: Any,
        serial: Path,
        timeout: float,
        say: Narrate | None = None,
        *,
        log_prefix: str = "",
    ) -> None:
        self.machine = machine
        self.serial = serial
        self.timeout = timeout
        self.log_prefix = log_prefix
        self.say: Narrate = say or (lambda _line: None)
        self.boots: list[BootRecord] = []
        self._started = time.monotonic()

    def _record(self, outcome: Any, started: float) -> BootRecord:
        record = self.boots[-1]
        record.outcome = outcome.outcome
        record.seconds = time.monotonic() - started
        record.events = [dict(event.data) for event in outcome.events]
        return record

    def _power_on(self) -> tuple[int, Path]:
        number = len(self.boots) + 1
        log = self.serial / f"{self.log_prefix}{number:02d}-boot.log"
        self.boots.append(BootRecord(number, log, "running", 0.0))
        self.machine.start(log)
        self._started = time.monotonic()
        return number, log

    def boot_to_end(self) -> BootRecord:
        """Power on and wait until the guest ends the boot itself (or the timeout)."""
        self._power_on()
        return self._record(self.machine.wait(timeout=self.timeout), self._started)

    def boot_until(self, event: str) -> BootRecord:
        from cosgitops.vm.events import event_matches

        number, log = self._power_on()
        outcome = self.machine.wait(until=event_matches(event), timeout=self.timeout)
        record = self._record(outcome, self._started)
        if not outcome.running:
            raise DemoError(
                f"boot {number} ended ({outcome.outcome}) before the {event} event",
                hint=f"see the serial log {log}",
            )
        return record

    def wait_for(self, record: BootRecord, name: str, **fields: Any) -> dict[str, Any]:
        from cosgitops.vm.events import event_matches

        def seen() -> dict[str, Any] | None:
            for event in reversed(record.events):
                wanted = all(event.get(key) == value for key, value in fields.items())
                if event.get("event") == name and wanted:
                    return dict(event)
            return None

        found = seen()
        if found is not None:
            return found
        outcome = self.machine.wait(until=event_matches(name, **fields), timeout=self.timeout)
        self._record(outcome, self._started)
        found = seen()
        if found is None:
            raise DemoError(
                f"boot {record.number}: no {name} event ({outcome.outcome})",
                hint=f"see the serial log {record.log}",
            )
        return found

    def expect_booted(self, record: BootRecord, version: str, slot: str) -> None:
        booted = record.last("booted") or {}
        if booted.get("version") != version or booted.get("slot") != slot:
            raise DemoError(
                f"boot {record.number} runs {booted.get('version')} from the {booted.get('slot')} "
                f"image, not {version} from the {slot} image",
                hint=f"see the serial log {record.log}",
            )
        mounts = booted.get("mounts") or {}
        self.say(
            f"   boot {record.number} ({record.seconds:.0f}s to boot-check): {version} from the "
            f"{slot} image, / {booted.get('root')}, /etc {mounts.get('/etc', '?')}, "
            f"/oem {mounts.get('/oem', '?')}, /usr/local {mounts.get('/usr/local', '?')}"
        )

    def expect_check(self, record: BootRecord, outcome: str) -> None:
        check = record.last("boot-check") or {}
        if check.get("outcome") != outcome:
            raise DemoError(
                f"boot {record.number}: boot-check said {check.get('outcome')}, expected {outcome}"
                f" ({check.get('message') or ''})",
                hint=f"see the serial log {record.log}",
            )
        self.say(
            f"   boot-check: {outcome}" + (f": {check['message']}" if check.get("message") else "")
        )

    def until_reboot(self, record: BootRecord, version: str) -> dict[str, Any]:
        applied = self.wait_for(record, "upgrade", outcome="applied", version=version)
        self.say(
            f"   the device applied {version}: downloaded {applied.get('layersDownloaded')} "
            f"layer(s), {human_size(int(applied.get('bytesDownloaded', 0)))} of a "
            f"{human_size(int(applied.get('imageBytes', 0)))} image, in {applied.get('seconds')}s"
        )
        self.finish(record)
        return applied

    def finish(self, record: BootRecord) -> None:
        outcome = self.machine.wait(timeout=self.timeout)
        self._record(outcome, self._started)
        if outcome.outcome != "reboot":
            raise DemoError(
                f"boot {record.number} ended with {outcome.outcome}, not a reboot",
                hint=f"see the serial log {record.log}",
            )
        self.say(f"   the device rebooted (boot {record.number} took {record.seconds:.0f}s)")

    def cut_power(self, record: BootRecord) -> None:
        """SIGKILL the guest: what a power cut does to it."""
        outcome = self.machine.kill()
        if outcome is not None:
            self._record(outcome, self._started)

    def power_off(self, record: BootRecord) -> None:
        outcome = self.machine.power_button(timeout=self.timeout)
        self._record(outcome, self._started)


def render(result: BootDemoResult) -> Callable[[Narrate], None]:
    def show(say: Narrate) -> None:
        say("")
        say(f"done in {result.seconds / 60:.1f} min ({len(result.boots)} boots). Look around:")
        say(f"  {result.disk}   the disk as it is after the last boot")
        say(f"  {result.directory / 'serial'}   one serial log per boot")
        say(f"  {result.directory / 'repo'}   the git repository")
        say(f"  {result.directory / 'public'}   the published index")
        say(json.dumps({"upgradeBytes": result.upgrade_bytes, "imageBytes": result.image_bytes}))

    return show
