"""From built, pushed and signed images to release manifests.

``collect_release`` reads the image a derivative's version tag points at (the index and
each platform manifest: digests, layers and sizes; never the layers themselves),
checks that its base is pinned and that a signature satisfies the trust policy, and
returns the :class:`~cosgitops.model.ReleaseManifest` that ``publish`` adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cosgitops import model
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import NotFoundError, PublishError, RemoteDataError
from cosgitops.publish.releases import format_time, parse_time

if TYPE_CHECKING:
    from cosgitops.oci.store import ImageStore, ManifestData

CREATED_ANNOTATION = "org.opencontainers.image.created"
REVISION_ANNOTATION = "org.opencontainers.image.revision"
TITLE_ANNOTATION = "org.opencontainers.image.title"


def check_base_pinned(derivative: model.Derivative) -> None:
    """A release must be reproducible: its base is ``scratch`` or pinned by digest."""
    if derivative.base == "scratch" or "@sha256:" in derivative.base:
        return
    raise PublishError(
        f"{derivative.name} {derivative.version}: base {derivative.base!r} is not pinned by digest",
        hint="write the base as NAME:TAG@sha256:<digest> (e.g. from `skopeo inspect`)",
    )


def _platform_of(
    store: ImageStore, manifest: ManifestData, declared: Mapping[str, Any] | None, limits: Limits
) -> str:
    if declared and declared.get("os") and declared.get("architecture"):
        platform = f"{declared['os']}/{declared['architecture']}"
        return f"{platform}/{declared['variant']}" if declared.get("variant") else platform
    config = manifest.children()[0]
    import json

    try:
        value = json.loads(store.read_blob(config.digest, max_bytes=limits.config_max_bytes))
        platform = f"{value['os']}/{value['architecture']}"
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteDataError(f"image config {config.digest} names no platform: {exc}") from exc
    return f"{platform}/{value['variant']}" if value.get("variant") else platform


def _platform_image(
    store: ImageStore, digest: str, declared: Mapping[str, Any] | None, limits: Limits
) -> model.PlatformImage:
    manifest = store.get_manifest(digest)
    if manifest.is_index:
        raise RemoteDataError(f"{digest} is an index nested in an index")
    layers = tuple(
        model.Layer(child.digest, child.size, child.media_type) for child in manifest.children()[1:]
    )
    return model.PlatformImage(_platform_of(store, manifest, declared, limits), digest, layers)


def _is_image_platform(declared: Mapping[str, Any] | None) -> bool:
    # Attestation manifests in a buildx index are listed as unknown/unknown.
    return not declared or declared.get("os") not in (None, "unknown")


def collect_release(
    repository: model.Repository,
    derivative: model.Derivative,
    store: ImageStore | None = None,
    *,
    commit: str | None = None,
    verify: bool = True,
    insecure: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> model.ReleaseManifest:
    """The release manifest of ``derivative`` at its current version, read from the
    image tagged with that version in ``store`` (default: the repository's registry)."""
    check_base_pinned(derivative)
    image_name = repository.image_name(derivative.name)
    if store is None:
        from cosgitops.oci import open_store
        from cosgitops.oci.store import StoreOptions

        store = open_store(image_name, StoreOptions(insecure=insecure, limits=limits))
    from cosgitops.builder.image import tag_for_version

    found = store.resolve(tag_for_version(derivative.version))
    if found is None:
        raise NotFoundError(
            f"{image_name}:{derivative.version} does not exist",
            hint=f"build, push and sign {derivative.name} {derivative.version} first "
            "(`cosgitops release` does all of it)",
        )
    top = store.get_manifest(found.digest)
    annotations: Mapping[str, Any] = top.json().get("annotations") or {}
    if top.is_index:
        platforms = tuple(
            _platform_image(store, child.digest, child.platform, limits)
            for child in top.children()
            if _is_image_platform(child.platform)
        )
    else:
        platforms = (_platform_image(store, top.digest, None, limits),)
    if not platforms:
        raise RemoteDataError(f"{image_name}@{top.digest} holds no platform image")
    if not annotations and platforms:
        annotations = store.get_manifest(platforms[0].digest).json().get("annotations") or {}

    signer = ""
    boot_test = None
    if verify:
        from cosgitops.boottest.gate import boot_test_for_release
        from cosgitops.signing import policy_for, verify_image

        policy = policy_for(repository, derivative.name)
        result = verify_image(store, top.digest, policy)
        result.require()
        signer = result.signer
        # the passing boot attestation, under the same policy; required ones refuse here
        boot_test = boot_test_for_release(store, top.digest, derivative, policy, limits=limits)

    created_text = str(annotations.get(CREATED_ANNOTATION) or "")
    try:
        created = format_time(parse_time(created_text))
    except ValueError:
        created = format_time(datetime.now(UTC))
    release = derivative.release
    return model.ReleaseManifest(
        derivative=derivative.name,
        version=derivative.version,
        image=f"{image_name}@{top.digest}",
        platforms=platforms,
        created=created,
        commit=commit or str(annotations.get(REVISION_ANNOTATION) or ""),
        channels=release.channels,
        upgrade_from=release.upgrade_from,
        rollout=release.rollout,
        notes=release.notes,
        signer=signer,
        display_name=derivative.os_release.get("GRUB_ENTRY_NAME")
        or derivative.description
        or derivative.name,
        boot_test=boot_test,
        packages=_packages(store, platforms[0].digest, limits),
    )


def _packages(store: ImageStore, digest: str, limits: Limits) -> tuple[model.PackageRef, ...]:
    """The distribution packages the image's config label lists (a cosgitops base's)."""
    from cosgitops.oci.transfer import read_image_config
    from cosgitops.osbase.build import packages_from_config

    config = read_image_config(store, store.get_manifest(digest), limits=limits)
    return tuple(model.PackageRef(p.name, p.version) for p in packages_from_config(config))


def collect_releases(
    repository: model.Repository,
    derivatives: Mapping[str, model.Derivative],
    *,
    since: str | None = None,
    insecure: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> list[model.ReleaseManifest]:
    """Release manifests of every derivative (or those changed since ``since``)."""
    names = sorted(derivatives)
    if since is not None:
        from cosgitops.builder.plan import plan_repository

        plan = plan_repository(repository, derivatives, since=since)
        names = [entry.name for entry in plan.entries]
    return [
        collect_release(repository, derivatives[name], insecure=insecure, limits=limits)
        for name in names
    ]
