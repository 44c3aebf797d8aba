"""The index as a TUF repository (python-tuf Metadata API): load the publisher's own
folder, change it in a transaction, write it in the order that keeps readers safe.

Roles: ``root``, ``timestamp``, ``snapshot``, ``targets`` -> 16 ``shard-<h>`` roles ->
one role per derivative holding one target per release (see :mod:`.paths`) plus the
derivative's release listing (:mod:`.listing`), rewritten whenever its releases change.
Consistent snapshots: every role but ``timestamp`` is written as ``N.<role>.json`` and
every target as ``<sha256>.<name>``, so files already published never change and a
client reading while a publisher writes always sees one consistent state.

Commit order: target content, new root versions, changed delegated roles, snapshot,
then ``timestamp.json`` last (the one file that is replaced). Versioned files are
created exclusively (hard link of a finished temp file), so two publishers that bypass
the lock can never overwrite each other's files: a taken version number is skipped
(TUF only requires versions to grow; snapshot names the exact ones), and the version
check on ``timestamp.json`` right before it is replaced makes the loser start over.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosgitops.errors import (
    ConcurrentPublishError,
    IntegrityError,
    NotFoundError,
    PublishError,
)
from cosgitops.fsutil import atomic_write_bytes, fsync_dir
from cosgitops.publish import paths
from cosgitops.publish.listing import is_listing_path, listing_bytes, listing_target_path
from cosgitops.publish.rolekeys import KeyRing, RoleKey

if TYPE_CHECKING:
    from cosgitops.publish.tufapi import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp

_ROOT_FILE_RE = re.compile(r"(\d+)\.root\.json\Z")
_MAX_VERSION_SKIPS = 1000


def serializer() -> Any:
    from cosgitops.publish.tufapi import JSONSerializer

    return JSONSerializer(compact=True)


def expiry_kind(role: str) -> str:
    """Which ``expiryDays`` entry applies to ``role`` (delegated roles follow targets)."""
    return role if role in paths.TOP_LEVEL_ROLES else "targets"


def read_metadata_file(path: Path) -> Metadata[Any]:
    from cosgitops.publish.tufapi import Metadata

    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"index file {path} is missing",
            hint="the index folder is incomplete; restore it from where it is published",
        ) from exc
    try:
        return Metadata.from_bytes(data)
    except Exception as exc:
        raise PublishError(
            f"index file {path} is not valid TUF metadata: {exc}",
            hint="restore the index folder from where it is published",
        ) from exc


def release_targets(role: Metadata[Targets]) -> list[TargetFile]:
    """The release targets of a derivative's role (its listing left out)."""
    return [target for path, target in role.signed.targets.items() if not is_listing_path(path)]


def has_listing(role: Metadata[Targets], derivative: str) -> bool:
    return listing_target_path(derivative) in role.signed.targets


def latest_root_version(metadata_dir: Path) -> int:
    best = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(metadata_dir):
            match = _ROOT_FILE_RE.match(entry.name)
            if match:
                best = max(best, int(match.group(1)))
    return best


def read_timestamp_version(metadata_dir: Path) -> int:
    """Version of ``timestamp.json`` on disk now (0 if there is none)."""
    path = metadata_dir / paths.metadata_file("timestamp")
    if not path.exists():
        return 0
    return int(read_metadata_file(path).signed.version)


class Index:
    """The publisher's view of an index folder (trusted: it is our own output)."""

    def __init__(self, public_dir: Path):
        self.public_dir = public_dir
        self.metadata_dir = public_dir / paths.METADATA_DIR
        self.targets_dir = public_dir / paths.TARGETS_DIR
        self.root: Metadata[Root] | None = None
        self.timestamp: Metadata[Timestamp] | None = None
        self.snapshot: Metadata[Snapshot] | None = None
        self.targets: Metadata[Targets] | None = None
        self._roles: dict[str, Metadata[Targets]] = {}

    @classmethod
    def open(cls, public_dir: Path) -> Index:
        index = cls(public_dir)
        index.load()
        return index

    def load(self) -> None:
        root_version = latest_root_version(self.metadata_dir)
        if root_version:
            self.root = read_metadata_file(
                self.metadata_dir / paths.metadata_file("root", root_version)
            )
        timestamp_path = self.metadata_dir / paths.metadata_file("timestamp")
        if self.root is None or not timestamp_path.exists():
            return
        self.timestamp = read_metadata_file(timestamp_path)
        snapshot_version = self.timestamp.signed.snapshot_meta.version
        self.snapshot = read_metadata_file(
            self.metadata_dir / paths.metadata_file("snapshot", snapshot_version)
        )
        self.targets = self.role("targets")

    @property
    def exists(self) -> bool:
        return self.timestamp is not None

    @property
    def timestamp_version(self) -> int:
        return 0 if self.timestamp is None else int(self.timestamp.signed.version)

    def require(self) -> None:
        if not self.exists:
            raise NotFoundError(
                f"there is no index in {self.public_dir}",
                hint="run `cosgitops publish` first",
            )

    def role_version(self, name: str) -> int | None:
        if self.snapshot is None:
            return None
        meta = self.snapshot.signed.meta.get(f"{name}.json")
        return None if meta is None else int(meta.version)

    def role(self, name: str) -> Metadata[Targets]:
        """A targets-type role (``targets``, a shard, a derivative) at its current version."""
        cached = self._roles.get(name)
        if cached is not None:
            return cached
        version = self.role_version(name)
        if version is None:
            raise NotFoundError(f"role {name!r} is not in the index's snapshot")
        loaded = read_metadata_file(self.metadata_dir / paths.metadata_file(name, version))
        self._roles[name] = loaded
        return loaded

    def has_role(self, name: str) -> bool:
        return name in self._roles or self.role_version(name) is not None

    def derivatives(self) -> list[str]:
        """Every derivative with a role in the index, sorted."""
        if self.snapshot is None:
            return []
        names = [name[: -len(".json")] for name in self.snapshot.signed.meta]
        return sorted(name for name in names if name not in paths.RESERVED_ROLE_NAMES)

    def derivative_role(self, derivative: str) -> Metadata[Targets] | None:
        role = paths.role_for(derivative)
        return self.role(role) if self.has_role(role) else None

    def target_file_path(self, target: TargetFile) -> Path:
        digest = target.hashes["sha256"]
        return self.targets_dir / paths.consistent_target_file(target.path, digest)

    def read_target(self, target: TargetFile) -> bytes:
        """A target's bytes from disk, checked against the metadata that lists it."""
        from cosgitops.publish.tufapi import LengthOrHashMismatchError

        path = self.target_file_path(target)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"target file {path} is missing from the index",
                hint="restore the index folder from where it is published",
            ) from exc
        try:
            target.verify_length_and_hashes(data)
        except LengthOrHashMismatchError as exc:
            raise IntegrityError(f"{path} does not match its metadata: {exc}") from exc
        return data


@dataclass
class CommitResult:
    changed: bool
    timestamp_version: int
    snapshot_version: int
    root_version: int
    written_roles: dict[str, int] = field(default_factory=dict)
    content_files: list[Path] = field(default_factory=list)


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Write ``path`` only if nothing is there; readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    fsync_dir(path.parent)
    return True


class IndexTransaction:
    """Changes to an index, applied by :meth:`commit` in the safe order."""

    def __init__(
        self,
        index: Index,
        keyring: KeyRing,
        expiry_days: Mapping[str, int],
        now: datetime,
    ):
        self.index = index
        self.keyring = keyring
        self.expiry_days = expiry_days
        self.now = now
        self.base_timestamp_version = index.timestamp_version
        self.initialized = False
        self._dirty: dict[str, Metadata[Targets]] = {}
        self._fresh: set[str] = set()
        self._content: dict[Path, bytes] = {}
        self._new_roots: list[Metadata[Root]] = []
        self._created: list[Path] = []
        self._force_snapshot = False
        self._force_timestamp = False

    # ------------------------------------------------------------ setup

    @classmethod
    def begin(
        cls,
        public_dir: Path,
        keyring: KeyRing,
        expiry_days: Mapping[str, int],
        now: datetime,
        *,
        root_threshold: int = 1,
        create: bool = True,
    ) -> IndexTransaction:
        index = Index.open(public_dir)
        transaction = cls(index, keyring, expiry_days, now)
        if not index.exists:
            if not create:
                index.require()
            transaction._initialize(root_threshold)
        return transaction

    def expires(self, role: str) -> datetime:
        return self.now + timedelta(days=int(self.expiry_days[expiry_kind(role)]))

    def _initialize(self, root_threshold: int) -> None:
        """A fresh index: root v1 (unless a crashed first publish left one), targets
        delegating to 16 empty shards, then snapshot and timestamp at commit."""
        from cosgitops.publish.tufapi import (
            DelegatedRole,
            Delegations,
            Metadata,
            Root,
            Targets,
        )

        if self.index.root is None:
            root = Root(expires=self.expires("root"), consistent_snapshot=True)
            for role in paths.TOP_LEVEL_ROLES:
                for key in self.keyring.keys(role):
                    root.add_key(key.public, role)
            if root_threshold > len(root.roles["root"].keyids):
                raise PublishError(
                    f"rootThreshold {root_threshold} is more than the "
                    f"{len(root.roles['root'].keyids)} root key(s) configured",
                    hint="list at least rootThreshold keys under publish.keys.root",
                )
            root.roles["root"].threshold = root_threshold
            root_md = Metadata(root)
            self.sign_with(root_md, "root", self.keyring.keys("root"), root)
            self._new_roots.append(root_md)
            self.index.root = root_md
        targets_keys = self.keyring.keys("targets")
        delegations = Delegations(
            keys={key.keyid: key.public for key in targets_keys},
            roles={
                paths.shard_role(digit): DelegatedRole(
                    name=paths.shard_role(digit),
                    keyids=[key.keyid for key in targets_keys],
                    threshold=self._threshold("targets"),
                    terminating=True,
                    paths=paths.shard_paths(digit),
                )
                for digit in paths.SHARD_DIGITS
            },
        )
        top = Metadata(Targets(expires=self.expires("targets"), delegations=delegations))
        self._add_fresh("targets", top)
        for digit in paths.SHARD_DIGITS:
            shard = Targets(
                expires=self.expires("targets"),
                delegations=Delegations(keys={}, roles={}),
            )
            self._add_fresh(paths.shard_role(digit), Metadata(shard))
        self.initialized = True

    def _add_fresh(self, name: str, metadata: Metadata[Targets]) -> None:
        self._dirty[name] = metadata
        self._fresh.add(name)
        self.index._roles[name] = metadata

    @property
    def root(self) -> Root:
        assert self.index.root is not None
        return self.index.root.signed

    def _threshold(self, role: str) -> int:
        if self.index.root is None:
            return 1
        return int(self.root.roles[role].threshold)

    # ------------------------------------------------------------ reading through

    def role(self, name: str) -> Metadata[Targets]:
        return self._dirty.get(name) or self.index.role(name)

    def has_role(self, name: str) -> bool:
        return name in self._dirty or self.index.has_role(name)

    def derivative_role(self, derivative: str) -> Metadata[Targets] | None:
        name = paths.role_for(derivative)
        return self.role(name) if self.has_role(name) else None

    def release_target(self, derivative: str, version: str) -> TargetFile | None:
        role = self.derivative_role(derivative)
        if role is None:
            return None
        return role.signed.targets.get(paths.release_target_path(derivative, version))

    def read_target(self, target: TargetFile) -> bytes:
        pending = self._content.get(self.index.target_file_path(target))
        return pending if pending is not None else self.index.read_target(target)

    # ------------------------------------------------------------ changes

    def mark_dirty(self, name: str) -> Metadata[Targets]:
        """Re-sign role ``name`` (a targets-type role) at commit."""
        metadata = self.role(name)
        self._dirty[name] = metadata
        return metadata

    def force_snapshot(self) -> None:
        self._force_snapshot = True

    def force_timestamp(self) -> None:
        self._force_timestamp = True

    def ensure_derivative_role(self, derivative: str) -> Metadata[Targets]:
        """The derivative's role, delegated from its shard to the configured key."""
        from cosgitops.publish.tufapi import DelegatedRole, Metadata, Targets

        name = paths.role_for(derivative)
        shard_name = paths.shard_role_for(derivative)
        shard = self.role(shard_name)
        delegations = shard.signed.delegations
        assert delegations is not None and delegations.roles is not None
        keys = self.keyring.derivative_keys(derivative)
        keyids = sorted(key.keyid for key in keys)
        current = delegations.roles.get(name)
        if current is None or sorted(current.keyids) != keyids:
            delegations.roles[name] = DelegatedRole(
                name=name,
                keyids=keyids,
                threshold=1,
                terminating=True,
                paths=paths.derivative_paths(derivative),
            )
            for key in keys:
                delegations.keys[key.keyid] = key.public
            self._prune_unused_keys(shard)
            self.mark_dirty(shard_name)
        if self.has_role(name):
            return self.mark_dirty(name)
        metadata = Metadata(Targets(expires=self.expires(name)))
        self._add_fresh(name, metadata)
        return metadata

    @staticmethod
    def _prune_unused_keys(role: Metadata[Targets]) -> None:
        delegations = role.signed.delegations
        if delegations is None or delegations.roles is None:
            return
        used = {keyid for delegated in delegations.roles.values() for keyid in delegated.keyids}
        for keyid in list(delegations.keys):
            if keyid not in used:
                del delegations.keys[keyid]

    def put_target(
        self, derivative: str, version: str, data: bytes, custom: Mapping[str, Any]
    ) -> TargetFile:
        """Add or replace the release ``derivative`` ``version`` with content ``data``."""
        from cosgitops.publish.tufapi import TargetFile

        role = self.ensure_derivative_role(derivative)
        path = paths.release_target_path(derivative, version)
        described = TargetFile.from_data(path, data, ["sha256"])
        target = TargetFile(
            described.length,
            described.hashes,
            path,
            unrecognized_fields={"custom": dict(custom)},
        )
        role.signed.targets[path] = target
        self._content[self.index.target_file_path(target)] = data
        return target

    def add_root(self, root: Metadata[Root]) -> None:
        """Publish ``root`` (already signed) as the next root version."""
        self._new_roots.append(root)
        self.index.root = root

    @property
    def changed(self) -> bool:
        return bool(
            self._dirty
            or self._content
            or self._new_roots
            or self._force_snapshot
            or self._force_timestamp
        )

    # ------------------------------------------------------------ signing

    def sign_with(
        self,
        metadata: Metadata[Any],
        role: str,
        keys: Sequence[RoleKey],
        authority: Any,
        *,
        clear: bool = True,
    ) -> None:
        """Sign with ``keys``, refusing keys that ``authority`` (the delegator) does not
        trust for ``role`` or too few to meet its threshold."""
        delegated = authority.get_delegated_role(role)
        allowed = set(delegated.keyids)
        usable = [key for key in keys if key.keyid in allowed]
        if len(usable) < delegated.threshold:
            configured = ", ".join(key.source for key in keys) or "none"
            raise PublishError(
                f"the keys for the {role} role ({configured}) are not the ones the index "
                f"trusts for it ({len(usable)} of threshold {delegated.threshold})",
                hint="configure the keys the index was created with (publish.keys in "
                "cosgitops.yaml), or rotate keys with `cosgitops keys rotate`",
            )
        if clear:
            metadata.signatures.clear()
        for key in usable:
            metadata.sign(key.signer(), append=True)

    def _role_keys(self, name: str) -> tuple[list[RoleKey], Any]:
        """The keys signing targets-type role ``name`` and the role that delegates it."""
        if name == "targets":
            return self.keyring.keys("targets"), self.root
        if name in paths.SHARD_ROLES:
            return self.keyring.keys("targets"), self.role("targets").signed
        shard = self.role(paths.shard_role_for(name)).signed
        return self.keyring.derivative_keys(name), shard

    def _write_versioned(
        self,
        name: str,
        metadata: Metadata[Any],
        first_version: int,
        keys: Sequence[RoleKey],
        authority: Any,
    ) -> int:
        """Create ``N.<name>.json`` for the first free N >= ``first_version``."""
        version = first_version
        for _ in range(_MAX_VERSION_SKIPS):
            metadata.signed.version = version
            self.sign_with(metadata, name, keys, authority)
            path = self.index.metadata_dir / paths.metadata_file(name, version)
            if _create_exclusive(path, metadata.to_bytes(serializer())):
                self._created.append(path)
                return version
            if name == "root":
                raise ConcurrentPublishError(
                    f"root version {version} appeared while this key rotation was running",
                    hint="run the rotation again on the new state",
                )
            version += 1
        raise PublishError(f"no free version for {name} after {_MAX_VERSION_SKIPS} tries")

    # ------------------------------------------------------------ commit

    def _check_unchanged(self) -> None:
        on_disk = read_timestamp_version(self.index.metadata_dir)
        if on_disk != self.base_timestamp_version:
            raise ConcurrentPublishError(
                f"the index changed while publishing (timestamp version {on_disk}, "
                f"expected {self.base_timestamp_version})",
                hint="another publisher wrote to the same folder; run again on the new state",
            )

    def abort(self) -> None:
        """Remove the versioned files this transaction created (never referenced)."""
        for path in reversed(self._created):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._created.clear()

    def _update_listings(self) -> None:
        """Every changed derivative role lists exactly its releases in its listing."""
        from cosgitops.publish.tufapi import TargetFile

        for name, metadata in self._dirty.items():
            if name in paths.RESERVED_ROLE_NAMES:
                continue
            versions = [
                parsed[1]
                for path in metadata.signed.targets
                if (parsed := paths.parse_release_target_path(path)) is not None
            ]
            data = listing_bytes(name, versions)
            target = TargetFile.from_data(listing_target_path(name), data, ["sha256"])
            current = metadata.signed.targets.get(target.path)
            if current is not None and (current.length, current.hashes) == (
                target.length,
                target.hashes,
            ):
                continue
            metadata.signed.targets[target.path] = target
            self._content[self.index.target_file_path(target)] = data

    def commit(self) -> CommitResult:
        from cosgitops.publish.tufapi import Metadata, MetaFile, Snapshot, Timestamp

        snapshot_md: Metadata[Snapshot]
        index = self.index
        self._update_listings()
        assert index.root is not None
        if not self.changed:
            return CommitResult(
                changed=False,
                timestamp_version=index.timestamp_version,
                snapshot_version=0 if index.snapshot is None else index.snapshot.signed.version,
                root_version=int(index.root.signed.version),
            )
        self._check_unchanged()
        try:
            content_files = []
            for path, data in self._content.items():
                if not (path.exists() and path.read_bytes() == data):
                    atomic_write_bytes(path, data)
                content_files.append(path)

            for root in self._new_roots:
                version = int(root.signed.version)
                path = index.metadata_dir / paths.metadata_file("root", version)
                if not _create_exclusive(path, root.to_bytes(serializer())):
                    raise ConcurrentPublishError(
                        f"root version {version} already exists",
                        hint="another key rotation ran at the same time; run again",
                    )
                self._created.append(path)

            written: dict[str, int] = {}
            # Children before parents is not needed for safety (nothing is referenced
            # until snapshot), but it keeps a crash's leftovers easy to read.
            order = sorted(
                self._dirty,
                key=lambda n: (n == "targets", n in paths.SHARD_ROLES, n),
            )
            for name in order:
                metadata = self._dirty[name]
                keys, authority = self._role_keys(name)
                first = 1 if name in self._fresh else int(metadata.signed.version) + 1
                metadata.signed.expires = self.expires(name)
                written[name] = self._write_versioned(name, metadata, first, keys, authority)

            if index.snapshot is not None and not (written or self._force_snapshot):
                # Only the timestamp changes (a refresh): devices keep their snapshot.
                snapshot_md = index.snapshot
                snapshot_version = int(snapshot_md.signed.version)
            else:
                if index.snapshot is None:
                    snapshot_md = Metadata(Snapshot(expires=self.expires("snapshot")))
                    snapshot_md.signed.meta = {}
                    snapshot_first = 1
                else:
                    snapshot_md = index.snapshot
                    snapshot_first = int(snapshot_md.signed.version) + 1
                snapshot = snapshot_md.signed
                for name, version in written.items():
                    snapshot.meta[f"{name}.json"] = MetaFile(version=version)
                snapshot.expires = self.expires("snapshot")
                snapshot_version = self._write_versioned(
                    "snapshot",
                    snapshot_md,
                    snapshot_first,
                    self.keyring.keys("snapshot"),
                    self.root,
                )

            self._check_unchanged()
            timestamp = Timestamp(
                version=self.base_timestamp_version + 1,
                expires=self.expires("timestamp"),
                snapshot_meta=MetaFile(version=snapshot_version),
            )
            timestamp_md: Metadata[Timestamp] = Metadata(timestamp)
            self.sign_with(timestamp_md, "timestamp", self.keyring.keys("timestamp"), self.root)
            atomic_write_bytes(
                index.metadata_dir / paths.metadata_file("timestamp"),
                timestamp_md.to_bytes(serializer()),
            )
        except BaseException:
            self.abort()
            raise
        index.snapshot = snapshot_md
        index.timestamp = timestamp_md
        for name in written:
            index._roles[name] = self._dirty[name]
        self._created.clear()
        return CommitResult(
            changed=True,
            timestamp_version=int(timestamp.version),
            snapshot_version=snapshot_version,
            root_version=int(index.root.signed.version),
            written_roles=written,
            content_files=content_files,
        )
