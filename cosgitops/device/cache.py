"""The content-addressed layer cache under ``agent/blobs/sha256/<hex>``.

A blob enters the cache only through the store's ``download_blob``, which streams it
to ``<hex>.part`` under a size limit, checks the digest and then renames it into
place; an interrupted download leaves the ``.part`` file for an HTTP Range resume.
Layers of the installed releases stay cached, so the next upgrade downloads only the
layers that changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cosgitops.device import faults
from cosgitops.device.layout import DeviceRoot
from cosgitops.oci.digest import check_digest_format
from cosgitops.oci.store import Descriptor, ImageStore
from cosgitops.progress import NULL_PROGRESS, Progress, ProgressTask

PART_SUFFIX = ".part"


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
        self.root = device.blobs_dir / "sha256"

    def path(self, digest: str) -> Path:
        check_digest_format(digest)
        return self.root / digest.split(":", 1)[1]

    def has(self, descriptor: Descriptor) -> bool:
        """Present with the right size (the digest is re-checked as the layer is unpacked)."""
        try:
            return self.path(descriptor.digest).stat().st_size == descriptor.size
        except FileNotFoundError:
            return False

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
        self.root.mkdir(parents=True, exist_ok=True)
        transferred = store.download_blob(
            descriptor.digest,
            self.path(descriptor.digest),
            size=descriptor.size,
            progress=_CrashAwareProgress(progress),
        )
        stats.downloaded.append(descriptor.digest)
        stats.bytes_downloaded += transferred

    def discard(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def collect(self, keep: Iterable[str]) -> int:
        """Delete cached blobs (and partial downloads) not in ``keep``; bytes freed."""
        wanted = {digest.split(":", 1)[1] for digest in keep}
        freed = 0
        if not self.root.is_dir():
            return 0
        for entry in self.root.iterdir():
            name = entry.name.removesuffix(PART_SUFFIX)
            if name in wanted or not entry.is_file():
                continue
            freed += entry.stat().st_size
            entry.unlink(missing_ok=True)
        return freed
