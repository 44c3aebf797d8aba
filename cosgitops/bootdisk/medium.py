"""Update media: what an air-gapped device (or a VM test) installs updates from.

A medium is a folder (and, if asked, an ext4 image of it labelled ``COS_UPDATE`` to
attach as a disk)::

    medium.json                  what it holds: derivative, releases (version, image, digest)
    public/                      a copy of the published index (TUF metadata, targets, channels)
    images/<name>/               an OCI image layout per image repository (<name> is its last
                                 path component: the derivative, as cosgitops names images),
                                 the release images (every platform) tagged by version, with
                                 their signatures and referrers

The places are the device side's (:class:`cosgitops.device.medium.UpdateMedium`).

The device verifies everything on it exactly as it verifies the network index: the
medium is a transport, never a source of trust. The folder is built beside the output
under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops.bootdisk.filesystems import make_ext4, tree_stats
from cosgitops.bootdisk.layout import MiB, ext4_size_for
from cosgitops.bootdisk.tools import DiskError
from cosgitops.device.medium import IMAGES_DIR, INDEX_DIR, MEDIUM_LABEL, UpdateMedium
from cosgitops.errors import NotFoundError
from cosgitops.fsutil import atomic_write_text, fsync_dir
from cosgitops.progress import NULL_PROGRESS, Progress

MEDIUM_FILE = "medium.json"
MEDIUM_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class MediumRelease:
    version: str
    image: str  # NAME@DIGEST as the index names it
    digest: str
    layout: str  # the OCI layout holding it, relative to the medium: images/<name>

    def to_json(self) -> dict[str, str]:
        return {
            "version": self.version,
            "image": self.image,
            "digest": self.digest,
            "layout": self.layout,
        }


@dataclass(frozen=True)
class MediumResult:
    path: Path  # the medium folder
    derivative: str
    releases: tuple[MediumRelease, ...]
    blob_bytes: int  # bytes under images/ (the OCI layout's blobs)
    image_file: Path | None
    seconds: float

    @property
    def layout(self) -> Path:
        """The OCI layout of the newest release (one per image repository)."""
        return self.path / self.releases[-1].layout

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "derivative": self.derivative,
            "releases": [release.to_json() for release in self.releases],
            "blobBytes": self.blob_bytes,
            "imageFile": str(self.image_file) if self.image_file else None,
            "seconds": round(self.seconds, 3),
        }


def _releases(public_dir: Path, derivative: str, versions: Sequence[str] | None) -> list[Any]:
    from cosgitops.publish.reader import open_index

    manifests = open_index(public_dir).manifests(derivative)
    if not manifests:
        raise NotFoundError(
            f"the index in {public_dir} has no releases of {derivative}",
            hint="publish a release first (cosgitops release)",
        )
    if versions is None:
        return sorted(manifests, key=lambda manifest: manifest.version)
    by_version = {manifest.version: manifest for manifest in manifests}
    missing = [version for version in versions if version not in by_version]
    if missing:
        raise NotFoundError(
            f"{derivative} {', '.join(missing)} is not in the index in {public_dir}",
            hint=f"published: {', '.join(sorted(by_version))}",
        )
    return [by_version[version] for version in versions]


def _replace_folder(staged: Path, output: Path) -> None:
    trash = None
    if output.exists() or output.is_symlink():
        if not output.is_dir() or output.is_symlink():
            raise DiskError(f"{output} exists and is not a folder")
        trash = output.parent / f".tmp-old-{output.name}-{time.monotonic_ns()}"
        output.rename(trash)
    staged.rename(output)
    fsync_dir(output.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def write_update_medium(
    public_dir: Path,
    output: Path,
    *,
    derivative: str,
    versions: Sequence[str] | None = None,
    image_file: Path | None = None,
    store_options: Any = None,
    progress: Progress = NULL_PROGRESS,
) -> MediumResult:
    """Write the medium for ``derivative``'s releases (all, or ``versions``) to the folder
    ``output``; with ``image_file``, also an ext4 image of it labelled COS_UPDATE."""
    from cosgitops.oci import open_store
    from cosgitops.oci.layout import OCILayoutStore
    from cosgitops.oci.transfer import copy_image
    from cosgitops.publish.paths import check_derivative_name
    from cosgitops.signing.image import legacy_tag

    started = time.monotonic()
    check_derivative_name(derivative)
    public_dir, output = Path(public_dir).absolute(), Path(output).absolute()
    manifests = _releases(public_dir, derivative, versions)
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".tmp-{output.name}.", dir=output.parent))
    image_tmp: Path | None = None
    try:
        shutil.copytree(public_dir, staged / INDEX_DIR, symlinks=True)
        medium = UpdateMedium(staged)
        releases = []
        for manifest in manifests:
            task = progress.task(f"medium: {derivative} {manifest.version}")
            layout = OCILayoutStore(medium.layout_for(manifest.image))
            layout.ensure_layout()
            source = open_store(manifest.image, store_options)
            copy_image(source, manifest.digest, layout, tag=manifest.version,
                       include_referrers=True, work_dir=output.parent)  # fmt: skip
            signature_tag = legacy_tag(manifest.digest)
            if source.resolve(signature_tag) is not None:
                copy_image(source, signature_tag, layout, tag=signature_tag, work_dir=output.parent)
            where = layout.path.relative_to(staged).as_posix()
            releases.append(MediumRelease(manifest.version, manifest.image, manifest.digest, where))
            task.close()
        description = {
            "schemaVersion": MEDIUM_SCHEMA_VERSION,
            "derivative": derivative,
            "index": INDEX_DIR,
            "releases": [release.to_json() for release in releases],
        }
        atomic_write_text(staged / MEDIUM_FILE, json.dumps(description, indent=2) + "\n")
        blob_bytes = sum(
            path.stat().st_size for path in (staged / IMAGES_DIR).rglob("*") if path.is_file()
        )
        if image_file is not None:
            task = progress.task(f"medium: {MEDIUM_LABEL} image")
            image_file = Path(image_file)
            image_file.parent.mkdir(parents=True, exist_ok=True)
            image_tmp = image_file.parent / f".tmp-{image_file.name}.{time.monotonic_ns()}"
            size = ext4_size_for(tree_stats(staged, label=MEDIUM_LABEL).bytes + 16 * MiB)
            make_ext4(staged, image_tmp, label=MEDIUM_LABEL, size=size)
            task.close()
        _replace_folder(staged, output)
        if image_tmp is not None and image_file is not None:
            image_tmp.replace(image_file)
            fsync_dir(image_file.parent)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        if image_tmp is not None:
            image_tmp.unlink(missing_ok=True)
        raise
    return MediumResult(
        path=output,
        derivative=derivative,
        releases=tuple(releases),
        blob_bytes=blob_bytes,
        image_file=image_file,
        seconds=time.monotonic() - started,
    )


def read_medium(path: Path) -> dict[str, Any]:
    """``medium.json`` of a medium folder (what a device looks at first)."""
    try:
        data = json.loads((Path(path) / MEDIUM_FILE).read_text())
    except FileNotFoundError as exc:
        raise NotFoundError(f"{path} is not an update medium (no {MEDIUM_FILE})") from exc
    except ValueError as exc:
        raise DiskError(f"{path}/{MEDIUM_FILE} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schemaVersion") != MEDIUM_SCHEMA_VERSION:
        raise DiskError(f"{path}/{MEDIUM_FILE} is not a medium description this agent reads")
    return data
