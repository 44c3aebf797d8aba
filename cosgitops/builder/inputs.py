"""What a build reads: the derivative's files (as layer entries), the commit it comes
from, and the identity the image will carry. Shared by both builders and ``render``,
so the three agree on every file, mode, symlink and label."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cosgitops.builder.image import ImageIdentity, tag_for_version
from cosgitops.builder.layers import LayerEntry, content_entries, tree_entries
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import GitError
from cosgitops.model import Derivative, Repository

CLOUD_CONFIG_PATTERNS = ("*.yaml", "*.yml")
CLOUD_CONFIG_TARGET = "system/oem"
HEALTH_FILE = "usr/lib/cosgitops/health.json"


@dataclass(frozen=True)
class BuildInputs:
    derivative: Derivative
    repo_root: Path
    identity: ImageIdentity
    overlay: list[LayerEntry]
    cloud_config: list[LayerEntry]

    @property
    def epoch(self) -> int:
        return self.identity.epoch


def public_image_name(repository: Repository, derivative: str) -> str:
    """The image's name as configured, independent of where the checkout lives
    (``oci:.cosgitops/registry/NAME`` rather than an absolute path)."""
    return f"{repository.registry.rstrip('/')}/{derivative}"


def _is_local_path(url: str) -> bool:
    return url.startswith(("/", ".", "file:")) or ("://" not in url and ":" not in url)


def collect_inputs(
    repository: Repository,
    derivative: Derivative,
    *,
    image_repo: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> BuildInputs:
    """Read the commit metadata and list the files a build of ``derivative`` packs."""
    from cosgitops import gitrepo

    root = repository.root
    explicit_epoch = bool(os.environ.get("SOURCE_DATE_EPOCH"))
    try:
        commit = gitrepo.commit_info(root)
        revision, source, commit_time = commit.sha, commit.source_url, commit.time
    except GitError:
        if not explicit_epoch:
            raise
        revision, source, commit_time = "", None, 0
    # SOURCE_DATE_EPOCH when set (it never asks git then), else the HEAD commit time
    epoch = gitrepo.source_date_epoch(root) if explicit_epoch else commit_time
    if source and _is_local_path(source):
        # A clone's "origin" may be a folder on the build machine: meaningless to anyone
        # else, and it would make the digest depend on where the clone came from.
        source = None
    identity = ImageIdentity(
        repo=image_repo or public_image_name(repository, derivative.name),
        version=derivative.version,
        revision=revision,
        epoch=epoch,
        title=derivative.name,
        description=derivative.description,
        source=source,
        labels=dict(derivative.labels),
        os_release=dict(derivative.os_release),
        base_name=None if derivative.base == "scratch" else derivative.base,
    )
    overlay = tree_entries(derivative.overlay_dir, boundary=root, limits=limits)
    if derivative.health_checks:
        overlay = [*overlay, *content_entries({HEALTH_FILE: health_file_bytes(derivative)})]
    cloud_config = tree_entries(
        derivative.cloud_config_dir,
        prefix=CLOUD_CONFIG_TARGET,
        boundary=root,
        limits=limits,
        include=CLOUD_CONFIG_PATTERNS,
    )
    return BuildInputs(derivative, root, identity, overlay, cloud_config)


def health_file_bytes(derivative: Derivative) -> bytes:
    """``/usr/lib/cosgitops/health.json``: the derivative's boot health checks, which the
    device agent runs with its own at every boot of a pending release."""
    data = {"checks": [check.to_json() for check in derivative.health_checks]}
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


def version_tag(derivative: Derivative) -> str:
    return tag_for_version(derivative.version)
