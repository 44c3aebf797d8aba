"""The interface every image store implements (an OCI layout on disk, a registry).

A store is bound to one repository. Everything read by digest is verified against
that digest before it is returned; a mismatch raises :class:`IntegrityError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import RemoteDataError
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.reference import Reference
from cosgitops.progress import Progress


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = None
    artifact_type: str | None = None
    platform: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform:
            out["platform"] = dict(self.platform)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, data: Any) -> Descriptor:
        try:
            return cls(
                media_type=str(data["mediaType"]),
                digest=str(data["digest"]),
                size=int(data["size"]),
                annotations=data.get("annotations"),
                artifact_type=data.get("artifactType"),
                platform=data.get("platform"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RemoteDataError(f"malformed OCI descriptor: {exc}") from exc


@dataclass(frozen=True)
class ManifestData:
    """A manifest or index exactly as stored: the bytes are what the digest covers."""

    data: bytes
    media_type: str
    digest: str

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str) -> ManifestData:
        return cls(data, media_type, sha256_digest(data))

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RemoteDataError(f"manifest {self.digest} is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise RemoteDataError(f"manifest {self.digest} is not a JSON object")
        return value

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))


@dataclass
class TransferStats:
    """What a store moved over the wire (or disk); benchmarks and tests read this."""

    requests: int = 0
    bytes_downloaded: int = 0
    bytes_uploaded: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0


@dataclass(frozen=True)
class StoreOptions:
    """How to reach a store. ``insecure`` (plain HTTP) is honoured only for loopback hosts."""

    insecure: bool = False
    ca_file: Path | None = None
    docker_config_dir: Path | None = None
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)


class ImageStore(Protocol):
    reference: Reference  # the repository; tag and digest are None
    stats: TransferStats

    def get_manifest(self, identifier: str) -> ManifestData:
        """Manifest or index by tag or digest; verified against the digest when given one."""
        ...

    def resolve(self, identifier: str) -> Descriptor | None:
        """The descriptor a tag or digest points to, or None if absent."""
        ...

    def put_manifest(
        self, data: bytes, media_type: str, *, tag: str | None = None
    ) -> Descriptor: ...

    def has_blob(self, digest: str) -> bool: ...

    def read_blob(self, digest: str, *, max_bytes: int) -> bytes:
        """A small blob (config, signature payload) in memory, verified."""
        ...

    def download_blob(
        self,
        digest: str,
        dest: Path,
        *,
        size: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Stream a blob to ``dest``, verified, atomically; return bytes transferred.

        A partial download left at ``dest`` + ``.part`` is resumed where the store can
        (HTTP Range). Nothing appears at ``dest`` unless the digest matched.
        """
        ...

    def put_blob(
        self,
        source: bytes | Path,
        digest: str,
        *,
        size: int,
        progress: Progress | None = None,
    ) -> bool:
        """Upload unless present; True if bytes were sent."""
        ...

    def mount_blob(self, digest: str, source_repository: str) -> bool:
        """Cross-repository mount (registries); False when unsupported or failed."""
        ...

    def list_tags(self) -> list[str]: ...

    def referrers(self, digest: str, *, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest`` (OCI 1.1 referrers API or its tag-schema
        fallback ``sha256-<hex>``)."""
        ...
