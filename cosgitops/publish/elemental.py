"""Elemental channel export: the releases of one derivative on one channel as the JSON
list a ``ManagedOSVersionChannel`` of type ``custom`` syncs (the shape of
rancher/elemental-channels files), so elemental-operator fleets consume the same
releases as cosgitops devices.

Each entry::

    {"metadata": {"name": "<derivative>-v<version>"},
     "spec": {"version": "v<version>", "type": "container", "minVersion": "v1.2.0",
              "metadata": {"upgradeImage": "REPO@sha256:...", "displayName": "...",
                           "platforms": ["linux/x86_64"], "created": 1732723935}}}

``minVersion`` (only when ``upgradeFrom`` has a lower bound) is the bound's version.
Platforms use Elemental's architecture names (``x86_64``, ``aarch64``). Yanked
releases are left out; newest first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cosgitops import model
from cosgitops.fsutil import atomic_write_bytes
from cosgitops.publish import paths
from cosgitops.publish.releases import channel_releases, channels_of, parse_time
from cosgitops.versioning import parse_range

# OCI architecture names -> the names Elemental channels and elemental-operator use.
_ELEMENTAL_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
_K8S_NAME_INVALID = re.compile(r"[^a-z0-9.-]+")


def elemental_platform(platform: str) -> str:
    os_name, _, rest = platform.partition("/")
    arch, slash, variant = rest.partition("/")
    arch = _ELEMENTAL_ARCH.get(arch, arch)
    return f"{os_name}/{arch}{slash}{variant}" if rest else platform


def version_name(derivative: str, version: str) -> str:
    """A Kubernetes object name (RFC 1123 subdomain) for one release."""
    name = _K8S_NAME_INVALID.sub("-", f"{derivative}-v{version}".lower())
    return name.strip("-.")[:253].rstrip("-.")


def channel_entry(manifest: model.ReleaseManifest) -> dict[str, Any]:
    created = int(parse_time(manifest.created).timestamp())
    spec: dict[str, Any] = {"version": f"v{manifest.version}", "type": "container"}
    if manifest.upgrade_from is not None:
        lower = parse_range(manifest.upgrade_from).lower_bound()
        if lower is not None:
            spec["minVersion"] = f"v{lower}"
    spec["metadata"] = {
        "upgradeImage": manifest.image,
        "displayName": manifest.display_name or manifest.derivative,
        "platforms": [elemental_platform(image.platform) for image in manifest.platforms],
        "created": created,
    }
    return {"metadata": {"name": version_name(manifest.derivative, manifest.version)}, "spec": spec}


def channel_document(manifests: Iterable[model.ReleaseManifest], channel: str) -> list[Any]:
    return [channel_entry(manifest) for manifest in channel_releases(manifests, channel)]


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
