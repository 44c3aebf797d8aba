"""``cosgitops release``: plan → build → push → sign → publish, what CI runs on merge.

The published index is the state: a derivative is released when its current version is
not in the index yet, so re-running on the same commit changes nothing, and a run that
follows several queued merges catches up with all of them. A derivative that fails is
reported and left out; the others are published only when each is complete (built,
pushed, signed and verified under the trust policy).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import CosgitopsError, UsageError
from cosgitops.progress import NULL_PROGRESS, Progress

if TYPE_CHECKING:
    from cosgitops.model import BootTestRef, Derivative, ReleaseManifest, Repository
    from cosgitops.oci.store import ImageStore, StoreOptions
    from cosgitops.publish.publisher import PublishResult
    from cosgitops.signing.signers import KeylessSigner, KeySigner

Status = Literal["released", "published", "failed"]


@dataclass
class DerivativeOutcome:
    name: str
    version: str
    status: Status  # released now, already published before, or failed
    image: str = ""
    signer: str = ""
    channels: tuple[str, ...] = ()
    size: int = 0
    bytes_uploaded: int = 0
    boot_test: BootTestRef | None = None  # the passing boot attestation the release names
    error: str = ""
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "image": self.image,
            "signer": self.signer,
            "channels": list(self.channels),
            "size": self.size,
            "bytesUploaded": self.bytes_uploaded,
            "bootTest": None if self.boot_test is None else self.boot_test.to_json(),
            "error": self.error or None,
            "hint": self.hint or None,
        }


@dataclass
class ReleaseReport:
    outcomes: list[DerivativeOutcome] = field(default_factory=list)
    publish: PublishResult | None = None
    development_key: Path | None = None

    @property
    def ok(self) -> bool:
        return all(outcome.status != "failed" for outcome in self.outcomes)

    @property
    def failed(self) -> list[DerivativeOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "derivatives": [outcome.to_json() for outcome in self.outcomes],
            "index": None if self.publish is None else self.publish.to_json(),
            "developmentKey": None if self.development_key is None else str(self.development_key),
        }

    def markdown(self) -> str:
        """The summary table for ``$GITHUB_STEP_SUMMARY``."""
        lines = [
            "## cosgitops release",
            "",
            "| derivative | version | status | image | signature | boot test | channels |",
            "|---|---|---|---|---|---|---|",
        ]
        for outcome in self.outcomes:
            status = outcome.status if not outcome.error else f"failed: {outcome.error}"
            lines.append(
                f"| {outcome.name} | {outcome.version} | {_md(status)} | `{outcome.image or '-'}` "
                f"| {_md(outcome.signer or '-')} | {_md(boot_test_summary(outcome.boot_test))} "
                f"| {', '.join(outcome.channels) or '-'} |"
            )
        if not self.outcomes:
            lines.append("| - | - | nothing to release | - | - | - | - |")
        return "\n".join(lines) + "\n"


def boot_test_summary(boot_test: BootTestRef | None) -> str:
    """``passed from 1.3.0 (sha256:ab12…)`` for tables; ``-`` when there is none."""
    if boot_test is None:
        return "-"
    origin = f"from {boot_test.from_version}" if boot_test.from_version else "fresh install"
    return f"{boot_test.result} {origin} ({boot_test.attestation[:19]})"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def release_signer(
    repository: Repository, *, key: str | None, keyless: bool, identity_token: str | None
) -> tuple[KeySigner | KeylessSigner, Path | None]:
    """The signer `release` (and `boot-test`) uses, and the development key path when that
    is what it is."""
    from cosgitops.signing.keys import ensure_development_keypair
    from cosgitops.signing.signers import key_signer, keyless_signer

    if keyless or (repository.signing.keyless and key is None):
        return keyless_signer(identity_token=identity_token), None
    source = key or repository.signing.key
    if source is not None:
        return key_signer(source, base_dir=repository.root), None
    private, _public, _created = ensure_development_keypair(repository.root)
    return key_signer(str(private), password=b""), private


def published_versions(repository: Repository) -> set[tuple[str, str]]:
    """(derivative, version) pairs already in the repository's index."""
    from cosgitops.publish.paths import METADATA_DIR
    from cosgitops.publish.publisher import public_dir_of
    from cosgitops.publish.reader import open_index

    public_dir = public_dir_of(repository)
    if not (public_dir / METADATA_DIR / "1.root.json").is_file():
        return set()
    index = open_index(public_dir)
    return {
        (name, release.version) for name in index.derivatives() for release in index.releases(name)
    }


def _boot_tested_image(
    repository: Repository, derivative: Derivative, options: StoreOptions, limits: Limits
) -> tuple[ImageStore, str] | None:
    """The image the version's tag holds when a passing boot attestation trusted under
    the policy proves it (``boot-test`` pushed and attested it): the release publishes
    exactly what was tested, even when a rebuild would not give the same digest (the
    docker builder)."""
    from cosgitops.boottest.attestation import verify_attestations
    from cosgitops.errors import NotFoundError
    from cosgitops.oci import open_store
    from cosgitops.signing import policy_for

    store = open_store(repository.image_name(derivative.name), options)
    try:
        found = store.resolve(derivative.version)
    except NotFoundError:
        return None
    if found is None:
        return None
    policy = policy_for(repository, derivative.name)
    if not verify_attestations(store, found.digest, policy, limits=limits).ok:
        return None
    return store, found.digest


def _release_one(
    repository: Repository,
    derivative: Derivative,
    signer: KeySigner | KeylessSigner,
    *,
    options: StoreOptions,
    limits: Limits,
    progress: Progress,
) -> tuple[ReleaseManifest, DerivativeOutcome]:
    from cosgitops.builder import build_derivative
    from cosgitops.builder.inputs import public_image_name
    from cosgitops.oci import open_store
    from cosgitops.publish.collect import check_base_pinned, collect_release
    from cosgitops.signing import sign_image

    check_base_pinned(derivative)
    tested = _boot_tested_image(repository, derivative, options, limits)
    if tested is not None:
        store, digest = tested
        progress.note(f"{derivative.name} {derivative.version}: the boot-tested image {digest}")
        name, revision, bytes_uploaded = store.reference.name, None, 0
    else:
        built = build_derivative(
            repository, derivative, push=True, options=options, limits=limits, progress=progress
        )
        store = open_store(built.name, options)
        digest, name = built.digest, built.name
        revision, bytes_uploaded = built.revision or None, built.bytes_uploaded
    # Signed as published (the configured name), not as the path it was built to.
    sign_image(store, digest, signer, identity=public_image_name(repository, derivative.name))
    manifest = collect_release(repository, derivative, store, commit=revision, limits=limits)
    if manifest.digest != digest:
        what = "boot-tested" if tested is not None else "just built"
        raise CosgitopsError(
            f"{name}:{derivative.version} points at {manifest.digest}, not the image {what} "
            f"({digest})",
            hint="another build moved the tag meanwhile; re-run the release",
        )
    outcome = DerivativeOutcome(
        name=derivative.name,
        version=derivative.version,
        status="released",
        image=manifest.image,
        signer=manifest.signer,
        channels=manifest.channels,
        size=sum(platform.size for platform in manifest.platforms),
        bytes_uploaded=bytes_uploaded,
        boot_test=manifest.boot_test,
    )
    return manifest, outcome


def release(
    root: Path,
    *,
    since: str | None = None,
    only: Sequence[str] = (),
    key: str | None = None,
    keyless: bool = False,
    identity_token: str | None = None,
    public_dir: Path | None = None,
    options: StoreOptions | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress = NULL_PROGRESS,
    now: datetime | None = None,
) -> ReleaseReport:
    """Release every derivative whose current version is not yet published.

    ``public_dir`` overrides ``spec.publish.dir`` (e.g. a checkout of the index branch
    outside the repository, which cosgitops.yaml itself may not point at).
    """
    from cosgitops.oci.store import StoreOptions
    from cosgitops.publish.publisher import publish_releases
    from cosgitops.validate import load_repository

    options = options or StoreOptions(limits=limits)
    tree = load_repository(root, limits=limits)
    repository = tree.repository
    if public_dir is not None:
        publish = replace(repository.publish, dir=str(Path(public_dir).absolute()))
        repository = replace(repository, publish=publish)
    unknown = sorted(set(only) - set(tree.derivatives))
    if unknown:
        raise UsageError(
            f"no derivative named {', '.join(unknown)}",
            hint=f"known: {', '.join(sorted(tree.derivatives)) or 'none'}",
        )
    names = sorted(only or tree.derivatives)
    if since is not None:
        from cosgitops.builder.plan import plan_repository

        planned = set(plan_repository(repository, tree.derivatives, since=since).names)
        names = [name for name in names if name in planned]

    report = ReleaseReport()
    published = published_versions(repository)
    pending = [tree.derivatives[name] for name in names]
    todo = [d for d in pending if (d.name, d.version) not in published]
    for derivative in pending:
        if (derivative.name, derivative.version) in published:
            report.outcomes.append(
                DerivativeOutcome(
                    derivative.name,
                    derivative.version,
                    "published",
                    channels=derivative.release.channels,
                )
            )
    manifests: list[ReleaseManifest] = []
    if todo:
        signer, report.development_key = release_signer(
            repository, key=key, keyless=keyless, identity_token=identity_token
        )
        for derivative in todo:
            progress.note(f"releasing {derivative.name} {derivative.version}")
            try:
                manifest, outcome = _release_one(
                    repository,
                    derivative,
                    signer,
                    options=options,
                    limits=limits,
                    progress=progress,
                )
            except CosgitopsError as error:
                report.outcomes.append(
                    DerivativeOutcome(
                        derivative.name,
                        derivative.version,
                        "failed",
                        channels=derivative.release.channels,
                        error=str(error),
                        hint=error.hint or "",
                    )
                )
                continue
            manifests.append(manifest)
            report.outcomes.append(outcome)
    if manifests:
        report.publish = publish_releases(
            repository, manifests, now=now, progress=progress, limits=limits
        )
    report.outcomes.sort(key=lambda outcome: outcome.name)
    _write_step_summary(report)
    return report


def _write_step_summary(report: ReleaseReport) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(report.markdown())
    except OSError as exc:
        raise UsageError(
            f"cannot append to GITHUB_STEP_SUMMARY {path}: {exc.strerror}",
            hint="unset GITHUB_STEP_SUMMARY outside GitHub Actions",
        ) from exc
