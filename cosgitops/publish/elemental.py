"""Elemental channel export: the releases of one derivative on one channel as the JSON
list a ``ManagedOSVersionChannel`` syncs (the shape of rancher/elemental-channels
files), so elemental-operator fleets consume the same releases as cosgitops devices.

Each entry::

    {"metadata": {"name": "<derivative>-v<version>"},
     "spec": {"version": "v<version>", "type": "container", "minVersion": "v1.2.0",
              "metadata": {"upgradeImage": "REPO:TAG", "displayName": "...",
                           "platforms": ["linux/x86_64"], "created": 1732723935,
                           "digest": "sha256:..."}}}

What elemental-operator does with it decides the form. It splits ``upgradeImage`` at the
first ``:`` after the registry host into the system-upgrade-controller plan's image and
*version*, which labels Kubernetes objects: so ``upgradeImage`` is ``REPO:TAG`` (a
``REPO@sha256:…`` would become the image ``REPO@sha256`` and a 64-character version) with
TAG the version tag cosgitops pushes the image under, which must be a label value (at
most 63 characters). The object name (``metadata.name``) is also a label value on the
``ManagedOSImage`` that uses it. Every metadata key reaches the upgrade job as an
environment variable (``METADATA_DIGEST`` for ``digest``), and the digest is what the
release signed.

Omitted: yanked releases, images no cluster can pull (an OCI layout on the build machine,
``oci:/…``) and releases whose version tag is no label value (:func:`channel_problem`
says why). ``minVersion`` (only when ``upgradeFrom`` has a lower bound) is the bound's
version; platforms use Elemental's architecture names (``x86_64``, ``aarch64``); newest
first.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cosgitops import model
from cosgitops.builder.image import tag_for_version
from cosgitops.fsutil import atomic_write_bytes
from cosgitops.publish import paths
from cosgitops.publish.releases import channel_releases, channels_of, parse_time
from cosgitops.versioning import parse_range

# OCI architecture names -> the names Elemental channels and elemental-operator use.
_ELEMENTAL_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
_K8S_NAME_INVALID = re.compile(r"[^a-z0-9.-]+")
# Kubernetes label values: at most 63 characters, alphanumeric at both ends.
K8S_LABEL_MAX = 63
_K8S_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_NAME_HASH_CHARS = 8


def elemental_platform(platform: str) -> str:
    os_name, _, rest = platform.partition("/")
    arch, slash, variant = rest.partition("/")
    arch = _ELEMENTAL_ARCH.get(arch, arch)
    return f"{os_name}/{arch}{slash}{variant}" if rest else platform


def is_label_value(text: str) -> bool:
    return len(text) <= K8S_LABEL_MAX and bool(_K8S_LABEL_VALUE.match(text))


def version_name(derivative: str, version: str) -> str:
    """The ``ManagedOSVersion`` name of one release: ``<derivative>-v<version>`` when that
    is already a lowercase DNS label of at most 63 characters. Otherwise it is made one
    and ends in 8 hex digits of the exact name's hash, so that versions differing only in
    case, ``+`` or length still get different objects."""
    exact = f"{derivative}-v{version}"
    name = _K8S_NAME_INVALID.sub("-", exact.lower()).strip("-.")
    if name == exact and len(name) <= K8S_LABEL_MAX:
        return name
    suffix = hashlib.sha256(exact.encode("utf-8")).hexdigest()[:_NAME_HASH_CHARS]
    keep = K8S_LABEL_MAX - len(suffix) - 1
    return f"{name[:keep].rstrip('-.')}-{suffix}"


def upgrade_image(manifest: model.ReleaseManifest) -> str:
    """``REPO:TAG``: the release's repository and the tag its version was pushed under."""
    repository = manifest.image.rsplit("@", 1)[0]
    return f"{repository}:{tag_for_version(manifest.version)}"


def channel_problem(manifest: model.ReleaseManifest) -> str | None:
    """Why elemental-operator could not use this release (None when it can)."""
    repository = manifest.image.rsplit("@", 1)[0]
    if repository.startswith("oci:"):
        return (
            f"its image {repository} is an OCI layout on the build machine, which no "
            "cluster can pull"
        )
    tag = tag_for_version(manifest.version)
    if not is_label_value(tag):
        return (
            f"its version tag {tag!r} is not a Kubernetes label value (at most "
            f"{K8S_LABEL_MAX} characters, alphanumeric at both ends), which "
            "elemental-operator needs it to be"
        )
    return None


def channel_entry(manifest: model.ReleaseManifest) -> dict[str, Any] | None:
    """The channel entry of one release, or None when :func:`channel_problem` finds one."""
    if channel_problem(manifest) is not None:
        return None
    created = int(parse_time(manifest.created).timestamp())
    spec: dict[str, Any] = {"version": f"v{manifest.version}", "type": "container"}
    if manifest.upgrade_from is not None:
        lower = parse_range(manifest.upgrade_from).lower_bound()
        if lower is not None:
            spec["minVersion"] = f"v{lower}"
    spec["metadata"] = {
        "upgradeImage": upgrade_image(manifest),
        "displayName": manifest.display_name or manifest.derivative,
        "platforms": [elemental_platform(image.platform) for image in manifest.platforms],
        "created": created,
        "digest": manifest.digest,
    }
    return {"metadata": {"name": version_name(manifest.derivative, manifest.version)}, "spec": spec}


def channel_document(manifests: Iterable[model.ReleaseManifest], channel: str) -> list[Any]:
    entries = (channel_entry(manifest) for manifest in channel_releases(manifests, channel))
    return [entry for entry in entries if entry is not None]


def channel_warnings(manifests: Iterable[model.ReleaseManifest]) -> list[str]:
    """One line per release left out of the channel files for a reason its publisher can
    fix. Local OCI layouts are left out without a word: no cluster was meant to pull
    them (docs/publish.md says so)."""
    warnings = []
    for manifest in manifests:
        problem = channel_problem(manifest)
        if problem is not None and not manifest.image.startswith("oci:"):
            warnings.append(
                f"{manifest.derivative} {manifest.version} is left out of the Elemental "
                f"channel files: {problem}"
            )
    return warnings


def channel_bytes(manifests: Iterable[model.ReleaseManifest], channel: str) -> bytes:
    return (json.dumps(channel_document(manifests, channel), indent=2) + "\n").encode("utf-8")


def write_channel_files(
    public_dir: Path, derivative: str, manifests: Sequence[model.ReleaseManifest]
) -> list[Path]:
    """Write ``channels/<derivative>/<channel>.json`` for every channel the derivative's
    releases were ever in; unchanged files are left alone."""
    written = []
    for channel in channels_of(manifests):
        path = public_dir / paths.channel_file(derivative, channel)
        data = channel_bytes(manifests, channel)
        try:
            if path.read_bytes() == data:
                written.append(path)
                continue
        except FileNotFoundError:
            pass
        atomic_write_bytes(path, data)
        written.append(path)
    return written
