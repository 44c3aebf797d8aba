"""Update media: the published index and the release images on a disk or a folder.

A device without a network (or one told to) takes its updates from a medium: a file
system labelled ``COS_UPDATE`` (a USB stick), a virtio 9p share tagged ``cosupdate``
(a VM), or any folder given with ``--medium``. It holds::

    public/              a copy of the published index (metadata/, targets/)
    images/<name>/       an OCI image layout per image repository, with signatures

Nothing on a medium is trusted: the index is checked by TUF against the device's own
trusted root and every image by its signature and digests, exactly as from the network;
only where the bytes come from changes.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cosgitops.errors import DeviceError

MEDIUM_LABEL = "COS_UPDATE"
MEDIUM_TAG = "cosupdate"
MOUNT_POINT = Path("/run/cosgitops/medium")
INDEX_DIR = "public"
IMAGES_DIR = "images"
_NINEP_TAGS = Path("/sys/bus/virtio/drivers/9pnet_virtio")


@dataclass(frozen=True)
class UpdateMedium:
    root: Path

    @property
    def index(self) -> Path:
        return self.root / INDEX_DIR

    @property
    def images(self) -> Path:
        return self.root / IMAGES_DIR

    def layout_for(self, image: str) -> Path:
        """The OCI layout on the medium that holds the repository of ``image``."""
        from cosgitops.oci.reference import parse_reference

        repository = parse_reference(image).repository.rstrip("/")
        name = repository.rsplit("/", 1)[-1]
        if not name or name in (".", ".."):
            raise DeviceError(f"cannot place the image {image!r} on an update medium")
        return self.images / name

    @classmethod
    def at(cls, folder: Path) -> UpdateMedium:
        medium = cls(Path(folder).absolute())
        if not (medium.index / "metadata").is_dir():
            raise DeviceError(
                f"{folder} is not an update medium: it has no {INDEX_DIR}/metadata folder",
                hint="write one with `cosgitops medium`, or copy the published index to "
                f"{INDEX_DIR}/ and the images to {IMAGES_DIR}/<name>/",
            )
        return medium


def _mounted(path: Path) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return False


def _ninep_tags() -> set[str]:
    tags: set[str] = set()
    if not _NINEP_TAGS.is_dir():
        return tags
    for device in _NINEP_TAGS.iterdir():
        tag_file = device / "mount_tag"
        try:
            tags.add(tag_file.read_bytes().rstrip(b"\0\n").decode())
        except OSError:
            continue
    return tags


def attached_medium(mount_point: Path = MOUNT_POINT) -> UpdateMedium | None:
    """Mount an attached medium read-only (once) and return it, or None when none is
    attached. Only for a booted device (it runs mount)."""
    if not _mounted(mount_point):
        source: list[str] | None = None
        if MEDIUM_TAG in _ninep_tags():
            source = ["-t", "9p", "-o", "trans=virtio,version=9p2000.L,ro,cache=none", MEDIUM_TAG]
        elif (Path("/dev/disk/by-label") / MEDIUM_LABEL).exists():
            source = ["-o", "ro", str(Path("/dev/disk/by-label") / MEDIUM_LABEL)]
        if source is None:
            return None
        mount_point.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", *source, str(mount_point)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise DeviceError(
                f"cannot mount the update medium: {result.stderr.strip()[-300:]}",
                hint=f"a medium is a file system labelled {MEDIUM_LABEL} or a 9p share "
                f"tagged {MEDIUM_TAG}",
            )
    try:
        return UpdateMedium.at(mount_point)
    except DeviceError:
        return None
