"""The content-addressed layer cache under ``agent/blobs/sha256/<hex>``.

A blob enters the cache only through the store's ``download_blob``, which streams it
to ``<hex>.part`` under a size limit, checks the digest and then renames it into
place; an interrupted download leaves the ``.part`` file for an HTTP Range resume.
Layers of the installed releases stay cached, so the next upgrade downloads only the
layers that changed.

The cache folder is opened without following links (a symlinked ``agent/blobs`` or
``sha256`` is refused, never written through), and the clean-up deletes only regular
files named like a blob (``<64 hex>`` or ``<64 hex>.part``): anything else found there is
not the agent's and is left alone.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cosgitops.device import faults, fstree
from cosgitops.device.layout import DeviceRoot
from cosgitops.oci.digest import check_digest_format
from cosgitops.oci.store import Descriptor, ImageStore
from cosgitops.progress import NULL_PROGRESS, Progress, ProgressTask

PART_SUFFIX = ".part"
_BLOB_NAME_RE = re.compile(r"[0-9a-f]{64}(\.part)?\Z")
_PARTS = ("agent", "blobs", "sha256")


@dataclass
class CacheStats:
    downloaded: list[str] = field(default_factory=list)  # digests fetched this run
    reused: list[str] = field(default_factory=list)  # digests already cached
    bytes_downloaded: int = 0


class _CrashAwareTask:
    """Forwards progress and offers a crash point once part of a blob has arrived."""

    def __init__(self, inner: ProgressTask) -> None:
        self._inner = inner

    def advance(self, amount: int) -> None:
        self._inner.advance(amount)
        faults.crash_point("layer-download-partial")

    def close(self) -> None:
        self._inner.close()


class _CrashAwareProgress:
    def __init__(self, inner: Progress) -> None:
        self._inner = inner

    def task(self, description: str, total: int | None = None) -> ProgressTask:
        return _CrashAwareTask(self._inner.task(description, total))

    def note(self, message: str) -> None:
        self._inner.note(message)


class LayerCache:
    def __init__(self, device: DeviceRoot) -> None:
        self.device = device
        self.root = device.blobs_dir / "sha256"

    def path(self, digest: str) -> Path:
        check_digest_format(digest)
        return self.root / digest.split(":", 1)[1]

    def _open(self, *, create: bool) -> int | None:
        return fstree.open_dir(self.device.root, _PARTS, create=create, shown=str(self.device.root))

    def _lstat(self, name: str, *, create: bool = False) -> os.stat_result | None:
        fd = self._open(create=create)
        if fd is None:
            return None
        try:
            info = fstree.lstat_at(name, fd)
        finally:
            os.close(fd)
        if info is not None and not stat.S_ISREG(info.st_mode):
            where = self.root / name
            raise fstree.ForeignEntryError(
                f"{where} is a {fstree.kind_name(info.st_mode)}, not a cached blob",
                hint=f"move {where} out of the device root; the agent never follows links "
                "inside it",
            )
        return info

    def has(self, descriptor: Descriptor) -> bool:
        """Present with the right size (the digest is re-checked as the layer is unpacked)."""
        info = self._lstat(self.path(descriptor.digest).name)
        return info is not None and info.st_size == descriptor.size

    def missing_bytes(self, descriptors: Iterable[Descriptor]) -> int:
        """What downloading the blobs not cached yet will write (partial ones included)."""
        total = 0
        for descriptor in descriptors:
            if not self.has(descriptor):
                part = self._lstat(self.path(descriptor.digest).name + PART_SUFFIX)
                total += max(descriptor.size - (part.st_size if part else 0), 0)
        return total

    def fetch(
        self,
        store: ImageStore,
        descriptor: Descriptor,
        stats: CacheStats,
        progress: Progress = NULL_PROGRESS,
    ) -> None:
        """Make ``descriptor``'s blob present and verified in the cache."""
        if self.has(descriptor):
            stats.reused.append(descriptor.digest)
            return
        # the folder is a real directory, and neither the blob nor its partial download
        # is a link that the store's writer would follow
        self._lstat(self.path(descriptor.digest).name + PART_SUFFIX, create=True)
        transferred = store.download_blob(
            descriptor.digest,
            self.path(descriptor.digest),
            size=descriptor.size,
            progress=_CrashAwareProgress(progress),
        )
        stats.downloaded.append(descriptor.digest)
        stats.bytes_downloaded += transferred

    def discard(self, digest: str) -> None:
        self.collect(set(), only={self.path(digest).name})

    def discard_partial(self, digest: str) -> None:
        self.collect(set(), only={self.path(digest).name + PART_SUFFIX})

    def collect(self, keep: Iterable[str], *, only: set[str] | None = None) -> int:
        """Delete cached blobs (and partial downloads) not in ``keep``; bytes freed.
        Only regular files with blob names are deleted (``only``: just those names)."""
        wanted = {digest.split(":", 1)[1] for digest in keep}
        freed = 0
        fd = self._open(create=False)
        if fd is None:
            return 0
        try:
            for name in os.listdir(fd) if only is None else sorted(only):
                if not _BLOB_NAME_RE.match(name) or name.removesuffix(PART_SUFFIX) in wanted:
                    continue
                info = fstree.lstat_at(name, fd)
                if info is None or not stat.S_ISREG(info.st_mode):
                    continue
                os.unlink(name, dir_fd=fd)
                freed += info.st_size
        finally:
            os.close(fd)
        return freed
