"""An OCI image layout on disk (``oci-layout``, ``index.json``, ``blobs/sha256/…``) as an
:class:`~cosgitops.oci.store.ImageStore`.

Every write is atomic (temporary file in the same folder, fsync, rename), every read is
checked against its digest, and ``index.json`` is changed only under an exclusive lock
on ``index.json.lock`` so that several processes can write into the same layout.
Tags are the ``org.opencontainers.image.ref.name`` annotation of ``index.json``
entries, as skopeo, buildah and ORAS read them.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cosgitops.config import DEFAULT_LIMITS, Limits, MiB
from cosgitops.errors import IntegrityError, NotFoundError, RemoteDataError, UsageError
from cosgitops.fsutil import atomic_write_bytes, file_lock, fsync_dir
from cosgitops.oci.digest import Digester, check_digest_format, verify_bytes
from cosgitops.oci.media import OCI_INDEX
from cosgitops.oci.reference import Reference, check_tag, is_digest
from cosgitops.oci.store import (
    Descriptor,
    ManifestData,
    TransferStats,
    filter_referrers,
    manifest_media_type,
    referrers_tag,
)
from cosgitops.progress import Progress

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LOCK_FILE = "index.json.lock"
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"
_CHUNK = 1 * MiB

IndexEntries = list[dict[str, Any]]


class OCILayoutStore:
    """One OCI image layout folder. It need not exist until the first write."""

    def __init__(self, path: Path | str, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = Path(os.path.abspath(path))
        self.limits = limits
        self.reference = Reference("oci", "", str(self.path))
        self.stats = TransferStats()
        self._manifests: dict[str, ManifestData] = {}

    def __repr__(self) -> str:
        return f"OCILayoutStore({str(self.path)!r})"

    # -- the layout itself ---------------------------------------------------------------

    def exists(self) -> bool:
        return (self.path / LAYOUT_FILE).is_file()

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives (whether or not it is there)."""
        return self.path / "blobs" / "sha256" / check_digest_format(digest)[len("sha256:") :]

    def ensure_layout(self) -> None:
        """Create the folder, ``oci-layout`` and an empty ``index.json`` if missing."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(
                f"{self.path} is a file, not an OCI image layout folder",
                hint="point oci: at a folder (it is created when missing)",
            )
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (self.path / LAYOUT_FILE).is_file():
            layout = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()
            atomic_write_bytes(self.path / LAYOUT_FILE, layout)
        if not (self.path / INDEX_FILE).is_file():
            with self._index_lock():
                if not (self.path / INDEX_FILE).is_file():
                    self._write_index([])

    def _check_layout_file(self) -> None:
        layout_file = self.path / LAYOUT_FILE
        if not layout_file.is_file():
            return
        try:
            version = json.loads(layout_file.read_bytes()[: 64 * 1024])["imageLayoutVersion"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise RemoteDataError(
                f"{layout_file} is not a valid oci-layout file: {exc}",
                hint="the folder is not an OCI image layout",
            ) from exc
        if not isinstance(version, str) or not version.startswith("1."):
            raise RemoteDataError(
                f"{self.path} uses OCI image layout version {version!r}; only 1.x is supported"
            )

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        """Exclusive lock for a read-modify-write of index.json, across processes."""
        with file_lock(
            self.path / LOCK_FILE,
            timeout=self.limits.oci_layout_lock_timeout_seconds,
            busy=lambda path: UsageError(
                f"another process holds the lock on {path}",
                hint="wait for the other cosgitops process to finish and retry",
            ),
        ):
            yield

    def _read_index_document(self) -> dict[str, Any]:
        index_file = self.path / INDEX_FILE
        try:
            with index_file.open("rb") as handle:
                data = handle.read(self.limits.oci_layout_index_max_bytes + 1)
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        if len(data) > self.limits.oci_layout_index_max_bytes:
            raise RemoteDataError(
                f"{index_file} is larger than {self.limits.oci_layout_index_max_bytes} bytes",
                hint="raise Limits.oci_layout_index_max_bytes if this layout is really that big",
            )
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RemoteDataError(f"{index_file} is not JSON: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("manifests", []), list):
            raise RemoteDataError(f"{index_file} is not an OCI image index")
        document.setdefault("manifests", [])
        for entry in document["manifests"]:
            Descriptor.from_json(entry)  # raises on a malformed entry
        return document

    def _entries(self) -> IndexEntries:
        self._check_layout_file()
        entries: IndexEntries = self._read_index_document()["manifests"]
        return entries

    def _write_index(self, entries: IndexEntries) -> None:
        document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        atomic_write_bytes(self.path / INDEX_FILE, json.dumps(document, indent=1).encode())

    def _update_index(self, change: Callable[[IndexEntries], IndexEntries]) -> None:
        self.ensure_layout()
        with self._index_lock():
            document = self._read_index_document()
            new_entries = change(list(document["manifests"]))
            if new_entries != document["manifests"]:
                self._write_index(new_entries)

    def index_descriptors(self) -> list[Descriptor]:
        """The entries of index.json, in order."""
        return [Descriptor.from_json(entry) for entry in self._entries()]

    # -- manifests and tags -------------------------------------------------------------------

    def resolve(self, identifier: str) -> Descriptor | None:
        entries = self._entries()
        if is_digest(identifier):
            for entry in entries:
                if entry["digest"] == identifier:
                    return Descriptor.from_json(entry)
            if not self.blob_path(identifier).is_file():
                return None
            data = self._read_verified(identifier, self.limits.manifest_max_bytes, "manifest")
            return Descriptor(manifest_media_type(data), identifier, len(data))
        if identifier.startswith("sha256:"):
            check_digest_format(identifier)
        check_tag(identifier)
        found = None
        for entry in entries:
            if (entry.get("annotations") or {}).get(REF_NAME) == identifier:
                found = entry
        return None if found is None else Descriptor.from_json(found)

    def get_manifest(self, identifier: str) -> ManifestData:
        descriptor = self.resolve(identifier)
        if descriptor is None:
            raise NotFoundError(
                f"{identifier} is not in the OCI layout {self.path}",
                hint="list its tags with `skopeo list-tags oci:PATH` or build/copy the image",
            )
        cached = self._manifests.get(descriptor.digest)
        if cached is not None:
            return cached
        data = self._read_verified(descriptor.digest, self.limits.manifest_max_bytes, "manifest")
        manifest = ManifestData(data, descriptor.media_type, descriptor.digest)
        manifest.json()  # refuse non-JSON before anyone uses it
        self._manifests[descriptor.digest] = manifest
        return manifest

    def put_manifest(self, data: bytes, media_type: str, *, tag: str | None = None) -> Descriptor:
        if len(data) > self.limits.manifest_max_bytes:
            raise RemoteDataError(
                f"manifest of {len(data)} bytes exceeds {self.limits.manifest_max_bytes}"
            )
        if tag is not None:
            check_tag(tag)
        manifest = ManifestData.from_bytes(data, media_type)
        value = manifest.json()
        self.put_blob(data, manifest.digest, size=len(data))
        entry = manifest.descriptor.to_json()
        artifact_type = value.get("artifactType")
        if isinstance(artifact_type, str) and artifact_type:
            entry["artifactType"] = artifact_type
        if tag is not None:
            entry["annotations"] = {REF_NAME: tag}
        self._update_index(lambda entries: _place_entry(entries, entry, tag))
        self._manifests[manifest.digest] = manifest
        return manifest.descriptor

    def tag(self, tag: str, digest: str) -> Descriptor:
        """Point ``tag`` at a manifest already in the layout."""
        check_tag(tag)
        manifest = self.get_manifest(check_digest_format(digest))
        entry = manifest.descriptor.to_json()
        entry["annotations"] = {REF_NAME: tag}
        self._update_index(lambda entries: _place_entry(entries, entry, tag))
        return manifest.descriptor

    def untag(self, tag: str) -> bool:
        """Remove ``tag`` (the manifest stays, untagged); False if there was no such tag."""
        check_tag(tag)
        removed = False

        def change(entries: IndexEntries) -> IndexEntries:
            nonlocal removed
            out: IndexEntries = []
            for entry in entries:
                if (entry.get("annotations") or {}).get(REF_NAME) == tag:
                    removed = True
                    out.append(_without_ref_name(entry))
                else:
                    out.append(entry)
            return _dedupe_untagged(out)

        if self.exists():
            self._update_index(change)
        return removed

    def list_tags(self) -> list[str]:
        names = {
            str(name)
            for entry in self._entries()
            if (name := (entry.get("annotations") or {}).get(REF_NAME))
        }
        return sorted(names)

    def referrers(self, digest: str, *, artifact_type: str | None = None) -> list[Descriptor]:
        check_digest_format(digest)
        found: dict[str, Descriptor] = {}
        for entry in self._entries():
            candidate = str(entry["digest"])
            if candidate in found:
                continue
            try:
                manifest = self.get_manifest(candidate)
                subject = manifest.subject()
            except NotFoundError:
                continue  # a dangling entry refers to nothing
            if subject == digest:
                found[candidate] = manifest.referrer_descriptor()
        fallback = self.resolve(referrers_tag(digest))
        if fallback is not None and fallback.media_type == OCI_INDEX:
            for child in self.get_manifest(fallback.digest).children():
                found.setdefault(child.digest, child)
        return filter_referrers(list(found.values()), artifact_type)

    # -- blobs ----------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def _read_verified(self, digest: str, max_bytes: int, what: str) -> bytes:
        path = self.blob_path(digest)
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            raise NotFoundError(
                f"{what} {digest} is not in the OCI layout {self.path}",
                hint="copy the image into the layout again",
            ) from None
        if len(data) > max_bytes:
            raise RemoteDataError(f"{what} {digest} is larger than the limit of {max_bytes} bytes")
        self.stats.bytes_downloaded += len(data)
        return verify_bytes(data, digest, what=f"{what} {digest} in {self.path}")

    def read_blob(self, digest: str, *, max_bytes: int) -> bytes:
        return self._read_verified(digest, max_bytes, "blob")

    def download_blob(
        self,
        digest: str,
        dest: Path,
        *,
        size: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        source = self.blob_path(digest)
        try:
            actual_size = source.stat().st_size
        except FileNotFoundError:
            raise NotFoundError(
                f"blob {digest} is not in the OCI layout {self.path}",
                hint="copy the image into the layout again",
            ) from None
        if size is not None and actual_size != size:
            raise IntegrityError(
                f"blob {digest} in {self.path} has {actual_size} bytes, expected {size}",
                hint="the layout is corrupt or has been tampered with; nothing was used",
            )
        if actual_size > self.limits.blob_max_bytes:
            raise RemoteDataError(
                f"blob {digest} is larger than the limit of {self.limits.blob_max_bytes} bytes"
            )
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        digester = Digester()
        task = progress.task(f"copy {digest[:19]}", total=actual_size) if progress else None
        try:
            with source.open("rb") as reader, part.open("wb") as writer:
                while chunk := reader.read(_CHUNK):
                    digester.update(chunk)
                    if digester.size > actual_size:
                        break
                    writer.write(chunk)
                    if task:
                        task.advance(len(chunk))
                writer.flush()
                os.fsync(writer.fileno())
            _check_digester(digester, digest, actual_size, f"blob {digest} in {self.path}")
            os.replace(part, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise
        finally:
            if task:
                task.close()
        fsync_dir(dest.parent)
        self.stats.bytes_downloaded += digester.size
        return digester.size

    def put_blob(
        self,
        source: bytes | Path,
        digest: str,
        *,
        size: int,
        progress: Progress | None = None,
    ) -> bool:
        target = self.blob_path(digest)
        if size > self.limits.blob_max_bytes:
            raise RemoteDataError(
                f"blob {digest} of {size} bytes exceeds the limit of "
                f"{self.limits.blob_max_bytes} bytes"
            )
        if target.is_file() and target.stat().st_size == size:
            self.stats.blobs_skipped += 1
            return False
        self.ensure_layout()
        task = progress.task(f"write {digest[:19]}", total=size) if progress else None
        try:
            written = self._write_blob(source, digest, size, target, task)
        finally:
            if task:
                task.close()
        self.stats.bytes_uploaded += written
        return True

    def _write_blob(
        self, source: bytes | Path, digest: str, size: int, target: Path, task: Any
    ) -> int:
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        tmp = Path(tmp_name)
        digester = Digester()
        try:
            with os.fdopen(fd, "wb") as writer:
                for chunk in _chunks(source):
                    digester.update(chunk)
                    if digester.size > size:
                        break
                    writer.write(chunk)
                    if task:
                        task.advance(len(chunk))
                writer.flush()
                os.fsync(writer.fileno())
            _check_digester(digester, digest, size, f"blob {digest} being written")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        fsync_dir(target.parent)
        return digester.size

    def mount_blob(self, digest: str, source_repository: str) -> bool:
        """Hard-link (or copy, verified) a blob from another OCI layout folder.

        ``source_repository`` is that layout's path, with or without ``oci:``.
        """
        source_path = source_repository.removeprefix("oci:")
        source = OCILayoutStore(source_path, limits=self.limits)
        candidate = source.blob_path(digest)
        if not candidate.is_file():
            return False
        target = self.blob_path(digest)
        if target.is_file() and target.stat().st_size == candidate.stat().st_size:
            self.stats.blobs_skipped += 1
            return True
        self.ensure_layout()
        link = target.with_name(f".tmp-link-{os.getpid()}-{target.name}")
        try:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            os.link(candidate, link)
            os.replace(link, target)
            fsync_dir(target.parent)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            self.put_blob(candidate, digest, size=candidate.stat().st_size)
        self.stats.blobs_mounted += 1
        return True


def _chunks(source: bytes | Path) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, len(source), _CHUNK):
            yield source[start : start + _CHUNK]
        return
    with Path(source).open("rb") as reader:
        while chunk := reader.read(_CHUNK):
            yield chunk


def _check_digester(digester: Digester, digest: str, size: int, what: str) -> None:
    if digester.size != size:
        raise IntegrityError(
            f"{what} has {'more than ' if digester.size > size else ''}{digester.size} bytes, "
            f"expected {size}",
            hint="the source is corrupt or has been tampered with; nothing was used",
        )
    if digester.digest != digest:
        raise IntegrityError(
            f"{what} does not match its digest: expected {digest}, got {digester.digest}",
            hint="the source is corrupt or has been tampered with; nothing was used",
        )


def _without_ref_name(entry: dict[str, Any]) -> dict[str, Any]:
    annotations = {k: v for k, v in (entry.get("annotations") or {}).items() if k != REF_NAME}
    out = {k: v for k, v in entry.items() if k != "annotations"}
    if annotations:
        out["annotations"] = annotations
    return out


def _dedupe_untagged(entries: IndexEntries) -> IndexEntries:
    """Drop untagged entries whose digest another entry already lists."""
    tagged = {e["digest"] for e in entries if (e.get("annotations") or {}).get(REF_NAME)}
    seen: set[str] = set()
    out: IndexEntries = []
    for entry in entries:
        if not (entry.get("annotations") or {}).get(REF_NAME):
            if entry["digest"] in tagged or entry["digest"] in seen:
                continue
            seen.add(entry["digest"])
        out.append(entry)
    return out


def _place_entry(entries: IndexEntries, new: dict[str, Any], tag: str | None) -> IndexEntries:
    """index.json after adding ``new``: a tag names one manifest, so it moves off any
    other entry (that manifest stays listed, untagged); nothing is listed twice."""
    out: IndexEntries = []
    present = False
    for entry in entries:
        name = (entry.get("annotations") or {}).get(REF_NAME)
        if tag is not None and name == tag:
            if entry["digest"] != new["digest"]:
                out.append(_without_ref_name(entry))
                continue
            present = True
        elif tag is None and entry["digest"] == new["digest"]:
            present = True
        out.append(entry)
    if not present:
        out.append(new)
    return _dedupe_untagged(out)
