"""Turning a verified release into a slot: the built-in A/B applier and the hand-off
to ``elemental upgrade``.

:func:`verify_release_image` runs before anything touches the disk: it checks the
image signature under the device's policy for exactly the digest the signed index
names, then follows that digest (index -> platform manifest -> layers) with every
step verified by digest. From then on only what it returns is used, so what is
applied is exactly what was verified.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cosgitops.config import Limits
from cosgitops.device import faults
from cosgitops.device.cache import CacheStats, LayerCache
from cosgitops.device.choose import ReleaseCandidate
from cosgitops.device.extract import ExtractBudget, extract_layer
from cosgitops.device.layout import DeviceRoot
from cosgitops.device.slots import SlotStore
from cosgitops.device.space import SpaceGuard, full_disk_error, is_disk_full
from cosgitops.device.state import SlotRecord, now_text
from cosgitops.errors import DeviceError, IntegrityError, RemoteDataError, VerificationError
from cosgitops.model import ReleaseManifest
from cosgitops.oci.digest import DIGEST_RE
from cosgitops.oci.reference import Reference
from cosgitops.oci.store import Descriptor, ImageStore
from cosgitops.progress import NULL_PROGRESS, Progress


@dataclass(frozen=True)
class VerifiedImage:
    """A release whose signature verified, resolved to the layers of one platform."""

    release: ReleaseCandidate
    reference: Reference  # pinned to the signed digest
    manifest_digest: str  # the platform manifest whose layers are applied
    layers: tuple[Descriptor, ...]
    signer: str
    diff_ids: tuple[str, ...] = ()  # the config's rootfs.diff_ids, one per layer

    @property
    def digest(self) -> str:
        assert self.reference.digest is not None
        return self.reference.digest

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


def verify_release_image(
    store: ImageStore,
    release: ReleaseCandidate,
    release_manifest: ReleaseManifest,
    *,
    policy: object,
    platform: str,
    limits: Limits,
) -> VerifiedImage:
    """Signature first, then the digest chain down to the layers; raise on any doubt."""
    from cosgitops.oci.reference import parse_reference
    from cosgitops.oci.transfer import fetch_image_manifest
    from cosgitops.signing import verify_image

    reference = parse_reference(release.image)
    digest = release.digest
    result = verify_image(store, digest, policy)  # type: ignore[arg-type]
    if not result.ok:
        raise VerificationError(
            f"release {release.version}: {result.failure_message()}",
            hint=f"{result.failure_hint()}; nothing was downloaded or applied",
        )
    signer = result.signer
    manifest, config = fetch_image_manifest(store, digest, platform, limits=limits)
    layers = tuple(manifest.children()[1:])
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(item, str) and DIGEST_RE.match(item) for item in diff_ids
    ):
        raise RemoteDataError(
            f"image {digest}: its config has no valid rootfs.diff_ids",
            hint="every OCI image config lists the uncompressed digest of each layer; "
            "rebuild the image",
        )
    if len(diff_ids) != len(layers):
        raise RemoteDataError(
            f"image {digest}: {len(layers)} layers but {len(diff_ids)} diff_ids in its config",
            hint="the image's manifest and its config disagree (a broken or tampered build); "
            "nothing was downloaded or applied",
        )
    for layer in layers:
        if layer.size < 0 or layer.size > limits.blob_max_bytes:
            raise RemoteDataError(f"layer {layer.digest} declares an impossible size {layer.size}")
    expected = release_manifest.platform(platform)
    if expected is not None and (
        expected.digest != manifest.digest
        or tuple(layer.digest for layer in expected.layers)
        != tuple(layer.digest for layer in layers)
    ):
        raise RemoteDataError(
            f"release {release.version}: the signed index lists manifest {expected.digest} "
            f"for {platform} but the signed image resolves to {manifest.digest}",
            hint="the index and the image disagree; nothing was applied",
        )
    return VerifiedImage(
        release=release,
        reference=reference.with_digest(digest).with_tag(None),
        manifest_digest=manifest.digest,
        layers=layers,
        signer=signer,
        diff_ids=tuple(diff_ids),
    )


@dataclass
class ApplyResult:
    record: SlotRecord
    cache: CacheStats


class Applier(Protocol):
    """Installs a verified image into a slot of a partition (``state`` or ``recovery``).

    ``check_space`` runs before the journal names the operation: it refuses
    (:class:`~cosgitops.device.space.DiskFullError`) what cannot fit. ``apply`` must
    never follow a link inside the device root, must free what it wrote when it fails,
    and must leave the active slot bootable whatever happens."""

    def check_space(self, image: VerifiedImage, partition: str) -> None: ...

    def apply(
        self, image: VerifiedImage, store: ImageStore, partition: str, progress: Progress
    ) -> ApplyResult: ...


class BuiltinApplier:
    """Downloads missing layers, unpacks them into ``transition`` and seals the slot."""

    def __init__(self, device: DeviceRoot, slot_format: str, limits: Limits) -> None:
        self.device = device
        self.slot_format = slot_format
        self.limits = limits
        self.cache = LayerCache(device)
        self.slots = SlotStore(device)

    def check_space(self, image: VerifiedImage, partition: str) -> None:
        """Before anything is written: the missing layers must fit into the cache, and
        the image's declared size (its compressed layers, a lower bound of what it
        unpacks to) into the partition, each beyond the reserve kept for the journal."""
        blobs = self.device.blobs_dir
        target = self.device.partition(partition)
        blobs.mkdir(parents=True, exist_ok=True)
        reserve = self.limits.device_reserve_bytes
        download = self.cache.missing_bytes(image.layers)
        what = f"release {image.release.version}"
        if _same_file_system(blobs, target):
            SpaceGuard(target, reserve=reserve, what=what).check_total(
                download + image.size, f"{what} (download and unpack)"
            )
            return
        SpaceGuard(blobs, reserve=reserve, what=what).check_total(download, f"{what} (download)")
        SpaceGuard(target, reserve=reserve, what=what).check_total(image.size, f"{what} (unpack)")

    def apply(
        self,
        image: VerifiedImage,
        store: ImageStore,
        partition: str,
        progress: Progress = NULL_PROGRESS,
    ) -> ApplyResult:
        stats = CacheStats()
        self.check_space(image, partition)
        for layer in image.layers:
            try:
                self.cache.fetch(store, layer, stats, progress)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self.cache.discard_partial(layer.digest)  # free first
                raise full_disk_error(
                    self.device.blobs_dir, f"downloading layer {layer.digest[:19]}", exc
                ) from exc
            faults.crash_point("layer-downloaded")
        staging = self.slots.fresh_transition(partition)
        budget = ExtractBudget(self.limits)
        space = SpaceGuard(
            self.device.partition(partition),
            reserve=self.limits.device_reserve_bytes,
            what=f"unpacking {image.release.version}",
        )
        diff_ids: tuple[str | None, ...] = image.diff_ids or (None,) * len(image.layers)
        for layer, diff_id in zip(image.layers, diff_ids, strict=True):
            task = progress.task(f"unpack {layer.digest[:19]}", total=None)
            try:
                extract_layer(
                    self.cache.path(layer.digest),
                    digest=layer.digest,
                    media_type=layer.media_type,
                    slot=staging,
                    diff_id=diff_id,
                    budget=budget,
                    space=space,
                    on_entry=lambda count: (
                        faults.crash_point("extract-partial") if count == 2 else None
                    ),
                )
            except IntegrityError:
                # The cached copy rotted or was altered: drop it so the next run refetches.
                self.cache.discard(layer.digest)
                raise
            finally:
                task.close()
            faults.crash_point("layer-extracted")
        faults.crash_point("transition-complete")
        label = f"{image.release.version}-{image.digest.split(':', 1)[1][:12]}"
        try:
            storage, tree, image_file = self.slots.store_transition(
                partition, label, self.slot_format
            )
        except OSError as exc:
            if is_disk_full(exc):
                raise full_disk_error(
                    self.device.partition(partition), "storing the new slot", exc
                ) from exc
            raise
        faults.crash_point("slot-stored")
        record = SlotRecord(
            version=image.release.version,
            digest=image.digest,
            image=image.release.image,
            storage=storage,
            format=self.slot_format,
            manifest_digest=image.manifest_digest,
            layers=tuple(layer.digest for layer in image.layers),
            tree_digest=tree,
            file_digest=image_file,
            installed=now_text(),
        )
        return ApplyResult(record, stats)


def _same_file_system(left: Path, right: Path) -> bool:
    try:
        return left.stat().st_dev == right.stat().st_dev
    except OSError:
        return True


class ElementalApplier:
    """Hands the verified ``NAME@DIGEST`` to ``elemental upgrade`` (a real cOS system)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def check_space(self, image: VerifiedImage, partition: str) -> None:
        """elemental checks its own partitions."""

    def argv(self, image: VerifiedImage, partition: str) -> list[str]:
        if image.reference.is_oci_layout:
            raise DeviceError(
                f"elemental cannot pull the OCI layout {image.reference.name}",
                hint="publish releases to a registry to use apply.method: elemental",
            )
        executable = self.command
        if not Path(executable).is_absolute():
            found = shutil.which(executable)
            if found is None:
                raise DeviceError(
                    f"{executable!r} is not on PATH",
                    hint="install elemental-cli or set apply.elementalCommand",
                )
            executable = found
        uri = f"oci:{image.reference.pinned_string()}"
        if partition == "recovery":
            return [executable, "upgrade-recovery", "--recovery-system.uri", uri]
        return [executable, "upgrade", "--system", uri]

    def apply(
        self,
        image: VerifiedImage,
        store: ImageStore,
        partition: str,
        progress: Progress = NULL_PROGRESS,
    ) -> ApplyResult:
        argv = self.argv(image, partition)
        progress.note(f"handing off to {' '.join(argv)}")
        result = subprocess.run(argv, capture_output=True, check=False)
        if result.returncode != 0:
            output = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise DeviceError(
                f"elemental upgrade failed with exit code {result.returncode}: {output[-800:]}",
                hint="see the elemental output above; the running system is unchanged",
            )
        record = SlotRecord(
            version=image.release.version,
            digest=image.digest,
            image=image.release.image,
            storage="",
            format="elemental",
            manifest_digest=image.manifest_digest,
            layers=tuple(layer.digest for layer in image.layers),
            installed=now_text(),
        )
        return ApplyResult(record, CacheStats())
