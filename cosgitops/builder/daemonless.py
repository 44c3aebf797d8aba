"""The daemonless builder: base image + reproducible layers, written as an OCI image.

It reads only the base's manifest (or index) and config, never its layers: the base
layers are referenced by digest, and reach the target by a cross-repository mount
(same registry, or hard links between OCI layouts), or are copied store to store only
when the target lacks them. The cost of a build therefore grows with the change, not
with the image.

Layers added, in this order, each only when it has content: the overlay (to ``/``),
the cloud-config files (to ``/system/oem``), ``/etc/os-release``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cosgitops.builder.image import (
    OS_RELEASE_LABEL,
    OS_RELEASE_PATH,
    HistoryStep,
    base_os_release,
    image_config,
    image_index,
    image_manifest,
    select_platform,
)
from cosgitops.builder.inputs import BuildInputs
from cosgitops.builder.layers import LAYER_EPOCH, LayerBlob, content_entries, write_layer
from cosgitops.builder.result import BuildResult, model_layers
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import BuildError, RemoteDataError
from cosgitops.jsonbytes import image_json
from cosgitops.model import PlatformImage
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.media import (
    DOCKER_LAYER_GZIP,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from cosgitops.oci.platform import Platform
from cosgitops.oci.reference import Reference, parse_reference
from cosgitops.oci.store import Descriptor, ImageStore, ManifestData, StoreOptions
from cosgitops.oci.transfer import read_image_config
from cosgitops.progress import NULL_PROGRESS, Progress

# Docker's gzip layer is byte-for-byte an OCI gzip layer; OCI manifests name it so.
_LAYER_TYPE_MAP = {DOCKER_LAYER_GZIP: OCI_LAYER_GZIP}


@dataclass(frozen=True)
class PlatformBase:
    """One platform of the base: its config (None for scratch) and layer descriptors."""

    platform: Platform
    config: dict[str, Any] | None
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ResolvedBase:
    reference: Reference | None  # None for scratch
    digest: str | None  # the manifest or index digest the build used
    store: ImageStore | None
    platforms: tuple[PlatformBase, ...]

    @property
    def pinned(self) -> str | None:
        if self.reference is None or self.digest is None:
            return None
        return f"{self.reference.name}@{self.digest}"


def _base_layers(manifest: ManifestData) -> tuple[Descriptor, ...]:
    layers = []
    for item in manifest.json().get("layers") or []:
        descriptor = Descriptor.from_json(item)
        layers.append(
            Descriptor(
                _LAYER_TYPE_MAP.get(descriptor.media_type, descriptor.media_type),
                descriptor.digest,
                descriptor.size,
                annotations=descriptor.annotations,
            )
        )
    return tuple(layers)


def _check_platform(config: dict[str, Any], platform: Platform, base: str) -> None:
    actual = Platform(
        str(config.get("os") or "linux"),
        str(config.get("architecture") or ""),
        config.get("variant"),
    )
    if not platform.matches(actual):
        raise BuildError(
            f"the base {base} is a {actual} image, not {platform}",
            hint="set spec.platforms to the base's platform, or pick a multi-platform base",
        )


def resolve_base(
    base: str,
    platforms: Sequence[Platform],
    *,
    options: StoreOptions,
    limits: Limits = DEFAULT_LIMITS,
) -> ResolvedBase:
    """Fetch the base's manifest(s) and config(s) — and nothing else."""
    if base == "scratch":
        return ResolvedBase(None, None, None, tuple(PlatformBase(p, None, ()) for p in platforms))
    from cosgitops.oci import open_store

    reference = parse_reference(base)
    store = open_store(reference, options)
    top = store.get_manifest(reference.identifier)
    resolved: list[PlatformBase] = []
    if top.media_type in INDEX_TYPES or top.is_index:
        index = top.json()
        for platform in platforms:
            child = select_platform(index, platform)
            manifest = store.get_manifest(child.digest)
            if manifest.media_type not in MANIFEST_TYPES:
                raise RemoteDataError(f"{base}: {child.digest} for {platform} is not a manifest")
            config = read_image_config(store, manifest, limits=limits)
            resolved.append(PlatformBase(platform, config, _base_layers(manifest)))
    elif top.media_type in MANIFEST_TYPES:
        if len(platforms) > 1:
            raise BuildError(
                f"the base {base} is a single-platform image, but "
                f"{', '.join(map(str, platforms))} were asked for",
                hint="use a multi-platform base (an image index) or list one platform",
            )
        config = read_image_config(store, top, limits=limits)
        _check_platform(config, platforms[0], base)
        resolved.append(PlatformBase(platforms[0], config, _base_layers(top)))
    else:
        raise RemoteDataError(f"{base} is a {top.media_type}, not an image")
    return ResolvedBase(reference, top.digest, store, tuple(resolved))


def transfer_base_layers(
    base: ResolvedBase,
    target: ImageStore,
    *,
    work_dir: Path,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, int]:
    """Make every base layer available in ``target``: present blobs are skipped, blobs
    the target can reach are mounted (same registry, or hard links between layouts),
    only the rest is copied. Returns how many layers went which way."""
    from cosgitops.oci.transfer import copy_blob

    outcome: dict[str, int] = {}
    if base.store is None:
        return outcome
    layers = {
        layer.digest: layer for platform in base.platforms for layer in platform.layers
    }.values()
    for layer in layers:
        way = copy_blob(base.store, target, layer, progress=progress, work_dir=work_dir)
        outcome[way] = outcome.get(way, 0) + 1
    return outcome


@dataclass(frozen=True)
class _PlatformPlan:
    platform: Platform
    manifest: bytes
    config: bytes
    layers: tuple[Descriptor, ...]  # all, base first
    new_layers: tuple[LayerBlob, ...]


def _plan_platform(
    inputs: BuildInputs,
    platform_base: PlatformBase,
    shared_layers: list[tuple[LayerBlob, HistoryStep]],
    work_dir: Path,
) -> _PlatformPlan:
    identity = inputs.identity
    os_release = identity.os_release_text(base_os_release(platform_base.config))
    os_release_layer = write_layer(
        content_entries({OS_RELEASE_PATH: os_release.encode()}), work_dir, LAYER_EPOCH
    )
    added = [
        *shared_layers,
        (os_release_layer, HistoryStep("cosgitops: /etc/os-release", "os-release additions")),
    ]
    labels = {**identity.annotations(), OS_RELEASE_LABEL: os_release}
    config = image_config(
        platform_base.config,
        platform=platform_base.platform,
        diff_ids=[blob.diff_id for blob, _ in added],
        history=[step for _, step in added],
        labels=labels,
        epoch=inputs.epoch,
    )
    config_bytes = image_json(config)
    layers = (*platform_base.layers, *(blob.descriptor for blob, _ in added))
    manifest = image_manifest(
        Descriptor(OCI_CONFIG, sha256_digest(config_bytes), len(config_bytes)),
        layers,
        identity.annotations(),
    )
    return _PlatformPlan(
        platform_base.platform,
        image_json(manifest),
        config_bytes,
        layers,
        tuple(blob for blob, _ in added),
    )


def build_image(
    inputs: BuildInputs,
    target: ImageStore,
    *,
    options: StoreOptions | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress = NULL_PROGRESS,
) -> BuildResult:
    """Build ``inputs`` onto its base and store the image in ``target``, tagged with the
    version. Several platforms give an OCI image index, one manifest per platform."""
    options = options or StoreOptions(limits=limits)
    derivative = inputs.derivative
    platforms = [Platform.parse(text) for text in derivative.platforms] or [
        Platform("linux", "amd64")
    ]
    if derivative.base != "scratch":
        progress.note(f"base {derivative.base}: reading its manifest and config (no layers)")
    from cosgitops.builder import base_location

    base = resolve_base(
        base_location(inputs.repo_root, derivative.base), platforms, options=options, limits=limits
    )
    identity = inputs.identity
    if base.digest is not None:
        identity = replace(identity, base_digest=base.digest)
        inputs = replace(inputs, identity=identity)

    with tempfile.TemporaryDirectory(prefix="cosgitops-build-") as tmp:
        work_dir = Path(tmp)
        shared: list[tuple[LayerBlob, HistoryStep]] = []
        if inputs.overlay:
            blob = write_layer(inputs.overlay, work_dir, LAYER_EPOCH)
            shared.append((blob, HistoryStep(f"cosgitops: COPY {derivative.overlay}/ /")))
        if inputs.cloud_config:
            blob = write_layer(inputs.cloud_config, work_dir, LAYER_EPOCH)
            shared.append(
                (blob, HistoryStep(f"cosgitops: COPY {derivative.cloud_config}/ /system/oem/"))
            )
        plans = [_plan_platform(inputs, pb, shared, work_dir) for pb in base.platforms]

        before_up = target.stats.bytes_uploaded
        before_down = target.stats.bytes_downloaded
        base_ways = transfer_base_layers(base, target, work_dir=work_dir, progress=progress)
        new_blobs: dict[str, LayerBlob] = {}
        for plan in plans:
            for blob in plan.new_layers:
                new_blobs.setdefault(blob.digest, blob)
        for blob in new_blobs.values():
            target.put_blob(blob.path, blob.digest, size=blob.size, progress=progress)
        multi = len(plans) > 1
        platform_images: list[PlatformImage] = []
        manifest_descriptors: list[Descriptor] = []
        for plan in plans:
            target.put_blob(plan.config, sha256_digest(plan.config), size=len(plan.config))
            descriptor = target.put_manifest(
                plan.manifest, OCI_MANIFEST, tag=None if multi else identity.tag
            )
            manifest_descriptors.append(
                Descriptor(
                    OCI_MANIFEST,
                    descriptor.digest,
                    descriptor.size,
                    platform=plan.platform.to_json(),
                )
            )
            platform_images.append(
                PlatformImage(str(plan.platform), descriptor.digest, model_layers(plan.layers))
            )
        if multi:
            index = image_json(image_index(manifest_descriptors, identity.annotations()))
            top = target.put_manifest(index, OCI_INDEX, tag=identity.tag)
            digest, media_type = top.digest, OCI_INDEX
        else:
            digest, media_type = manifest_descriptors[0].digest, OCI_MANIFEST

    base_downloaded = base.store.stats.bytes_downloaded if base.store is not None else 0
    uploaded = target.stats.bytes_uploaded - before_up
    downloaded = base_downloaded + target.stats.bytes_downloaded - before_down
    ways = ", ".join(f"{count} {way}" for way, count in sorted(base_ways.items()))
    progress.note(
        f"{derivative.name} {derivative.version}: {len(new_blobs)} new layer(s), "
        f"{uploaded} bytes written, {downloaded} bytes read"
        + (f"; base layers: {ways}" if ways else "")
    )
    return BuildResult(
        derivative=derivative.name,
        version=derivative.version,
        builder="oci",
        name=target.reference.name,
        digest=digest,
        media_type=media_type,
        tag=identity.tag,
        platforms=tuple(platform_images),
        new_layers=tuple(blob.descriptor for blob in new_blobs.values()),
        bytes_uploaded=uploaded,
        bytes_downloaded=downloaded,
        created=identity.created,
        revision=identity.revision,
        base=base.pinned,
    )
