"""Moving images between stores, and reading an image's manifest and config.

Works across any pair of :class:`~cosgitops.oci.store.ImageStore` (layout to registry,
registry to registry, registry to layout). Blobs the destination has are skipped,
blobs in another repository of the same registry (or another layout) are mounted, the
rest are streamed through a verified temporary file, never held whole in memory.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import NotFoundError, RemoteDataError
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.oci.media import MANIFEST_TYPES
from cosgitops.oci.platform import select_platform
from cosgitops.oci.registry import RegistryStore
from cosgitops.oci.store import Descriptor, ImageStore, ManifestData
from cosgitops.progress import Progress

_MAX_INDEX_DEPTH = 4


def fetch_image_manifest(
    store: ImageStore,
    identifier: str,
    platform: str = "linux/amd64",
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[ManifestData, dict[str, Any]]:
    """The image manifest for ``platform`` (resolving an index) and its parsed config.

    Reads only manifests and the config blob, never layers.
    """
    manifest = store.get_manifest(identifier)
    if manifest.is_index:
        manifest = store.get_manifest(select_platform(manifest, platform).digest)
    if manifest.media_type not in MANIFEST_TYPES:
        raise RemoteDataError(
            f"{identifier} is a {manifest.media_type}, not an image manifest",
            hint="point at a container image, not a signature or other artifact",
        )
    return manifest, read_image_config(store, manifest, limits=limits)


def read_image_config(
    store: ImageStore, manifest: ManifestData, *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """The parsed config blob of an image manifest (size-limited, digest-checked)."""
    config_descriptor = manifest.children()[0]
    if config_descriptor.size > limits.config_max_bytes:
        raise RemoteDataError(
            f"image config {config_descriptor.digest} is {config_descriptor.size} bytes, over "
            f"the limit of {limits.config_max_bytes}"
        )
    data = store.read_blob(config_descriptor.digest, max_bytes=limits.config_max_bytes)
    try:
        config = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteDataError(f"image config {config_descriptor.digest} is not JSON") from exc
    if not isinstance(config, dict):
        raise RemoteDataError(f"image config {config_descriptor.digest} is not a JSON object")
    return config


def _same_registry(src: ImageStore, dst: ImageStore) -> bool:
    return (
        isinstance(src, RegistryStore)
        and isinstance(dst, RegistryStore)
        and src.base_url == dst.base_url
    )


def copy_blob(
    src: ImageStore,
    dst: ImageStore,
    descriptor: Descriptor,
    *,
    progress: Progress | None = None,
    work_dir: Path | None = None,
) -> str:
    """Make ``dst`` hold a blob of ``src``. Returns ``"present"``, ``"mounted"`` or
    ``"copied"``. The bytes are checked against the digest on the way."""
    digest = descriptor.digest
    if dst.has_blob(digest):
        dst.stats.blobs_skipped += 1
        return "present"
    if _same_registry(src, dst) and dst.mount_blob(digest, src.reference.repository):
        return "mounted"
    if (
        isinstance(src, OCILayoutStore)
        and isinstance(dst, OCILayoutStore)
        and dst.mount_blob(digest, str(src.path))
    ):
        return "mounted"
    if isinstance(src, OCILayoutStore):
        # put_blob hashes what it sends, so a tampered layout blob is refused.
        path = src.blob_path(digest)
        if not path.is_file():
            raise NotFoundError(f"blob {digest} is not in the OCI layout {src.path}")
        dst.put_blob(path, digest, size=descriptor.size, progress=progress)
        return "copied"
    with tempfile.TemporaryDirectory(prefix="cosgitops-blob-", dir=work_dir) as tmp:
        local = Path(tmp) / "blob"
        src.download_blob(digest, local, size=descriptor.size, progress=progress)
        dst.put_blob(local, digest, size=descriptor.size, progress=progress)
    return "copied"


def _copy_tree(
    src: ImageStore,
    dst: ImageStore,
    manifest: ManifestData,
    copy: Callable[[Descriptor], str],
    depth: int,
) -> None:
    if depth > _MAX_INDEX_DEPTH:
        raise RemoteDataError(f"image index {manifest.digest} nests deeper than {depth} levels")
    if not manifest.is_index:
        for blob in manifest.children():
            copy(blob)
        return
    for child in manifest.children():
        child_manifest = src.get_manifest(child.digest)
        _copy_tree(src, dst, child_manifest, copy, depth + 1)
        dst.put_manifest(child_manifest.data, child_manifest.media_type)


def copy_image(
    src: ImageStore,
    src_identifier: str,
    dst: ImageStore,
    *,
    tag: str | None = None,
    progress: Progress | None = None,
    include_referrers: bool = False,
    work_dir: Path | None = None,
) -> Descriptor:
    """Copy an image or image index (every platform) from ``src`` to ``dst``.

    The manifest bytes are copied unchanged, so the digest stays the same. With
    ``include_referrers`` the manifests that refer to it (signatures, attestations) come
    along. Returns the descriptor of the top manifest in ``dst``.
    """
    manifest = src.get_manifest(src_identifier)

    def copy(blob: Descriptor) -> str:
        return copy_blob(src, dst, blob, progress=progress, work_dir=work_dir)

    _copy_tree(src, dst, manifest, copy, 0)
    descriptor = dst.put_manifest(manifest.data, manifest.media_type, tag=tag)
    if include_referrers:
        for referrer in src.referrers(manifest.digest):
            if dst.resolve(referrer.digest) is None:
                copy_image(src, referrer.digest, dst, progress=progress, work_dir=work_dir)
    return descriptor
