"""The release index: a TUF repository of signed releases, channels and Elemental export.

Public API (names here load their module on first use, so importing the package, or the
pure :mod:`cosgitops.publish.paths`, never imports tuf)::

    publish_releases(repository, manifests, *, now=None, progress=None) -> PublishResult
    refresh(repository, *, now=None, force=False) -> RefreshResult
    yank(repository, derivative, version, *, reason) -> YankResult
    rotate_key(repository, role, new_key_source=None) -> RotationResult
    open_index(public_dir) -> IndexView            (read back: derivatives, releases, manifests)
    collect_release(repository, derivative, store=None) -> ReleaseManifest
    release_target_path(derivative, version) / role_for(derivative)   (cosgitops.publish.paths)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "publish_releases": "cosgitops.publish.publisher",
    "refresh": "cosgitops.publish.publisher",
    "yank": "cosgitops.publish.publisher",
    "rotate_key": "cosgitops.publish.publisher",
    "open_index": "cosgitops.publish.reader",
    "PublishResult": "cosgitops.publish.publisher",
    "collect_release": "cosgitops.publish.collect",
    "collect_releases": "cosgitops.publish.collect",
    "release_target_path": "cosgitops.publish.paths",
    "role_for": "cosgitops.publish.paths",
}

__all__ = [
    "PublishResult",
    "collect_release",
    "collect_releases",
    "open_index",
    "publish_releases",
    "refresh",
    "release_target_path",
    "role_for",
    "rotate_key",
    "yank",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cosgitops.publish' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
