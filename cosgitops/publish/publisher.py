"""Publishing operations on the release index: add releases, refresh, yank, rotate keys.

Every operation runs under the index lock (:mod:`.lock`) inside a transaction
(:mod:`.tufrepo`); if the index changed underneath anyway (a publisher that bypassed the
lock), the transaction is thrown away and the operation runs again on the new state,
up to ``Limits.publish_attempts`` times. Elemental channel files are rewritten after
``timestamp.json``, from the committed state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cosgitops import model
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import (
    ConcurrentPublishError,
    CosgitopsError,
    NotFoundError,
    PublishError,
    UsageError,
)
from cosgitops.progress import NULL_PROGRESS, Progress
from cosgitops.publish import elemental, paths, releases
from cosgitops.publish.lock import publish_lock
from cosgitops.publish.prune import prune_metadata
from cosgitops.publish.reader import IndexView, derivative_manifests, manifest_of, open_index
from cosgitops.publish.rolekeys import DEV_KEY_WARNING, KeyRing, RoleKey, password_for
from cosgitops.publish.tufrepo import (
    CommitResult,
    Index,
    IndexTransaction,
    has_listing,
    latest_root_version,
    release_targets,
)

__all__ = [
    "IndexView",
    "PublishResult",
    "RefreshResult",
    "RotationResult",
    "YankResult",
    "open_index",
    "publish_releases",
    "refresh",
    "rotate_key",
    "yank",
]
from cosgitops.versioning import parse_range

T = TypeVar("T")


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class ReleaseRef:
    derivative: str
    version: str
    target_path: str
    image: str

    def to_json(self) -> dict[str, str]:
        return {
            "derivative": self.derivative,
            "version": self.version,
            "target": self.target_path,
            "image": self.image,
        }


@dataclass
class IndexChange:
    """What one operation did to the index (shared by every operation's result)."""

    public_dir: Path
    changed: bool = False
    timestamp_version: int = 0
    snapshot_version: int = 0
    root_version: int = 0
    development_keys: dict[str, Path] = field(default_factory=dict)
    created_keys: list[Path] = field(default_factory=list)
    channel_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    attempts: int = 1

    def record(self, commit: CommitResult) -> None:
        self.changed = commit.changed
        self.timestamp_version = commit.timestamp_version
        self.snapshot_version = commit.snapshot_version
        self.root_version = commit.root_version

    def development_notes(self) -> list[str]:
        """One line naming the roles signed with development keys (none: no line)."""
        if not self.development_keys:
            return []
        roles = sorted(self.development_keys)
        files = ", ".join(str(self.development_keys[role]) for role in roles)
        return [DEV_KEY_WARNING.format(roles="/".join(roles), paths=files)]

    def index_json(self) -> dict[str, Any]:
        return {
            "publicDir": str(self.public_dir),
            "changed": self.changed,
            "timestampVersion": self.timestamp_version,
            "snapshotVersion": self.snapshot_version,
            "rootVersion": self.root_version,
            "developmentKeys": {role: str(p) for role, p in sorted(self.development_keys.items())},
            "createdKeys": [str(p) for p in self.created_keys],
            "channelFiles": [str(p) for p in self.channel_files],
            "warnings": list(self.warnings),
            "attempts": self.attempts,
        }


@dataclass
class PublishResult(IndexChange):
    added: list[ReleaseRef] = field(default_factory=list)
    unchanged: list[ReleaseRef] = field(default_factory=list)
    initialized: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            **self.index_json(),
            "initialized": self.initialized,
            "added": [ref.to_json() for ref in self.added],
            "unchanged": [ref.to_json() for ref in self.unchanged],
        }


@dataclass
class RefreshResult(IndexChange):
    resigned: list[str] = field(default_factory=list)
    pruned: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.index_json(),
            "resigned": list(self.resigned),
            "pruned": [p.name for p in self.pruned],
        }


@dataclass
class YankResult(IndexChange):
    release: ReleaseRef | None = None
    already_yanked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            **self.index_json(),
            "release": None if self.release is None else self.release.to_json(),
            "alreadyYanked": self.already_yanked,
        }


@dataclass
class RotationResult(IndexChange):
    role: str = ""
    old_keyids: list[str] = field(default_factory=list)
    new_keyids: list[str] = field(default_factory=list)
    resigned: list[str] = field(default_factory=list)
    retired_keys: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.index_json(),
            "role": self.role,
            "oldKeyids": list(self.old_keyids),
            "newKeyids": list(self.new_keyids),
            "resigned": list(self.resigned),
            "retiredKeys": [str(p) for p in self.retired_keys],
        }


# ---------------------------------------------------------------- shared plumbing


def public_dir_of(repository: model.Repository) -> Path:
    folder = Path(repository.publish.dir)
    return folder if folder.is_absolute() else repository.root / folder


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC).replace(microsecond=0)
    if now.tzinfo is None:
        raise UsageError("`now` must be an aware datetime (UTC)")
    return now.astimezone(UTC).replace(microsecond=0)


def _locked(
    public_dir: Path,
    limits: Limits,
    attempt: Callable[[], T],
    result_attempts: Callable[[T, int], None],
) -> T:
    """Run ``attempt`` under the lock; start over on a concurrent change."""
    for number in range(1, max(limits.publish_attempts, 1) + 1):
        with publish_lock(public_dir, timeout_seconds=limits.publish_lock_timeout_seconds):
            try:
                outcome = attempt()
            except ConcurrentPublishError:
                if number >= limits.publish_attempts:
                    raise
            else:
                result_attempts(outcome, number)
                return outcome
        time.sleep(min(0.05 * 2**number, 2.0))
    raise ConcurrentPublishError("the index kept changing while publishing")  # not reached


def _set_attempts(result: IndexChange, attempts: int) -> None:
    result.attempts = attempts


def _development_keys(keyring: KeyRing) -> dict[str, Path]:
    return {role: path for role, path in keyring.development.items()}


def _export_channels(index: Index, derivatives: Iterable[str]) -> list[Path]:
    written: list[Path] = []
    for derivative in sorted(set(derivatives)):
        manifests = derivative_manifests(index, derivative)
        written.extend(elemental.write_channel_files(index.public_dir, derivative, manifests))
    return written


# ---------------------------------------------------------------- publish


def _check_batch(
    repository: model.Repository, manifests: Sequence[model.ReleaseManifest]
) -> list[model.ReleaseManifest]:
    unique: dict[tuple[str, str], model.ReleaseManifest] = {}
    for manifest in manifests:
        releases.check_manifest(manifest, repository)
        key = (manifest.derivative, manifest.version)
        seen = unique.get(key)
        if seen is None:
            unique[key] = manifest
        elif not releases.same_release(seen, manifest):
            raise PublishError(
                f"two different releases of {manifest.derivative} {manifest.version} in one "
                "publish",
                hint="each version is published once; bump spec.version for a new build",
            )
    return list(unique.values())


def _upgrade_warnings(
    transaction: IndexTransaction, added: Sequence[model.ReleaseManifest]
) -> list[str]:
    warnings = []
    for manifest in added:
        if manifest.upgrade_from is None:
            continue
        allowed = parse_range(manifest.upgrade_from)
        role = transaction.derivative_role(manifest.derivative)
        versions = (
            []
            if role is None
            else [str(target.custom["cosgitops"]["version"]) for target in release_targets(role)]
        )
        if not any(v != manifest.version and allowed.contains(v) for v in versions):
            warnings.append(
                f"{manifest.derivative} {manifest.version}: upgradeFrom {manifest.upgrade_from!r} "
                "admits none of the published versions, so no device can upgrade to it "
                "(only fresh installs reach it)"
            )
    return warnings


def publish_releases(
    repository: model.Repository,
    manifests: Sequence[model.ReleaseManifest],
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
    keyring: KeyRing | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> PublishResult:
    """Add ``manifests`` to the index (creating it on first use).

    Re-publishing an identical release is a no-op; a different release under a version
    already published is refused (versions are immutable) and nothing is written.
    """
    moment = _now(now)
    report = progress or NULL_PROGRESS
    batch = _check_batch(repository, manifests)
    ring = keyring or KeyRing.for_repository(repository)
    public_dir = public_dir_of(repository)

    def attempt() -> PublishResult:
        result = PublishResult(public_dir=public_dir, development_keys=_development_keys(ring))
        metadata_dir = public_dir / paths.METADATA_DIR
        if latest_root_version(metadata_dir) == 0:
            result.created_keys = ring.ensure_development_keys(paths.TOP_LEVEL_ROLES)
        transaction = IndexTransaction.begin(
            public_dir,
            ring,
            repository.publish.expiry_days,
            moment,
            root_threshold=repository.publish.root_threshold,
        )
        result.initialized = transaction.initialized
        added: list[model.ReleaseManifest] = []
        for manifest in batch:
            ref = ReleaseRef(
                manifest.derivative,
                manifest.version,
                paths.release_target_path(manifest.derivative, manifest.version),
                manifest.image,
            )
            existing = transaction.release_target(manifest.derivative, manifest.version)
            if existing is not None:
                stored = manifest_of(transaction, existing)
                if releases.same_release(stored, manifest):
                    result.unchanged.append(ref)
                    continue
                raise PublishError(
                    f"{manifest.derivative} {manifest.version} is already published as a "
                    f"different release ({stored.image}); versions are immutable",
                    hint="bump spec.version in the derivative and release again",
                )
            prepared = releases.prepare_manifest(manifest, moment)
            transaction.put_target(
                prepared.derivative,
                prepared.version,
                releases.manifest_bytes(prepared),
                releases.release_custom(prepared),
            )
            added.append(prepared)
            result.added.append(ref)
        task = report.task(f"publish {len(added)} release(s) to {public_dir}")
        commit = transaction.commit()
        task.close()
        result.record(commit)
        if commit.changed:
            result.warnings = _upgrade_warnings(transaction, added)
            result.warnings += elemental.channel_warnings(added)
            result.channel_files = _export_channels(
                transaction.index, {m.derivative for m in added}
            )
        return result

    return _locked(public_dir, limits, attempt, _set_attempts)


# ---------------------------------------------------------------- refresh


def _nearing_expiry(expires: datetime, period_days: int, now: datetime) -> bool:
    """Less than half the role's validity period left."""
    return expires - now < timedelta(days=period_days) / 2


def refresh(
    repository: model.Repository,
    *,
    now: datetime | None = None,
    keyring: KeyRing | None = None,
    limits: Limits = DEFAULT_LIMITS,
    force: bool = False,
    export_channels: bool = True,
    prune: bool = True,
) -> RefreshResult:
    """Re-sign ``timestamp`` (always), ``snapshot`` and any targets-type role with less
    than half its validity left (all of them with ``force``), and ``root`` when it nears
    expiry and its keys are at hand. Run it on a schedule shorter than half the
    timestamp's lifetime. With ``prune``, metadata unreferenced for longer than a
    timestamp lives (plus a day) is removed (:mod:`.prune`)."""
    moment = _now(now)
    ring = keyring or KeyRing.for_repository(repository)
    public_dir = public_dir_of(repository)
    days = repository.publish.expiry_days

    def attempt() -> RefreshResult:
        result = RefreshResult(public_dir=public_dir, development_keys=_development_keys(ring))
        transaction = IndexTransaction.begin(public_dir, ring, days, moment, create=False)
        index = transaction.index
        assert index.root is not None and index.snapshot is not None
        root = index.root.signed
        if force or _nearing_expiry(root.expires, int(days["root"]), moment):
            try:
                _resign_root(transaction, ring, moment, days)
                result.resigned.append("root")
            except CosgitopsError as exc:
                result.warnings.append(
                    f"root expires {root.expires:%Y-%m-%d} and could not be re-signed: {exc}"
                )
        for meta_name in list(index.snapshot.signed.meta):
            name = meta_name[: -len(".json")]
            role = transaction.role(name)
            # a derivative role from before release listings gets its listing now
            unlisted = name not in paths.RESERVED_ROLE_NAMES and not has_listing(role, name)
            if (
                force
                or unlisted
                or _nearing_expiry(role.signed.expires, int(days["targets"]), moment)
            ):
                transaction.mark_dirty(name)
                result.resigned.append(name)
        if (
            force
            or result.resigned
            or _nearing_expiry(index.snapshot.signed.expires, int(days["snapshot"]), moment)
        ):
            transaction.force_snapshot()
            result.resigned.append("snapshot")
        transaction.force_timestamp()
        result.resigned.append("timestamp")
        result.record(transaction.commit())
        if export_channels:
            result.channel_files = _export_channels(index, index.derivatives())
        if prune:
            window = timedelta(days=int(days["timestamp"]) + 1)
            result.pruned = prune_metadata(index, window=window)
        return result

    return _locked(public_dir, limits, attempt, _set_attempts)


def _resign_root(transaction: IndexTransaction, ring: KeyRing, now: datetime, days: Any) -> None:
    """Root N+1 with the same keys and a new expiry."""
    from cosgitops.publish.tufapi import Metadata

    current = transaction.index.root
    assert current is not None
    following: Metadata[Any] = Metadata.from_bytes(current.to_bytes())
    following.signed.version = int(current.signed.version) + 1
    following.signed.expires = now + timedelta(days=int(days["root"]))
    transaction.sign_with(following, "root", ring.keys("root"), current.signed)
    transaction.add_root(following)


# ---------------------------------------------------------------- yank


def yank(
    repository: model.Repository,
    derivative: str,
    version: str,
    *,
    reason: str,
    now: datetime | None = None,
    keyring: KeyRing | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> YankResult:
    """Mark a published release as a dead end: devices are no longer offered it and the
    Elemental channels drop it. The release stays listed (``deadend: true``, the reason
    in its ``custom``); nothing is deleted."""
    if not reason.strip():
        raise UsageError("a yank needs a reason", hint="say why, e.g. --reason 'boot loop on X'")
    paths.check_derivative_name(derivative)
    paths.check_version(version)
    moment = _now(now)
    ring = keyring or KeyRing.for_repository(repository)
    public_dir = public_dir_of(repository)

    def attempt() -> YankResult:
        result = YankResult(public_dir=public_dir, development_keys=_development_keys(ring))
        transaction = IndexTransaction.begin(
            public_dir, ring, repository.publish.expiry_days, moment, create=False
        )
        target = transaction.release_target(derivative, version)
        if target is None:
            known = ", ".join(_versions(transaction, derivative)) or "none"
            raise NotFoundError(
                f"{derivative} {version} is not published",
                hint=f"published versions of {derivative}: {known}",
            )
        manifest = manifest_of(transaction, target)
        result.release = ReleaseRef(derivative, version, target.path, manifest.image)
        if manifest.deadend:
            result.already_yanked = True
            result.record(transaction.commit())
            return result
        dead = releases.yanked(manifest)
        transaction.put_target(
            derivative,
            version,
            releases.manifest_bytes(dead),
            releases.release_custom(
                dead, yank=releases.Yank(reason.strip(), releases.format_time(moment))
            ),
        )
        result.record(transaction.commit())
        result.channel_files = _export_channels(transaction.index, [derivative])
        return result

    return _locked(public_dir, limits, attempt, _set_attempts)


def _versions(transaction: IndexTransaction, derivative: str) -> list[str]:
    role = transaction.derivative_role(derivative)
    if role is None:
        return []
    parsed = [paths.parse_release_target_path(path) for path in role.signed.targets]
    return [item[1] for item in parsed if item is not None]


# ---------------------------------------------------------------- key rotation


def _new_dev_key(repository: model.Repository, ring: KeyRing, role: str) -> tuple[RoleKey, Path]:
    """A new development key beside the current one (moved into place after commit)."""
    from cosgitops.signing.keys import load_private_key, write_keypair

    current = ring.development[role]
    staged = current.with_name(current.stem + "-next")
    key_path, _ = write_keypair(staged, b"", overwrite=True)
    private = load_private_key(str(key_path), password=b"")
    return RoleKey.from_private(private, str(current)), staged


def _load_new_keys(base_dir: Path, role: str, sources: Sequence[str]) -> list[RoleKey]:
    from cosgitops.signing.keys import load_private_key

    loaded = []
    for source in sources:
        private = load_private_key(source, password=password_for(role), base_dir=base_dir)
        loaded.append(RoleKey.from_private(private, source))
    return loaded


def rotate_key(
    repository: model.Repository,
    role: str,
    new_key_source: str | Sequence[str] | None = None,
    *,
    now: datetime | None = None,
    keyring: KeyRing | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> RotationResult:
    """Replace the keys of top-level ``role`` through root version N+1.

    Root N+1 is signed by the current root keys (so devices trusting root N accept it)
    and, when ``role`` is ``root``, also by the new root keys. Metadata signed by the
    rotated role is re-signed with the new keys in the same commit. With development
    keys and no ``new_key_source``, a new development key replaces the old one (kept as
    ``tuf-<role>.v<N>.key``); with configured keys, point ``publish.keys.<role>`` in
    cosgitops.yaml at the new key afterwards.
    """
    if role not in paths.TOP_LEVEL_ROLES:
        raise UsageError(
            f"cannot rotate {role!r}: rotate one of {', '.join(paths.TOP_LEVEL_ROLES)}",
            hint="a team's derivative key changes with publish.delegationKeys and a publish",
        )
    moment = _now(now)
    ring = keyring or KeyRing.for_repository(repository)
    public_dir = public_dir_of(repository)
    days = repository.publish.expiry_days
    sources = [new_key_source] if isinstance(new_key_source, str) else list(new_key_source or [])
    Index.open(public_dir).require()
    staged: Path | None = None
    old_root_keys = ring.keys("root")
    if sources:
        new_keys = _load_new_keys(repository.root, role, sources)
    elif ring.is_development(role):
        new_key, staged = _new_dev_key(repository, ring, role)
        new_keys = [new_key]
    else:
        raise UsageError(
            f"the {role} role uses configured keys: name the new key",
            hint=f"cosgitops keys rotate {role} --new-key FILE|env://VAR",
        )

    def attempt() -> RotationResult:
        from cosgitops.publish.tufapi import Metadata

        result = RotationResult(
            public_dir=public_dir, development_keys=_development_keys(ring), role=role
        )
        transaction = IndexTransaction.begin(public_dir, ring, days, moment, create=False)
        current = transaction.index.root
        assert current is not None
        old_root = current.signed
        result.old_keyids = list(old_root.roles[role].keyids)
        following: Metadata[Any] = Metadata.from_bytes(current.to_bytes())
        new_root = following.signed
        new_root.version = int(old_root.version) + 1
        new_root.expires = moment + timedelta(days=int(days["root"]))
        for keyid in list(new_root.roles[role].keyids):
            new_root.revoke_key(keyid, role)
        for key in new_keys:
            new_root.add_key(key.public, role)
        threshold = (
            repository.publish.root_threshold
            if role == "root"
            else int(old_root.roles[role].threshold)
        )
        if threshold > len(new_keys):
            raise UsageError(
                f"the {role} role needs {threshold} keys (threshold) but {len(new_keys)} given",
                hint="pass --new-key once per key",
            )
        new_root.roles[role].threshold = threshold
        result.new_keyids = list(new_root.roles[role].keyids)
        # Old root keys vouch for N+1; when root itself rotates, the new keys must too.
        transaction.sign_with(following, "root", old_root_keys, old_root)
        if role == "root":
            transaction.sign_with(following, "root", new_keys, new_root, clear=False)
        transaction.add_root(following)
        ring.replace(role, new_keys)
        result.resigned.append("root")
        if role == "targets":
            result.resigned.extend(
                _move_targets_delegations(transaction, result.old_keyids, new_keys)
            )
        elif role == "snapshot":
            transaction.force_snapshot()
            result.resigned.append("snapshot")
        transaction.force_timestamp()
        result.resigned.append("timestamp")
        result.record(transaction.commit())
        return result

    outcome = _locked(public_dir, limits, attempt, _set_attempts)
    if staged is not None:
        outcome.retired_keys = _swap_dev_key(ring.development[role], staged, outcome.root_version)
    return outcome


def _move_targets_delegations(
    transaction: IndexTransaction, old_keyids: Sequence[str], new_keys: Sequence[RoleKey]
) -> list[str]:
    """Re-point every delegation that trusted the old targets keys to the new ones."""
    from cosgitops.publish.tufapi import Targets

    old = set(old_keyids)
    new_ids = [key.keyid for key in new_keys]
    resigned = ["targets"]
    parents: list[tuple[str, Targets]] = [("targets", transaction.mark_dirty("targets").signed)]
    for shard in paths.SHARD_ROLES:
        parents.append((shard, transaction.mark_dirty(shard).signed))
        resigned.append(shard)
    for _, parent in parents:
        delegations = parent.delegations
        if delegations is None or delegations.roles is None:
            continue
        for delegated in delegations.roles.values():
            if set(delegated.keyids) & old:
                delegated.keyids = [k for k in delegated.keyids if k not in old] + new_ids
                if delegated.name not in paths.RESERVED_ROLE_NAMES:
                    transaction.mark_dirty(delegated.name)
                    resigned.append(delegated.name)
        for key in new_keys:
            delegations.keys[key.keyid] = key.public
        used = {keyid for role in delegations.roles.values() for keyid in role.keyids}
        for keyid in list(delegations.keys):
            if keyid not in used:
                del delegations.keys[keyid]
    return resigned


def _swap_dev_key(current: Path, staged: Path, root_version: int) -> list[Path]:
    """Keep the old development key as ``tuf-<role>.v<N>.key`` and put the new one in place."""
    retired = []
    for suffix in (".key", ".pub"):
        old = current.with_suffix(suffix)
        if old.exists():
            keep = current.with_name(f"{current.stem}.v{root_version - 1}{suffix}")
            old.replace(keep)
            retired.append(keep)
        staged.with_name(staged.name + suffix).replace(current.with_suffix(suffix))
    return retired
