"""The device agent: status, check, upgrade, rollback, boot-check, reset, install.

Every operation runs under an exclusive lock on ``agent/lock`` and starts by
recovering from whatever a crash left: storage that no state names (a half-built
transition, a slot stored but never committed) is deleted first, so a full disk never
blocks the clean-up, then the interrupted transaction is recorded and the slot links
are made to follow ``state.json`` again. Because ``state.json`` is replaced atomically
and only ever names complete slots, the device is always in either the old or the new
state, never in between.

An operation that began changing the device and is refused or fails (a hostile layer,
a full disk) frees what it wrote, then records the failure in the journal
(``failed``), then exits 1: the active slot is untouched and every command still works.
Nothing inside the device root is followed if it is a link (:mod:`.fstree`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.device import events, faults, fstree
from cosgitops.device.apply import (
    Applier,
    BuiltinApplier,
    ElementalApplier,
    VerifiedImage,
    verify_release_image,
)
from cosgitops.device.boot import (
    CheckResult,
    boot_outcome,
    image_health_checks,
    run_health_checks,
)
from cosgitops.device.cache import CacheStats, LayerCache
from cosgitops.device.choose import (
    Choice,
    ChoiceReason,
    ChoiceRequest,
    InstalledRelease,
    ReleaseCandidate,
    choose_release,
)
from cosgitops.device.config import (
    AgentConfig,
    HealthCheck,
    TrustedIdentity,
    dump_agent_config,
    host_platform_name,
    load_agent_config,
    validate_agent_config,
)
from cosgitops.device.cosdisk import (
    BACKEND as COS_DISK,
)
from cosgitops.device.cosdisk import (
    BOOT_FILE,
    BootableApplier,
    BootedImage,
    GrubBootLoader,
    copy_image_slot,
    read_boot_file,
    request_reboot,
    running_record,
    system_facts,
)
from cosgitops.device.index import FetchStats, ReleaseIndex
from cosgitops.device.layout import DeviceRoot
from cosgitops.device.medium import UpdateMedium
from cosgitops.device.rollout import wariness_from_machine_id
from cosgitops.device.slots import SlotStore, check_storage
from cosgitops.device.space import DiskFullError, full_disk_error, is_disk_full
from cosgitops.device.state import (
    BootAssessment,
    DeviceState,
    Failure,
    RecoveryCopy,
    RejectedList,
    RejectedRelease,
    SlotRecord,
    StateJournal,
    Transaction,
    UnreadableJournalError,
    now_text,
)
from cosgitops.errors import (
    ConfigError,
    CosgitopsError,
    DeviceError,
    NotFoundError,
    RemoteDataError,
)
from cosgitops.fsutil import atomic_write_bytes, atomic_write_text, file_lock
from cosgitops.progress import NULL_PROGRESS, Progress

# ---------------------------------------------------------------- reports


def _slot_json(device: DeviceRoot, record: SlotRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    out: dict[str, Any] = dict(record.ident())
    out.update(
        {
            "image": record.image,
            "format": record.format,
            "path": str(device.root / record.storage) if record.storage else None,
            "installed": record.installed,
        }
    )
    return out


@dataclass
class DeviceStatus:
    device: DeviceRoot
    state: DeviceState
    rejected: list[RejectedRelease]
    config: AgentConfig | None
    busy: bool = False
    verified: dict[str, bool | str] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what recovery could not fix

    @property
    def pending(self) -> bool:
        return self.state.boot.pending

    def to_json(self) -> dict[str, Any]:
        interrupted = self.state.interrupted
        return {
            "root": str(self.device.root),
            "derivative": self.config.derivative if self.config else None,
            "channel": self.config.channel if self.config else None,
            "active": _slot_json(self.device, self.state.active),
            "passive": _slot_json(self.device, self.state.passive),
            "recovery": _slot_json(self.device, self.state.recovery),
            "pending": self.state.boot.pending,
            "bootAttempts": self.state.boot.attempts,
            "maxAttempts": self.config.max_attempts if self.config else None,
            "lastFailure": self.state.boot.last_failure or None,
            "rejected": [
                {"version": r.version, "digest": r.digest, "reason": r.reason, "at": r.at}
                for r in self.rejected
            ],
            "interrupted": interrupted.to_json() if interrupted else None,
            "failed": self.state.failed.to_json() if self.state.failed else None,
            "problems": list(self.problems),
            "busy": self.busy,
            "generation": self.state.generation,
            "verified": self.verified or None,
        }


@dataclass
class CheckReport:
    choice: Choice
    current: SlotRecord | None
    problems: list[str]
    index: FetchStats
    seconds: float

    def to_json(self) -> dict[str, Any]:
        out = self.choice.to_json()
        out["current"] = self.current.ident() if self.current else None
        out["problems"] = self.problems
        out["cost"] = {**self.index.to_json(), "seconds": round(self.seconds, 4)}
        return out


@dataclass
class UpgradeReport:
    action: str  # none | upgrade | downgrade | install
    summary: str
    choice: Choice | None
    installed: SlotRecord | None = None
    previous: SlotRecord | None = None
    slot: str = "active"  # active | recovery
    signer: str = ""
    cache: CacheStats = field(default_factory=CacheStats)
    index: FetchStats = field(default_factory=FetchStats)
    image_bytes: int = 0  # the compressed size of all the release's layers
    registry_requests: int = 0
    registry_bytes: int = 0
    seconds: float = 0.0
    pending: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "summary": self.summary,
            "slot": self.slot,
            "installed": self.installed.ident() if self.installed else None,
            "previous": self.previous.ident() if self.previous else None,
            "signer": self.signer or None,
            "pending": self.pending,
            "layers": {
                "downloaded": self.cache.downloaded,
                "reused": self.cache.reused,
                "bytesDownloaded": self.cache.bytes_downloaded,
                "imageBytes": self.image_bytes,
            },
            "cost": {
                "indexRequests": self.index.requests,
                "indexBytes": self.index.bytes,
                "registryRequests": self.registry_requests,
                "registryBytes": self.registry_bytes,
                "seconds": round(self.seconds, 3),
            },
            "choice": self.choice.to_json() if self.choice else None,
        }


@dataclass
class BootReport:
    # committed | nothing-pending | retry | rolled-back; on a booted cOS disk also
    # fell-back (GRUB booted the previous image) | recovery | reboot-needed
    outcome: str
    release: SlotRecord | None
    attempts: int
    max_attempts: int
    checks: list[CheckResult]
    rolled_back_to: SlotRecord | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("committed", "nothing-pending", "fell-back", "recovery")

    @property
    def needs_reboot(self) -> bool:
        """The running image is not the one to run: boot again (GRUB decides which)."""
        return self.outcome in ("retry", "rolled-back", "reboot-needed")

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "release": self.release.ident() if self.release else None,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "checks": [check.to_json() for check in self.checks],
            "rolledBackTo": self.rolled_back_to.ident() if self.rolled_back_to else None,
            "message": self.message or None,
        }


@dataclass
class SwitchReport:
    operation: str  # rollback | reset
    active: SlotRecord
    left: SlotRecord | None

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "active": self.active.ident(),
            "left": self.left.ident() if self.left else None,
        }


# ---------------------------------------------------------------- set-up


@dataclass(frozen=True)
class DeviceSetup:
    """What `device init`/`install` needs: where the index is, whom to trust, what to run."""

    index_url: str
    derivative: str
    trusted_root: Path  # the publisher's metadata/1.root.json (or a later root)
    channel: str = "stable"
    keys: tuple[Path, ...] = ()  # cosign public keys trusted to sign images
    identities: tuple[TrustedIdentity, ...] = ()
    sigstore_trusted_root: Path | None = None
    require_boot_test: bool = False
    signed_identity: str = "repository"  # or "digest": what a signature must bind
    platform: str | None = None
    slot_format: str = "dir"
    slot_backend: str = "folder"  # folder | cos-disk
    update_interval_seconds: float = 3600.0
    apply_method: str = "builtin"
    elemental_command: str = "elemental"
    registry_insecure: bool = False
    registry_ca: Path | None = None
    index_ca: Path | None = None
    checks: tuple[HealthCheck, ...] = ()
    max_attempts: int = 3
    machine_id: str | None = None
    wariness: float | None = None

    def config(self, copied: dict[str, str]) -> AgentConfig:
        def local(path: Path | None) -> str | None:
            return copied[str(path)] if path is not None else None

        index_url = self.index_url
        if "://" not in index_url:
            index_url = str(Path(index_url).absolute())
        return AgentConfig(
            derivative=self.derivative,
            index_url=index_url,
            keys=tuple(copied[str(key)] for key in self.keys),
            identities=self.identities,
            trusted_root=local(self.sigstore_trusted_root),
            require_boot_test=self.require_boot_test,
            signed_identity=self.signed_identity,
            channel=self.channel,
            platform=self.platform or host_platform_name(),
            index_ca_file=local(self.index_ca),
            registry_insecure=self.registry_insecure,
            registry_ca_file=local(self.registry_ca),
            slot_format="squashfs" if self.slot_backend == COS_DISK else self.slot_format,
            slot_backend=self.slot_backend,
            update_interval_seconds=self.update_interval_seconds,
            apply_method=self.apply_method,
            elemental_command=self.elemental_command,
            max_attempts=self.max_attempts,
            checks=self.checks,
            wariness=self.wariness,
        )


def _read_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc


# ---------------------------------------------------------------- the agent


def _agent_busy(_path: Path) -> DeviceError:
    return DeviceError(
        "another cosgitops agent is working on this device root",
        hint="wait for it to finish (the lock is agent/lock)",
    )


@contextlib.contextmanager
def _exclusive_lock(path: Path, *, wait: float, blocking: bool = True) -> Iterator[bool]:
    """Hold ``path``'s flock; yields False instead when not ``blocking`` and it is busy.

    Neither ``agent/`` nor ``agent/lock`` may be a link (``file_lock`` opens with
    ``O_NOFOLLOW``): a planted symlink is refused, never followed."""
    with fstree.opened_dir(path.parent.parent, [path.parent.name], create=True):
        pass
    timeout, busy = (wait, _agent_busy) if blocking else (0.0, None)
    with contextlib.ExitStack() as stack:
        try:
            locked = stack.enter_context(file_lock(path, timeout=timeout, busy=busy, mode=0o600))
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR):
                raise
            raise fstree.ForeignEntryError(
                f"{path} is a symlink or a directory, not the agent's lock file",
                hint=f"remove {path} (the agent creates it); it never follows links inside "
                "the device root",
            ) from exc
        yield locked


@contextlib.contextmanager
def _disk_full_refused(where: Path, what: str) -> Iterator[None]:
    """A full disk anywhere in an operation is a refusal (exit 1), never a crash."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise full_disk_error(where, what, exc) from exc
        raise


class DeviceAgent:
    """All operations on one device root. Library first: the CLI is a thin wrapper."""

    def __init__(
        self,
        root: Path,
        *,
        limits: Limits = DEFAULT_LIMITS,
        progress: Progress = NULL_PROGRESS,
        clock: Callable[[], dt.datetime] | None = None,
        boot_file: Path = BOOT_FILE,
        medium: UpdateMedium | None = None,
    ) -> None:
        self.device = DeviceRoot(Path(root).absolute())
        # On a booted cOS disk: what the boot script mounted as the running system.
        self.boot_file = boot_file
        # Updates from an attached medium instead of the configured index and registry.
        self.medium = medium
        self.limits = limits
        self.progress = progress
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.journal = StateJournal(self.device.state_file)
        self.rejected = RejectedList(self.device.rejected_file)
        self.slots = SlotStore(self.device)
        self.recovery_copy = RecoveryCopy(self.device.recovery_dir / "slot.json")
        self._config: AgentConfig | None = None

    # ------------------------------------------------------------ basics

    @property
    def config(self) -> AgentConfig:
        if self._config is None:
            self._config = load_agent_config(self.device.config_file, self.limits)
        return self._config

    def _config_or_none(self) -> AgentConfig | None:
        try:
            return self.config
        except ConfigError:
            return None

    @property
    def cos_disk(self) -> bool:
        config = self._config_or_none()
        return config is not None and config.slot_backend == COS_DISK

    def booted(self) -> BootedImage | None:
        """The image the running system booted (a cOS disk), or None."""
        return read_boot_file(self.boot_file) if self.cos_disk else None

    def _reconcile(self, state: DeviceState) -> None:
        """Slots and links follow ``state``; on a cOS disk GRUB's environment too."""
        self.slots.reconcile(state)
        if self.cos_disk:
            GrubBootLoader(self.device).follow(state, self.config.max_attempts)

    def machine_id(self) -> str:
        try:
            return self.device.machine_id_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return ""

    def wariness(self) -> float:
        if self.config.wariness is not None:
            return float(self.config.wariness)
        return wariness_from_machine_id(self.machine_id() or "unknown")

    def _require_root(self) -> None:
        if not self.device.root.is_dir():
            raise DeviceError(
                f"device root {self.device.root} does not exist",
                hint="create it with `cosgitops device install`",
            )

    @contextlib.contextmanager
    def _session(self) -> Iterator[DeviceState]:
        """The lock, plus recovery from any crash, before an operation touches anything."""
        self._require_root()
        with (
            _exclusive_lock(self.device.lock_file, wait=self.limits.device_lock_wait_seconds),
            _disk_full_refused(self.device.root, "working on the device root"),
        ):
            yield self._recover()

    def _recover(self) -> DeviceState:
        """Free what a crash left, then journal it, then make the links follow the state."""
        state = self.journal.load()
        if state.transaction is not None:
            cleaned = replace(state, transaction=None, interrupted=state.transaction)
            self.slots.reconcile(cleaned)  # frees first: the journal write needs room
            state = self.journal.save(cleaned)
        self._reconcile(state)
        with contextlib.suppress(OSError):  # a convenience copy; the journal is the truth
            self.recovery_copy.save(state.recovery)
        return state

    def _begin(self, state: DeviceState, transaction: Transaction) -> DeviceState:
        return self.journal.save(replace(state, transaction=transaction))

    def _abandon(self, state: DeviceState, exc: BaseException) -> None:
        """An operation that began was refused or failed: free what it wrote, then
        journal the failure. Neither step may hide ``exc``; what they cannot do now,
        the next command's recovery does."""
        transaction = state.transaction
        if isinstance(exc, CosgitopsError):
            message, hint = exc.message, exc.hint or ""
        else:
            message, hint = f"{type(exc).__name__}: {exc}", ""
        failure = Failure(
            transaction.operation if transaction else "operation",
            transaction.version if transaction else "",
            message[:2000],
            hint[:1000],
            now_text(),
        )
        cleaned = replace(state, transaction=None, failed=failure)
        with contextlib.suppress(CosgitopsError, OSError):
            self.slots.reconcile(cleaned)
        if is_disk_full(exc) or isinstance(exc, DiskFullError):
            with contextlib.suppress(CosgitopsError, OSError):
                self._collect_cache(cleaned)
        with contextlib.suppress(OSError):
            self.journal.save(cleaned)

    @contextlib.contextmanager
    def _transaction(self, state: DeviceState, transaction: Transaction) -> Iterator[DeviceState]:
        """Journal ``transaction``, run the body; on any failure free, journal, re-raise."""
        begun = self._begin(state, transaction)
        try:
            yield begun
        except BaseException as exc:
            self._abandon(begun, exc)
            if is_disk_full(exc):
                raise full_disk_error(
                    self.device.root, f"running {transaction.operation}", exc
                ) from exc
            raise

    def _policy(self, image: str) -> object:
        """The signature policy for a release whose signed index entry names ``image``:
        the trusted keys and identities, and (unless the config says ``signedIdentity:
        digest``) the repository the signature must name."""
        from cosgitops.oci.reference import parse_reference
        from cosgitops.signing.image import signed_identity
        from cosgitops.signing.keys import load_public_key
        from cosgitops.signing.policy import TrustedKey, VerificationPolicy, check_identity

        config = self.config
        keys = tuple(
            TrustedKey(load_public_key(source, base_dir=self.device.agent_dir), source)
            for source in config.keys
        )
        identities = tuple(check_identity(item) for item in config.identities)
        trusted_root = (
            config.resolve(self.device.agent_dir, config.trusted_root).read_bytes()
            if config.trusted_root
            else None
        )
        repository = parse_reference(image).name
        return VerificationPolicy(
            keys=keys,
            identities=identities,
            trusted_root=trusted_root,
            signed_identity=(
                signed_identity(repository) if config.signed_identity == "repository" else None
            ),
        )

    def _store(self, image: str) -> Any:
        from cosgitops.oci import open_store
        from cosgitops.oci.reference import parse_reference
        from cosgitops.oci.store import StoreOptions

        config = self.config
        if self.medium is not None:
            # Where the bytes come from changes; what is verified does not.
            return open_store(
                f"oci:{self.medium.layout_for(image)}", StoreOptions(limits=self.limits)
            )
        ca_file = (
            config.resolve(self.device.agent_dir, config.registry_ca_file)
            if config.registry_ca_file
            else None
        )
        options = StoreOptions(
            insecure=config.registry_insecure, ca_file=ca_file, limits=self.limits
        )
        return open_store(parse_reference(image), options)

    def _applier(self) -> Applier:
        if self.config.apply_method == "elemental":
            return ElementalApplier(self.config.elemental_command)
        if self.cos_disk:
            from cosgitops.device.flatten import FlattenApplier

            return BootableApplier(FlattenApplier(self.device, self.limits), self.device)
        return BuiltinApplier(self.device, self.config.slot_format, self.limits)

    def _index(self) -> ReleaseIndex:
        config = self.config
        if self.medium is not None:
            config = replace(config, index_url=str(self.medium.index))
        return ReleaseIndex(self.device, config, self.limits)

    def _request(self, state: DeviceState, version: str | None, force: bool) -> ChoiceRequest:
        current = state.active
        return ChoiceRequest(
            current=InstalledRelease(current.version, current.digest) if current else None,
            channel=self.config.channel,
            wariness=self.wariness(),
            now=self.clock(),
            rejected=tuple(InstalledRelease(r.version, r.digest) for r in self.rejected.load()),
            pin=version,
            force=force,
            platform=self.config.platform,
        )

    # ------------------------------------------------------------ set-up

    def init(self, setup: DeviceSetup) -> AgentConfig:
        """Create the device root's folders, copy the trust files into ``agent/trust``,
        write the config and trust the index root. Installs no release."""
        device = self.device
        for folder in (
            device.state_dir,
            device.recovery_dir,
            device.oem_dir,
            device.persistent_dir,
            device.agent_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(device.lock_file, wait=self.limits.device_lock_wait_seconds):
            if device.config_file.exists() and (device.metadata_dir / "root.json").exists():
                raise DeviceError(
                    f"{device.root} is already set up",
                    hint="use `cosgitops device upgrade`, or remove the device root first",
                )
            config = setup.config(self._copy_trust_files(setup))
            validate_agent_config(config.to_json())
            self._config = config
            root_json = _read_file(setup.trusted_root, "trusted index root")
            ReleaseIndex(device, config, self.limits).trust(root_json)
            if not device.machine_id_file.exists():
                machine_id = setup.machine_id or _host_machine_id()
                atomic_write_text(device.machine_id_file, machine_id + "\n")
            atomic_write_text(device.config_file, dump_agent_config(config).decode())
            return config

    def _copy_trust_files(self, setup: DeviceSetup) -> dict[str, str]:
        """Copies of keys and CA files inside the device root, so it is self-contained."""
        trust_dir = self.device.agent_dir / "trust"
        copied: dict[str, str] = {}
        sources = [*setup.keys]
        for extra in (setup.sigstore_trusted_root, setup.registry_ca, setup.index_ca):
            if extra is not None:
                sources.append(extra)
        for index, source in enumerate(sources):
            data = _read_file(source, "trust file")
            name = f"{index:02d}-{Path(source).name}"
            atomic_write_bytes(trust_dir / name, data)
            copied[str(source)] = f"trust/{name}"
        return copied

    def install(
        self, setup: DeviceSetup, *, version: str | None = None, recovery: bool = True
    ) -> UpgradeReport:
        """``init``, then the first release into the active slot (and the recovery slot)."""
        config = self.init(setup)
        report = self.upgrade(version=version)
        if report.installed is None:
            raise DeviceError(
                f"nothing to install: {report.summary}",
                hint=f"the device root is set up for {config.derivative} on channel "
                f"{config.channel}; run `cosgitops device upgrade` once a release is published",
            )
        if recovery:
            self.upgrade(version=report.installed.version, recovery=True, force=True)
        return report

    # ------------------------------------------------------------ queries

    def status(self, *, verify: bool = False) -> DeviceStatus:
        """The device's state; recovers from a crash first unless another agent is busy.

        Only an unusable journal makes it fail; what recovery cannot fix (a link or a
        folder the agent did not make, a full disk) is listed in ``problems``."""
        self._require_root()
        with (
            _exclusive_lock(self.device.lock_file, wait=0, blocking=False) as locked,
            _disk_full_refused(self.device.root, "reading the device state"),
        ):
            problems: list[str] = []
            state = self.journal.load()
            self.slots.check_state(state)
            if locked:
                try:
                    state = self._recover()
                except UnreadableJournalError:
                    raise
                except (CosgitopsError, OSError) as exc:
                    problems.append(_describe(exc))
            report = DeviceStatus(
                self.device,
                state,
                self.rejected.load(),
                self._config_or_none(),
                busy=not locked,
                problems=problems,
            )
            if verify and locked:
                for name in ("active", "passive", "recovery"):
                    record = state.slot(name)
                    if record is None or not record.storage:
                        continue
                    try:
                        self.slots.verify(record, name)
                        report.verified[name] = True
                    except CosgitopsError as exc:
                        report.verified[name] = exc.message
            return report

    def check(self, *, version: str | None = None, force: bool = False) -> CheckReport:
        """Refresh the index and say what an upgrade would do, and why."""
        started = time.monotonic()
        with self._session() as state:
            index = self._index()
            releases, problems = index.releases()
            choice = choose_release(releases, self._request(state, version, force))
            return CheckReport(
                choice, state.active, problems, index.stats, time.monotonic() - started
            )

    # ------------------------------------------------------------ upgrade

    def upgrade(
        self, *, version: str | None = None, force: bool = False, recovery: bool = False
    ) -> UpgradeReport:
        """Refresh, choose, verify, download what is missing, apply, switch atomically."""
        started = time.monotonic()
        with self._session() as initial:
            state = initial
            index = self._index()
            releases, _problems = index.releases()
            faults.crash_point("index-refreshed")
            if recovery:
                choice = self._recovery_choice(releases, state, version)
                choice = self._repair_recovery(choice, state)
            else:
                choice = choose_release(releases, self._request(state, version, force))
            if choice.release is None:
                if version is not None and not (state.active and state.active.version == version):
                    raise self._pin_error(choice, index, version)
                self._collect_cache(state)
                return UpgradeReport(
                    "none",
                    choice.summary,
                    choice,
                    index=index.stats,
                    seconds=time.monotonic() - started,
                )
            if state.boot.pending and not recovery and not force:
                # Stacking a new release on one not yet proven would leave no known-good
                # passive slot to fall back to.
                raise DeviceError(
                    f"{choice.release.version} is available, but release "
                    f"{state.active.version if state.active else '?'} still awaits its boot "
                    "assessment",
                    hint="run `cosgitops device boot-check` first (or pass --force)",
                )
            faults.crash_point("release-chosen")
            release = choice.release
            manifest = index.manifest(release)
            store = self._store(release.image)
            image = verify_release_image(
                store,
                release,
                manifest,
                policy=self._policy(release.image),
                platform=self.config.platform,
                limits=self.limits,
            )
            if self.config.require_boot_test:
                from cosgitops.boottest.gate import require_boot_attestation

                require_boot_attestation(
                    store, manifest, self._policy(release.image), limits=self.limits
                )
            faults.crash_point("signature-verified")
            operation = "upgrade-recovery" if recovery else "upgrade"
            applier = self._applier()
            partition = "recovery" if recovery else "state"
            applier.check_space(image, partition)  # a refusal before anything is written
            transaction = Transaction(
                operation, release.version, image.digest, release.image, now_text()
            )
            with self._transaction(state, transaction) as state:
                faults.crash_point("journal-begun")
                result = applier.apply(image, store, partition, self.progress)
                record = result.record
                previous = state.recovery if recovery else state.active
                if recovery:
                    new_state = replace(
                        state, recovery=record, transaction=None, interrupted=None, failed=None
                    )
                else:
                    first = state.active is None
                    new_state = replace(
                        state,
                        active=record,
                        passive=state.active,
                        boot=BootAssessment(pending=not first),
                        transaction=None,
                        interrupted=None,
                        failed=None,
                    )
                new_state = self.journal.save(new_state)
            faults.crash_point("state-committed")
            self._reconcile(new_state)
            with contextlib.suppress(OSError):
                self.recovery_copy.save(new_state.recovery)
            faults.crash_point("links-updated")
            self._collect_cache(new_state)
            faults.crash_point("cache-collected")
            return UpgradeReport(
                action="install" if previous is None and not recovery else choice.action,
                summary=choice.summary,
                choice=choice,
                installed=record,
                previous=previous,
                slot="recovery" if recovery else "active",
                signer=image.signer,
                cache=result.cache,
                index=index.stats,
                image_bytes=image.size,
                registry_requests=store.stats.requests,
                registry_bytes=store.stats.bytes_downloaded,
                seconds=time.monotonic() - started,
                pending=new_state.boot.pending and not recovery,
            )

    def watch(
        self,
        *,
        interval: float | None = None,
        once: bool = False,
        reboot: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        find_medium: Callable[[], UpdateMedium | None] | None = None,
    ) -> UpgradeReport | None:
        """The update service: look for a release (the configured index, or an update
        medium attached to a booted device) every ``interval`` seconds, apply it, and
        reboot into it. Waits while the running release awaits its boot assessment."""
        from cosgitops.device.medium import attached_medium

        finder = find_medium or attached_medium
        last_failure = last_none = ""
        while True:
            report, failure = self._update_once(finder)
            if failure and failure != last_failure:
                events.emit("upgrade", outcome="failed", message=failure)
            if report is not None and report.installed is None and report.summary != last_none:
                events.emit("upgrade", outcome="none", summary=report.summary)
                last_none = report.summary
            last_failure = failure
            installed = report is not None and report.installed is not None
            wants_reboot = self.config.update_reboot if reboot is None else reboot
            if installed and wants_reboot and self.booted() is not None:
                assert report is not None and report.installed is not None
                events.emit("reboot", reason=f"boot {report.installed.version}")
                request_reboot()
                return report
            if once:
                return report
            sleep(interval if interval is not None else self.config.update_interval_seconds)

    def _update_once(
        self, find_medium: Callable[[], UpdateMedium | None]
    ) -> tuple[UpgradeReport | None, str]:
        previous = self.medium
        try:
            if self.journal.load().boot.pending:
                return None, ""
            if self.medium is None and self.booted() is not None:
                self.medium = find_medium()
            report = self.upgrade()
        except CosgitopsError as error:
            return None, _describe(error)
        finally:
            self.medium = previous
        if report.installed is not None:
            events.emit(
                "upgrade",
                outcome="applied",
                action=report.action,
                version=report.installed.version,
                digest=report.installed.digest,
                previous=report.previous.version if report.previous else None,
                layersDownloaded=len(report.cache.downloaded),
                layersReused=len(report.cache.reused),
                bytesDownloaded=report.cache.bytes_downloaded,
                imageBytes=report.image_bytes,
                seconds=round(report.seconds, 1),
            )
        return report, ""

    def _repair_recovery(self, choice: Choice, state: DeviceState) -> Choice:
        """The recovery slot already holds the release, but is damaged: install it again."""
        recovery = state.recovery
        if choice.reason is not ChoiceReason.INSTALLED or recovery is None or choice.goal is None:
            return choice
        try:
            self.slots.verify(recovery, "recovery")
            return choice
        except CosgitopsError as exc:
            return replace(
                choice,
                release=choice.goal,
                path=(choice.goal,),
                summary=f"reinstall {recovery.version} into the damaged recovery slot "
                f"({exc.message})",
                reason=ChoiceReason.PINNED,
            )

    @staticmethod
    def _pin_error(choice: Choice, index: ReleaseIndex, version: str) -> CosgitopsError:
        """Why ``--version V`` cannot be applied, as the error that says what to do."""
        if choice.reason is ChoiceReason.NOT_PUBLISHED:
            problem = index.problem_for(version)
            if problem is not None:
                return RemoteDataError(
                    f"version {version} is in the index, but its entry is unusable: {problem}",
                    hint="the publisher must republish that release; nothing was applied",
                )
            return NotFoundError(
                choice.summary, hint="`cosgitops device check` lists the published versions"
            )
        return DeviceError(choice.summary, hint="see `cosgitops device check`")

    def _recovery_choice(
        self, releases: list[ReleaseCandidate], state: DeviceState, version: str | None
    ) -> Choice:
        # The recovery slot follows the channel like the system does, but is never
        # boot-assessed, so it takes only what the active slot already proved, or a pin.
        pin = version or (state.active.version if state.active else None)
        current = state.recovery
        request = ChoiceRequest(
            current=InstalledRelease(current.version, current.digest) if current else None,
            channel=self.config.channel,
            wariness=self.wariness(),
            now=self.clock(),
            rejected=tuple(InstalledRelease(r.version, r.digest) for r in self.rejected.load()),
            pin=pin,
            force=True,
        )
        return choose_release(releases, request)

    def _collect_cache(self, state: DeviceState) -> None:
        keep: set[str] = set()
        for record in (state.active, state.passive):
            if record is not None:
                keep.update(record.layers)
        LayerCache(self.device).collect(keep)

    # ------------------------------------------------------------ boot assessment

    def _health_checks(self, tree: Path) -> list[HealthCheck]:
        """The image's own checks (baked in by the derivative) then the device's."""
        return [*image_health_checks(tree), *self.config.checks]

    def _run_checks(self, tree: Path) -> list[CheckResult]:
        return run_health_checks(
            self._health_checks(tree),
            tree,
            max_timeout=self.limits.health_check_timeout_seconds,
            output_bytes=self.limits.health_check_output_bytes,
        )

    def boot_check(self) -> BootReport:
        """Assess the active release: commit, count a failed boot, or roll back.

        On a booted cOS disk the running system is what is assessed, and GRUB's own
        counter decides when the boot falls back: a failed boot asks for a reboot, and a
        boot of the passive image while the journal still waits for the active one
        means GRUB gave up on it, which rejects it here."""
        with self._session() as initial:
            booted = self.booted()
            if booted is not None:
                return self._booted_check(initial, booted)
            state = initial
            config = self.config
            active = state.active
            if active is None:
                raise DeviceError("nothing is installed", hint="run `cosgitops device install`")
            if not state.boot.pending:
                return BootReport("nothing-pending", active, 0, config.max_attempts, [])
            attempts = state.boot.attempts + 1
            state = self.journal.save(replace(state, boot=replace(state.boot, attempts=attempts)))
            faults.crash_point("boot-attempt-counted")
            if active.format == "elemental":
                results = self._run_checks(Path("/"))
            else:
                with self.slots.view(active, "active") as tree:
                    results = self._run_checks(tree)
            passed = all(result.passed for result in results)
            outcome = boot_outcome(passed, attempts, config.max_attempts)
            if outcome == "commit":
                self._reconcile(self.journal.save(replace(state, boot=BootAssessment())))
                return BootReport("committed", active, attempts, config.max_attempts, results)
            failure = "; ".join(result.describe() for result in results if not result.passed)
            if outcome == "retry":
                self.journal.save(replace(state, boot=replace(state.boot, last_failure=failure)))
                return BootReport("retry", active, attempts, config.max_attempts, results)
            reason = f"failed {attempts} boot(s): {failure}"
            if state.passive is None:
                # Nothing to go back to: keep running it, but stop counting.
                self.journal.save(replace(state, boot=BootAssessment(last_failure=failure)))
                raise DeviceError(
                    f"release {active.version} {reason}, and there is no passive slot",
                    hint="restore a known-good system with `cosgitops device reset`",
                )
            switched = self._switch_back(state, reason, automatic=True)
            return BootReport(
                "rolled-back", active, attempts, config.max_attempts, results, switched.active
            )

    def _booted_check(self, state: DeviceState, booted: BootedImage) -> BootReport:
        config = self.config
        maximum = config.max_attempts
        active = state.active
        running = running_record(state, booted)
        events.emit(
            "booted",
            slot=booted.slot,
            image=booted.image,
            version=running.version if running else None,
            digest=running.digest if running else None,
            pending=state.boot.pending,
            **system_facts(),
        )
        if booted.slot == "recovery":
            message = "running the recovery image"
            if active is not None and state.boot.pending:
                message += (
                    f"; release {active.version} did not pass its boot assessment "
                    f"({state.boot.last_failure or 'it never reached boot-check'})"
                )
            report = BootReport("recovery", running, 0, maximum, [], message=message)
            events.emit("boot-check", outcome=report.outcome, message=message)
            return report
        if active is None:
            raise DeviceError("nothing is installed", hint="run `cosgitops device reset`")
        if not booted.matches(active):
            fell_back = booted.slot == "passive" and booted.matches(state.passive)
            if state.boot.pending and state.passive is not None and fell_back:
                failure = state.boot.last_failure or "it never reached boot-check"
                reason = (
                    f"did not pass its boot assessment in {max(state.boot.attempts, 1)} "
                    f"boot(s) ({failure}); GRUB fell back to {state.passive.version}"
                )
                switched = self._switch_back(state, reason, automatic=True)
                report = BootReport(
                    "fell-back",
                    active,
                    state.boot.attempts,
                    maximum,
                    [],
                    switched.active,
                    message=f"release {active.version} {reason}",
                )
            else:
                # GRUB's entry for the active image booted something else: grubenv did
                # not name the new release yet when this boot began (a power cut between
                # the journal and grubenv, repaired by now): boot it.
                report = BootReport(
                    "reboot-needed",
                    running,
                    0,
                    maximum,
                    [],
                    message=f"the running image is not the active release {active.version}",
                )
            events.emit("boot-check", outcome=report.outcome, message=report.message,
                        release=active.version)  # fmt: skip
            return report
        if not state.boot.pending:
            report = BootReport("nothing-pending", active, 0, maximum, [])
            events.emit("boot-check", outcome=report.outcome, release=active.version)
            return report
        attempts = state.boot.attempts + 1
        state = self.journal.save(replace(state, boot=replace(state.boot, attempts=attempts)))
        faults.crash_point("boot-attempt-counted")
        results = self._run_checks(Path("/"))
        checks = [result.to_json() for result in results]
        if all(result.passed for result in results):
            self._reconcile(self.journal.save(replace(state, boot=BootAssessment())))
            events.emit("boot-check", outcome="committed", release=active.version,
                        attempts=attempts, checks=checks)  # fmt: skip
            return BootReport("committed", active, attempts, maximum, results)
        failure = "; ".join(result.describe() for result in results if not result.passed)
        self.journal.save(replace(state, boot=replace(state.boot, last_failure=failure)))
        left = GrubBootLoader(self.device).tries_left()
        fallback = state.passive.version if state.passive else "the recovery image"
        message = f"release {active.version} failed its health checks ({failure}); " + (
            f"{left} more tentative boot(s)" if left else f"GRUB boots {fallback} next"
        )
        events.emit("boot-check", outcome="retry", release=active.version, attempts=attempts,
                    checks=checks, message=message)  # fmt: skip
        return BootReport("retry", active, attempts, maximum, results, message=message)

    def _switch_back(self, state: DeviceState, reason: str, *, automatic: bool) -> SwitchReport:
        active, passive = state.active, state.passive
        assert active is not None and passive is not None
        self.rejected.add(active.version, active.digest, reason)
        faults.crash_point("rejected-recorded")
        new_state = self.journal.save(
            replace(
                state,
                active=passive,
                # A release that failed its boots is no fallback: its slot is dropped. A
                # rollback by hand keeps it, so a second rollback can undo the first.
                passive=None if automatic else active,
                boot=BootAssessment(),
                transaction=None,
            )
        )
        faults.crash_point("rollback-committed")
        self._reconcile(new_state)
        return SwitchReport("rollback", passive, active)

    def rollback(self) -> SwitchReport:
        """Make the passive slot active again and never take the current release again."""
        with self._session() as state:
            if state.active is None or state.passive is None:
                raise DeviceError(
                    "there is no passive slot to roll back to",
                    hint="restore from the recovery slot with `cosgitops device reset`",
                )
            return self._switch_back(state, "rolled back by hand", automatic=False)

    def reset(self) -> SwitchReport:
        """Replace the active slot with a verified copy of the recovery slot.

        Also the way back from an unusable journal: the recovery slot's record is kept
        on the recovery partition too (``recovery/slot.json``), the unusable
        ``state.json`` is moved aside and a new journal is built around the copy."""
        self._require_root()
        with (
            _exclusive_lock(self.device.lock_file, wait=self.limits.device_lock_wait_seconds),
            _disk_full_refused(self.device.root, "resetting the device"),
        ):
            try:
                state = self._recover()
            except UnreadableJournalError as exc:
                state = self._rebuilt_state(exc)
            recovery = state.recovery
            if recovery is None or not recovery.storage:
                raise DeviceError(
                    "there is no recovery slot", hint="install one with `device upgrade --recovery`"
                )
            transaction = Transaction(
                "reset", recovery.version, recovery.digest, recovery.image, now_text()
            )
            with self._transaction(state, transaction) as state:
                # inside the transaction: a refusal is recorded with what to do instead
                self.slots.verify(recovery, "recovery")
                faults.crash_point("reset-begun")
                if self.cos_disk:
                    record = copy_image_slot(self.device, self.slots, recovery)
                else:
                    record = self._copy_recovery_tree(recovery)
                left = state.active
                new_state = self.journal.save(
                    replace(
                        state,
                        active=record,
                        passive=None,
                        boot=BootAssessment(),
                        transaction=None,
                        interrupted=None,
                        failed=None,
                    )
                )
            self._reconcile(new_state)
            return SwitchReport("reset", record, left)

    def _copy_recovery_tree(self, recovery: SlotRecord) -> SlotRecord:
        self.slots.copy_into_transition(recovery, "state")
        faults.crash_point("reset-copied")
        label = f"{recovery.version}-reset"
        storage, tree, image_file = self.slots.store_transition(
            "state", label, self.config.slot_format
        )
        faults.crash_point("reset-stored")
        if recovery.tree_digest and tree != recovery.tree_digest:
            raise DeviceError(
                "the copy of the recovery slot does not match it",
                hint="the recovery slot changed while it was copied; run the reset again",
            )
        return replace(
            recovery,
            storage=storage,
            format=self.config.slot_format,
            tree_digest=tree,
            file_digest=image_file,
            installed=now_text(),
        )

    def reboot(self, *, recovery: bool = False) -> None:
        """Boot again (the recovery image once, with ``recovery``); a booted cOS disk only."""
        if self.booted() is None:
            raise DeviceError(
                "this is not a system booted from a cosgitops disk",
                hint="reboot the machine yourself",
            )
        if recovery:
            with self._session():
                GrubBootLoader(self.device).boot_recovery_once()
        events.emit("reboot", recovery=recovery)
        request_reboot()

    def _rebuilt_state(self, error: UnreadableJournalError) -> DeviceState:
        """A state holding only the recovery slot, for a reset of an unusable journal."""
        recovery = self.recovery_copy.load()
        if recovery is not None:
            try:
                check_storage("recovery", recovery)
            except CosgitopsError:
                recovery = None
        if recovery is None:
            raise DeviceError(
                f"{error.message}, and there is no copy of the recovery slot's record "
                f"({self.recovery_copy.path}) to rebuild it from",
                hint="move the device root aside and set the device up again with "
                "`cosgitops device install`",
            ) from error
        self._set_aside(self.device.state_file)
        state = DeviceState(recovery=recovery)
        self.slots.point("recovery", recovery)
        return state

    def _set_aside(self, path: Path) -> None:
        """Keep an unusable file for inspection under a new name (never delete it)."""
        with fstree.opened_dir(self.device.root, [path.parent.name]) as folder:
            if folder is None or fstree.lstat_at(path.name, folder) is None:
                return
            stamp = now_text().replace(":", "")
            os.rename(
                path.name,
                f"{path.name}.unusable-{stamp}-{secrets.token_hex(2)}",
                src_dir_fd=folder,
                dst_dir_fd=folder,
            )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, CosgitopsError):
        return f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
    return f"{type(exc).__name__}: {exc}"


def _host_machine_id() -> str:
    for candidate in (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id")):
        with contextlib.suppress(OSError):
            value = candidate.read_text(encoding="utf-8").strip()
            if value:
                return value
    return secrets.token_hex(16)


def verified_image_summary(image: VerifiedImage) -> dict[str, Any]:
    return {
        "reference": image.reference.pinned_string(),
        "manifest": image.manifest_digest,
        "layers": [layer.digest for layer in image.layers],
        "signer": image.signer,
    }
