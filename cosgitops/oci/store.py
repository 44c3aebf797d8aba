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
from cosgitops.oci.media import INDEX_TYPES, OCI_INDEX, OCI_MANIFEST
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

    @property
    def is_index(self) -> bool:
        """An OCI image index or a Docker manifest list (points at other manifests)."""
        return self.media_type in INDEX_TYPES

    def subject(self) -> str | None:
        """The digest in the manifest's ``subject`` (what it refers to), if any."""
        subject = self.json().get("subject")
        if subject is None:
            return None
        return Descriptor.from_json(subject).digest

    def children(self) -> list[Descriptor]:
        """What this manifest points at: the child manifests of an index, or the config
        and layers of an image manifest (config first)."""
        value = self.json()
        try:
            if self.is_index:
                return [Descriptor.from_json(item) for item in value.get("manifests") or []]
            items = [value["config"], *(value.get("layers") or [])]
        except (KeyError, TypeError) as exc:
            raise RemoteDataError(f"manifest {self.digest} has no config: {exc}") from exc
        return [Descriptor.from_json(item) for item in items]

    def referrer_descriptor(self) -> Descriptor:
        """How this manifest is listed among its subject's referrers (OCI 1.1): its
        ``artifactType`` (or config media type) and its annotations."""
        value = self.json()
        artifact_type = value.get("artifactType")
        if artifact_type is None and isinstance(value.get("config"), dict):
            artifact_type = value["config"].get("mediaType")
        annotations = value.get("annotations")
        return Descriptor(
            self.media_type,
            self.digest,
            len(self.data),
            annotations=dict(annotations) if isinstance(annotations, dict) else None,
            artifact_type=str(artifact_type) if artifact_type else None,
        )


def manifest_media_type(data: bytes) -> str:
    """The media type a manifest declares, or the OCI type its shape implies."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteDataError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RemoteDataError("manifest is not a JSON object")
    declared = value.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return OCI_INDEX if "manifests" in value else OCI_MANIFEST


def referrers_tag(digest: str) -> str:
    """The tag-schema fallback tag that holds the referrers of ``digest``: ``sha256-<hex>``."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}-{hex_part}"


def filter_referrers(descriptors: list[Descriptor], artifact_type: str | None) -> list[Descriptor]:
    if artifact_type is None:
        return descriptors
    return [d for d in descriptors if d.artifact_type == artifact_type]


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
