"""Image metadata as pure functions: platforms, ``/etc/os-release``, annotations and
labels, the image config, manifest and index.

Nothing here does I/O, so the exact bytes of every document (and therefore every
digest) follow from the inputs alone. JSON is serialised by
:func:`cosgitops.jsonbytes.image_json` (sorted keys, no whitespace, a rule that never
changes) for the same reason.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cosgitops.errors import BuildError, NotFoundError, RemoteDataError
from cosgitops.oci.media import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from cosgitops.oci.platform import Platform
from cosgitops.oci.platform import select_platform as oci_select_platform
from cosgitops.oci.store import Descriptor

ANNOTATION_PREFIX = "org.opencontainers.image."
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_DESCRIPTION = "org.opencontainers.image.description"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"
OS_RELEASE_LABEL = "cosgitops.os-release"
"""Config label carrying the image's full ``/etc/os-release``, so that an image built on
top of this one can extend it without downloading any layer."""

OS_RELEASE_PATH = "etc/os-release"
IMAGE_KEYS = ("IMAGE_REPO", "IMAGE_TAG", "IMAGE", "TIMESTAMP")
_OS_RELEASE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:/+,@=-]*$")


def rfc3339(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def os_release_timestamp(epoch: int) -> str:
    """cOS/Elemental's ``TIMESTAMP`` format (``date +%Y%m%d%H%M%S``, UTC)."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y%m%d%H%M%S")


def tag_for_version(version: str) -> str:
    """A registry tag for a SemVer version (``+`` is not allowed in tags)."""
    return version.replace("+", "_")


# ---------------------------------------------------------------- platforms


def select_platform(index: Mapping[str, Any], platform: Platform) -> Descriptor:
    """The base index's manifest for ``platform``; a missing one is a build error."""
    try:
        return oci_select_platform(index, platform)
    except NotFoundError as exc:
        raise BuildError(
            f"the base image has no {platform} variant ({exc.message.split('(', 1)[-1]}",
            hint="pick a base built for that platform, or change spec.platforms",
        ) from exc


# ---------------------------------------------------------------- os-release


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if value[0] == "'":
            return inner
        return re.sub(r"\\([\\\"$`])", r"\1", inner)
    return value


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=VALUE lines (os-release(5)); comments, blanks and malformed lines are skipped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, _, value = stripped.partition("=")
        if _OS_RELEASE_KEY.match(key):
            values[key] = _unquote(value)
    return values


def format_os_release_value(value: str) -> str:
    if value and _SAFE_VALUE.match(value):
        return value
    escaped = re.sub(r"([\\\"$`])", r"\\\1", value.replace("\n", " "))
    return f'"{escaped}"'


def merge_os_release(base: str | None, additions: Mapping[str, str]) -> str:
    """``base`` with ``additions`` applied: changed keys keep their line, new keys are
    appended in the order given. Comments and blank lines of the base survive."""
    for key in additions:
        if not _OS_RELEASE_KEY.match(key):
            raise BuildError(
                f"os-release key {key!r} is invalid",
                hint="os-release keys are letters, digits and underscores",
            )
    lines: list[str] = []
    seen: set[str] = set()
    for line in (base or "").splitlines():
        key, sep, _ = line.strip().partition("=")
        if sep and key in additions:
            if key not in seen:
                lines.append(f"{key}={format_os_release_value(additions[key])}")
                seen.add(key)
            continue
        lines.append(line)
    lines.extend(
        f"{key}={format_os_release_value(value)}"
        for key, value in additions.items()
        if key not in seen
    )
    return "\n".join(lines).strip("\n") + "\n"


# ---------------------------------------------------------------- identity


@dataclass(frozen=True)
class ImageIdentity:
    """What an image says about itself (annotations, labels, os-release).

    ``repo`` is the image's public name as configured (``ghcr.io/acme/fleet/edge`` or
    ``oci:.cosgitops/registry/edge``), never a path of the build machine, so the
    digest does not depend on where the repository is checked out.
    """

    repo: str
    version: str
    revision: str
    epoch: int
    title: str
    description: str = ""
    source: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    os_release: Mapping[str, str] = field(default_factory=dict)
    base_name: str | None = None
    base_digest: str | None = None

    @property
    def tag(self) -> str:
        return tag_for_version(self.version)

    @property
    def created(self) -> str:
        return rfc3339(self.epoch)

    def annotations(self) -> dict[str, str]:
        out = dict(self.labels)
        out[ANNOTATION_VERSION] = self.version
        out[ANNOTATION_REVISION] = self.revision
        out[ANNOTATION_CREATED] = self.created
        out[ANNOTATION_TITLE] = self.title
        if self.description:
            out[ANNOTATION_DESCRIPTION] = self.description
        if self.source:
            out[ANNOTATION_SOURCE] = self.source
        if self.base_name and self.base_digest:
            out[ANNOTATION_BASE_NAME] = self.base_name
            out[ANNOTATION_BASE_DIGEST] = self.base_digest
        return out

    def os_release_additions(self) -> dict[str, str]:
        """The derivative's ``osRelease`` keys, then the image keys (which always win:
        cOS/Elemental upgrade tooling trusts them to name the running image)."""
        additions = {k: v for k, v in self.os_release.items() if k not in IMAGE_KEYS}
        additions["IMAGE_REPO"] = self.repo
        additions["IMAGE_TAG"] = self.tag
        additions["IMAGE"] = f"{self.repo}:{self.tag}"
        additions["TIMESTAMP"] = os_release_timestamp(self.epoch)
        return additions

    def fresh_os_release(self) -> str:
        """The os-release of an image whose base tells us none."""
        pretty = f"{self.description or self.title} {self.version}"
        return merge_os_release(
            None,
            {
                "NAME": self.title,
                "ID": self.title,
                "VERSION": self.version,
                "VERSION_ID": self.version,
                "PRETTY_NAME": pretty,
            },
        )

    def os_release_text(self, base_os_release: str | None) -> str:
        return merge_os_release(
            base_os_release if base_os_release is not None else self.fresh_os_release(),
            self.os_release_additions(),
        )


# ---------------------------------------------------------------- documents


def encode_os_release_label(text: str) -> str:
    """The label value for a Dockerfile ``LABEL``, which cannot hold a newline: newlines
    become the two characters ``\\n`` (os-release values never contain a line break)."""
    return text.replace("\n", "\\n")


def base_os_release(config: Mapping[str, Any] | None) -> str | None:
    """The os-release a base image's config label carries, or None (empty means none)."""
    if not config:
        return None
    labels = (config.get("config") or {}).get("Labels") or {}
    value = labels.get(OS_RELEASE_LABEL)
    if not isinstance(value, str) or not value.strip():
        return None
    if "\n" not in value:
        value = value.replace("\\n", "\n")
    return value


def base_diff_ids(config: Mapping[str, Any] | None) -> list[str]:
    if not config:
        return []
    rootfs = config.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise RemoteDataError("the base image config has no valid rootfs.diff_ids")
    return list(diff_ids)


@dataclass(frozen=True)
class HistoryStep:
    created_by: str
    comment: str = ""


def image_config(
    base: Mapping[str, Any] | None,
    *,
    platform: Platform,
    diff_ids: Sequence[str],
    history: Sequence[HistoryStep],
    labels: Mapping[str, str],
    epoch: int,
) -> dict[str, Any]:
    """The base config extended by our layers, labels and history (or a fresh one)."""
    created = rfc3339(epoch)
    config: dict[str, Any] = json.loads(json.dumps(base)) if base else {}
    config["architecture"] = config.get("architecture") or platform.architecture
    config["os"] = config.get("os") or platform.os
    if platform.variant and not config.get("variant"):
        config["variant"] = platform.variant
    config["created"] = created
    runtime = dict(config.get("config") or {})
    merged_labels = dict(runtime.get("Labels") or {})
    merged_labels.update(labels)
    runtime["Labels"] = merged_labels
    config["config"] = runtime
    previous = base_diff_ids(base)
    config["rootfs"] = {"type": "layers", "diff_ids": [*previous, *diff_ids]}
    old_history = list(config.get("history") or [])
    layered = [h for h in old_history if isinstance(h, dict) and not h.get("empty_layer")]
    # A history that does not line up with the layers confuses docker; leave it alone then.
    if len(layered) == len(previous):
        config["history"] = [
            *old_history,
            *(
                {"created": created, "created_by": step.created_by, "comment": step.comment}
                for step in history
            ),
        ]
    return config


def image_manifest(
    config: Descriptor, layers: Sequence[Descriptor], annotations: Mapping[str, str]
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor(OCI_CONFIG, config.digest, config.size).to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return manifest


def image_index(manifests: Sequence[Descriptor], annotations: Mapping[str, str]) -> dict[str, Any]:
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [m.to_json() for m in manifests],
    }
    if annotations:
        index["annotations"] = dict(annotations)
    return index
