"""``cosgitops boot-test NAME``: prove, before a release reaches devices, that the
candidate boots, upgrades from the release its devices run today, passes its health
checks, and falls back by itself when it fails.

The steps (each timed and recorded in the attestation):

1. ``build``: the candidate image, built (pushed when it is to be attested) or given.
2. ``disk``: a cOS-layout disk holding the release that devices on the derivative's
   channel run today (its first channel), or the candidate itself when nothing is
   published yet (a fresh install).
3. ``boot-from``: that release boots and commits its boot.
4. ``upgrade``: the real agent in the guest upgrades to the candidate from an update
   medium (an index and an OCI layout on a second disk; never a network).
5. ``boot-candidate``: the candidate boots, tentatively, from the new slot.
6. ``health``: the derivative's health checks pass and the boot is committed.
7. ``fallback``: the candidate booted with a forced failure falls back by itself (to the
   previous release; to recovery after a fresh install).

The result becomes a signed in-toto attestation attached to the candidate image
(:mod:`cosgitops.boottest.attestation`), unless ``attest`` is off (pull requests).
The VM work is done by :mod:`cosgitops.vm` and :mod:`cosgitops.bootdisk`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cosgitops.boottest.predicate import BootTestResult, ImageRef, SerialLog
from cosgitops.boottest.steps import StepRunner
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import CosgitopsError, NotFoundError, UsageError
from cosgitops.progress import NULL_PROGRESS, Progress

if TYPE_CHECKING:
    from cosgitops.boottest.attestation import AttachedAttestation
    from cosgitops.model import Derivative, ReleaseManifest, Repository
    from cosgitops.oci.store import ImageStore, StoreOptions

STEP_NAMES = ("build", "disk", "boot-from", "upgrade", "boot-candidate", "health", "fallback")
FRESH_STEP_NAMES = ("build", "disk", "boot-candidate", "health", "fallback")
WORK_DIR = Path(".cosgitops") / "boot-test"
Accelerator = Literal["auto", "kvm", "tcg"]
Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class BootTestOptions:
    image: str | None = None  # the built candidate (NAME@DIGEST); None: build it
    from_version: str | None = None  # upgrade from this published version instead
    accelerator: Accelerator = "auto"
    work_dir: Path | None = None  # disks and serial logs; default .cosgitops/boot-test/NAME
    attest: bool = True  # sign the result and attach it to the image
    skip_published: bool = False  # nothing to do when the version is already released
    key: str | None = None
    keyless: bool = False
    identity_token: str | None = None
    public_dir: Path | None = None  # the published index (default: spec.publish.dir)
    boot_timeout: float = 900.0  # seconds a power-on may take to reach its event (TCG)


@dataclass
class BootTestReport:
    derivative: str
    version: str
    status: Status
    work_dir: Path
    result: BootTestResult | None = None
    attestation: AttachedAttestation | None = None
    note: str = ""  # why it was skipped
    error: str = ""
    hint: str = ""
    failed_log: Path | None = None
    development_key: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    @property
    def failed_step(self) -> str | None:
        if self.result is None:
            return None
        step = self.result.failed_step
        return None if step is None else step.name

    def to_json(self) -> dict[str, Any]:
        return {
            "derivative": self.derivative,
            "version": self.version,
            "status": self.status,
            "ok": self.ok,
            "failedStep": self.failed_step,
            "error": self.error or None,
            "hint": self.hint or None,
            "serialLog": None if self.failed_log is None else str(self.failed_log),
            "workDir": str(self.work_dir),
            "note": self.note or None,
            "attestation": None if self.attestation is None else self.attestation.to_json(),
            "predicate": None if self.result is None else self.result.to_json(),
        }


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _public_dir(repository: Repository, options: BootTestOptions) -> Path:
    if options.public_dir is not None:
        return Path(options.public_dir).absolute()
    from cosgitops.publish.publisher import public_dir_of

    return public_dir_of(repository)


def from_release(
    repository: Repository,
    derivative: Derivative,
    public_dir: Path,
    *,
    pinned: str | None = None,
) -> ReleaseManifest | None:
    """What devices on the derivative's (first) channel run today: its newest published,
    not yanked release older than the candidate; None when there is none. ``pinned``
    names a published version instead."""
    from cosgitops.publish.paths import METADATA_DIR
    from cosgitops.publish.reader import open_index
    from cosgitops.versioning import parse_version

    if not (public_dir / METADATA_DIR / "1.root.json").is_file():
        if pinned is not None:
            raise NotFoundError(f"{derivative.name} {pinned}: nothing is published in {public_dir}")
        return None
    index = open_index(public_dir)
    if pinned is not None:
        return index.manifest(derivative.name, pinned)
    channel = derivative.release.channels[0]
    candidate = parse_version(derivative.version)
    for info in index.releases(derivative.name):  # newest first
        if info.deadend or channel not in info.channels or info.parsed_version >= candidate:
            continue
        return index.manifest(derivative.name, info.version)
    return None


def _release_json(manifest: ReleaseManifest | None) -> ImageRef | None:
    if manifest is None:
        return None
    return ImageRef(manifest.version, manifest.digest, manifest.image)


def serial_logs(folder: Path) -> tuple[SerialLog, ...]:
    """The digest and size of every serial log in ``folder``, in boot order (by name)."""
    if not folder.is_dir():
        return ()
    logs = []
    for path in sorted(folder.glob("*.log")):
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        logs.append(SerialLog(path.name, f"sha256:{digest.hexdigest()}", size))
    return tuple(logs)


@dataclass
class _Candidate:
    store: ImageStore
    digest: str
    image: str  # NAME@DIGEST


@dataclass
class _Run:
    repository: Repository
    derivative: Derivative
    options: BootTestOptions
    store_options: StoreOptions
    limits: Limits
    progress: Progress
    work_dir: Path
    origin: ReleaseManifest | None
    runner: StepRunner
    candidate: _Candidate | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    attestable: bool = False  # the guest steps ran: the result says something about booting

    @property
    def serial_dir(self) -> Path:
        return self.work_dir / "serial"


def _build(run: _Run) -> None:
    from cosgitops.oci import open_store

    with run.runner.step("build", f"the candidate {run.derivative.version}") as step:
        if step is None:
            return
        if run.options.image is not None:
            from cosgitops.signing.image import resolve_reference

            resolved = resolve_reference(run.options.image, run.store_options)
            run.candidate = _Candidate(
                resolved.store,
                resolved.digest,
                f"{resolved.store.reference.name}@{resolved.digest}",
            )
            step.detail = f"given {run.candidate.image}"
            return
        from cosgitops.builder import build_derivative

        built = build_derivative(
            run.repository,
            run.derivative,
            push=run.options.attest,
            options=run.store_options,
            limits=run.limits,
            progress=run.progress,
        )
        store = open_store(built.name, run.store_options)
        run.candidate = _Candidate(store, built.digest, built.reference)
        step.detail = f"{built.reference} ({built.builder} builder)"


def _guest_steps(run: _Run) -> None:
    """The steps that need a VM: disk, boots, upgrade, health checks, fallback."""
    from cosgitops.boottest.guest import run_guest_steps

    run_guest_steps(run)
    run.runner.skip_rest(STEP_NAMES[1:] if run.origin is not None else FRESH_STEP_NAMES[1:])


def boot_test(
    root: Path,
    name: str,
    options: BootTestOptions | None = None,
    *,
    store_options: StoreOptions | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress = NULL_PROGRESS,
) -> BootTestReport:
    """Boot-test derivative ``name`` of the repository at ``root``; see the module doc."""
    from cosgitops.oci.store import StoreOptions
    from cosgitops.validate import load_repository

    options = options or BootTestOptions()
    store_options = store_options or StoreOptions(limits=limits)
    tree = load_repository(root, limits=limits)
    repository = tree.repository
    derivative = tree.derivatives.get(name)
    if derivative is None:
        raise UsageError(
            f"there is no derivative named {name!r}",
            hint=f"derivatives in this repository: {', '.join(sorted(tree.derivatives)) or 'none'}",
        )
    work_dir = options.work_dir or (repository.root / WORK_DIR)
    work_dir = Path(work_dir).absolute() / name
    public_dir = _public_dir(repository, options)
    report = BootTestReport(derivative.name, derivative.version, "failed", work_dir)

    if options.skip_published:
        from cosgitops.release import published_versions

        if (derivative.name, derivative.version) in published_versions(
            _with_public_dir(repository, public_dir)
        ):
            report.status = "skipped"
            report.note = f"{derivative.name} {derivative.version} is already published"
            return report

    signer = None
    if options.attest:
        from cosgitops.release import release_signer

        signer, report.development_key = release_signer(
            repository,
            key=options.key,
            keyless=options.keyless,
            identity_token=options.identity_token,
        )

    origin = from_release(repository, derivative, public_dir, pinned=options.from_version)
    run = _Run(
        repository=repository,
        derivative=derivative,
        options=options,
        store_options=store_options,
        limits=limits,
        progress=progress,
        work_dir=work_dir,
        origin=origin,
        runner=StepRunner(progress),
    )
    started = _now()
    came = "a fresh install" if origin is None else f"{origin.version} ({origin.digest[:19]})"
    progress.note(f"boot-testing {derivative.name} {derivative.version} from {came}")
    _build(run)
    if run.candidate is not None:
        _guest_steps(run)
    else:
        run.runner.skip_rest(STEP_NAMES if origin is not None else FRESH_STEP_NAMES)

    digest = run.candidate.digest if run.candidate else "sha256:" + "0" * 64
    image = run.candidate.image if run.candidate else ""
    result = BootTestResult(
        derivative=derivative.name,
        candidate=ImageRef(derivative.version, digest, image),
        steps=tuple(run.runner.results),
        from_release=_release_json(origin),
        channel=derivative.release.channels[0],
        serial_logs=serial_logs(run.serial_dir),
        environment=run.environment,
        started=started,
        finished=_now(),
    )
    report.result = result
    report.status = "passed" if result.passed else "failed"
    report.failed_log = run.runner.failed_log
    if run.runner.failure is not None:
        report.error = run.runner.failure.message
        report.hint = run.runner.failure.hint or ""
    if signer is not None and run.candidate is not None and run.attestable:
        from cosgitops.boottest.attestation import attach_attestation

        try:
            from cosgitops.builder.inputs import public_image_name

            identity = public_image_name(repository, derivative.name)
            report.attestation = attach_attestation(
                run.candidate.store, result, signer, identity=identity
            )
        except CosgitopsError as exc:
            report.status = "failed"
            report.error = report.error or f"could not attach the boot attestation: {exc}"
            report.hint = report.hint or (exc.hint or "")
    return report


def _with_public_dir(repository: Repository, public_dir: Path) -> Repository:
    from dataclasses import replace

    return replace(repository, publish=replace(repository.publish, dir=str(public_dir)))
