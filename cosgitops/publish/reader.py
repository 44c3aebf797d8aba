"""Reading a published index folder back (the publisher's own view, for tools, tests
and benchmarks; devices read through a TUF client instead)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops import model
from cosgitops.errors import NotFoundError, RemoteDataError
from cosgitops.publish import paths
from cosgitops.publish.releases import ReleaseInfo
from cosgitops.publish.tufrepo import Index, IndexTransaction, release_targets


def manifest_of(source: IndexTransaction | Index, target: Any) -> model.ReleaseManifest:
    """The release manifest a target lists, checked against the target's hash."""
    data = source.read_target(target)
    try:
        return model.ReleaseManifest.from_json(json.loads(data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteDataError(f"release manifest {target.path} is not JSON: {exc}") from exc


def derivative_manifests(
    source: IndexTransaction | Index, derivative: str
) -> list[model.ReleaseManifest]:
    role = source.derivative_role(derivative)
    if role is None:
        return []
    return [manifest_of(source, target) for target in release_targets(role)]


@dataclass
class IndexView:
    index: Index

    @property
    def timestamp_version(self) -> int:
        return self.index.timestamp_version

    @property
    def snapshot_version(self) -> int:
        return 0 if self.index.snapshot is None else int(self.index.snapshot.signed.version)

    @property
    def root_version(self) -> int:
        return 0 if self.index.root is None else int(self.index.root.signed.version)

    def derivatives(self) -> list[str]:
        return self.index.derivatives()

    def releases(self, derivative: str) -> list[ReleaseInfo]:
        """What each release's target ``custom`` says, newest version first."""
        role = self.index.derivative_role(derivative)
        if role is None:
            return []
        infos = [ReleaseInfo.from_custom(target.custom) for target in release_targets(role)]
        return sorted(infos, key=lambda info: info.parsed_version, reverse=True)

    def manifests(self, derivative: str) -> list[model.ReleaseManifest]:
        return derivative_manifests(self.index, derivative)

    def manifest(self, derivative: str, version: str) -> model.ReleaseManifest:
        role = self.index.derivative_role(derivative)
        target = None
        if role is not None:
            target = role.signed.targets.get(paths.release_target_path(derivative, version))
        if target is None:
            raise NotFoundError(f"{derivative} {version} is not in the index")
        return manifest_of(self.index, target)


def open_index(public_dir: Path) -> IndexView:
    """Open a published index folder; :class:`NotFoundError` if there is none."""
    index = Index.open(public_dir)
    index.require()
    return IndexView(index)
