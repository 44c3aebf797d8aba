"""Reading one OCI layer safely: the entry rules and the streaming digest checks.

Shared by everything that turns layers into a root file system (the slot extractor in
:mod:`.extract`, the squashfs flattener), so they accept and refuse exactly the same
layers:

* :func:`entry_parts` is the one rule for a tar entry: a relative path without NUL or
  ``..``, no name component over ``Limits.extract_max_name_bytes``, no path over
  ``extract_max_path_bytes``, at most ``extract_max_depth`` levels, link targets within
  the same bounds, and only regular files, directories, symlinks and hard links (device
  nodes, FIFOs and sockets are refused). Every refusal names the layer and the entry.
* :class:`ExtractBudget` counts entries and bytes over all layers of one image; a sparse
  file counts at its full size.
* :class:`LayerStream` reads a cached blob, hashes its compressed bytes (the layer
  digest) and its uncompressed bytes (the ``diff_id`` the image config lists) while
  they stream, and :meth:`LayerStream.finish` checks both at the end.
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import IO

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import IntegrityError, RemoteDataError
from cosgitops.oci import media

_CHUNK = 1024 * 1024
_SHOWN_NAME_CHARS = 160
_GZIP_TYPES = {media.OCI_LAYER_GZIP, media.DOCKER_LAYER_GZIP}
_TAR_TYPES = {media.OCI_LAYER_TAR, "application/vnd.docker.image.rootfs.diff.tar"}
_GZIP_MAGIC = b"\x1f\x8b"


class UnsafeLayerError(RemoteDataError):
    """A layer tries something a slot must never contain or do."""


class DiffIdMismatchError(RemoteDataError):
    """A layer's uncompressed content is not what the signed image config says."""


def shown(name: str) -> str:
    """An entry name for a message: quoted, and cut when it is absurdly long."""
    if len(name) <= _SHOWN_NAME_CHARS:
        return repr(name)
    return repr(name[:_SHOWN_NAME_CHARS]) + f"... ({len(name.encode(errors='replace'))} bytes)"


def _check_path(name: str, where: str, what: str, limits: Limits) -> tuple[str, ...]:
    if "\x00" in name:
        raise UnsafeLayerError(f"{where}: {what} contains a NUL byte")
    if name.startswith("/"):
        raise UnsafeLayerError(
            f"{where}: {what} is an absolute path",
            hint="layer entries must be relative to the image root",
        )
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeLayerError(
            f"{where}: {what} climbs out of the image root with '..'",
            hint="the layer was crafted to write outside the slot",
        )
    longest = max(parts, key=lambda part: len(part.encode(errors="surrogateescape")), default="")
    too_long = (
        longest
        if len(longest.encode(errors="surrogateescape")) > limits.extract_max_name_bytes
        else None
    )
    if too_long is not None:
        raise UnsafeLayerError(
            f"{where}: {what} has a name component of "
            f"{len(too_long.encode(errors='surrogateescape'))} bytes, over the limit of "
            f"{limits.extract_max_name_bytes}",
            hint="no file system stores such names; the layer is broken or hostile",
        )
    size = len("/".join(parts).encode(errors="surrogateescape"))
    if size > limits.extract_max_path_bytes:
        raise UnsafeLayerError(
            f"{where}: {what} is a path of {size} bytes, over the limit of "
            f"{limits.extract_max_path_bytes}",
            hint="raise Limits.extract_max_path_bytes if an image really needs such paths",
        )
    if len(parts) > limits.extract_max_depth:
        raise UnsafeLayerError(
            f"{where}: {what} is {len(parts)} directories deep, over the limit of "
            f"{limits.extract_max_depth}",
            hint="raise Limits.extract_max_depth if an image really nests this deep",
        )
    return parts


def split_entry_name(
    name: str,
    *,
    label: str = "layer",
    what: str = "the entry name",
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[str, ...]:
    """The path components of a tar entry name, refusing anything that could escape."""
    return _check_path(name, f"{label}: {shown(name)}", what, limits)


def entry_parts(
    member: tarfile.TarInfo, label: str, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, ...]:
    """Apply the entry rules to ``member``; returns its path components."""
    where = f"{label}: {shown(member.name)}"
    parts = _check_path(member.name, where, "the entry name", limits)
    if member.ischr() or member.isblk():
        raise UnsafeLayerError(
            f"{where} is a device node",
            hint="device files in an OS image layer are refused; /dev is populated at boot",
        )
    if member.isfifo():
        raise UnsafeLayerError(
            f"{where} is a FIFO",
            hint="slots hold only regular files, directories, symlinks and hard links; "
            "create FIFOs at boot (systemd-tmpfiles) instead",
        )
    if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
        raise UnsafeLayerError(
            f"{where} has an unsupported tar entry type {member.type!r}",
            hint="slots hold only regular files, directories, symlinks and hard links",
        )
    if member.issym() or member.islnk():
        target = member.linkname
        if "\x00" in target:
            raise UnsafeLayerError(f"{where}: its link target contains a NUL byte")
        size = len(target.encode(errors="surrogateescape"))
        if not target or size > limits.extract_max_path_bytes:
            raise UnsafeLayerError(
                f"{where}: its link target is {size} bytes "
                f"(allowed 1 to {limits.extract_max_path_bytes})"
            )
    return parts


@dataclass
class ExtractBudget:
    """Entry and byte counts shared by all layers of one image (sparse files at their
    full size: what they occupy once unpacked)."""

    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)
    entries: int = 0
    bytes: int = 0

    def charge(self, entries: int, size: int, where: str) -> None:
        self.entries += entries
        self.bytes += size
        if self.entries > self.limits.extract_max_entries:
            raise UnsafeLayerError(
                f"{where}: more than {self.limits.extract_max_entries} entries",
                hint="the image is far larger than any OS image should be; refused as a bomb",
            )
        if self.bytes > self.limits.extract_max_total_bytes:
            raise UnsafeLayerError(
                f"{where}: more than {self.limits.extract_max_total_bytes} bytes unpacked",
                hint="raise Limits.extract_max_total_bytes if the image is really this big",
            )

    def charge_member(self, member: tarfile.TarInfo, where: str) -> None:
        self.charge(1, member.size if member.isreg() else 0, where)


def tar_mode(media_type: str) -> str:
    """``gzip`` or ``tar`` for a layer media type (zstd is refused)."""
    if media_type in _GZIP_TYPES:
        return "gzip"
    if media_type in _TAR_TYPES:
        return "tar"
    if "zstd" in media_type:
        raise UnsafeLayerError(
            f"layer media type {media_type} (zstd) is not supported by this agent",
            hint="publish images with gzip layers",
        )
    return "auto"


class LayerStream:
    """The uncompressed tar stream of one layer blob, with both digests checked.

    ``read`` hands out uncompressed bytes (for ``tarfile.open(fileobj=..., mode="r|")``
    or a pipe to tar2sqfs); :meth:`finish` reads whatever the consumer left, then raises
    :class:`IntegrityError` if the blob is not ``digest``, :class:`RemoteDataError` if
    it is not a valid archive, and :class:`DiffIdMismatchError` if the uncompressed
    bytes are not ``diff_id``. Uncompressed bytes are bounded by
    ``Limits.extract_max_total_bytes`` (a decompression bomb stops there).
    """

    def __init__(
        self,
        handle: IO[bytes],
        *,
        digest: str,
        diff_id: str | None,
        media_type: str,
        label: str = "",
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._handle = handle
        self.digest = digest
        self.diff_id = diff_id
        self.label = label or f"layer {digest[:19]}"
        self.limits = limits
        self.compressed = hashlib.sha256()
        self.uncompressed = hashlib.sha256()
        self.compressed_bytes = 0
        self.uncompressed_bytes = 0
        mode = tar_mode(media_type)
        self._head = b""
        if mode == "auto":
            self._head = self._raw(2)
            mode = "gzip" if self._head == _GZIP_MAGIC else "tar"
        self.gzip = mode == "gzip"
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzip else None
        self._input = b""
        self.damage: Exception | None = None

    # ------------------------------------------------------------ reading

    def _raw(self, size: int) -> bytes:
        data = self._handle.read(size)
        self.compressed.update(data)
        self.compressed_bytes += len(data)
        return data

    def _next_raw(self, size: int) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._raw(size)

    def _count(self, data: bytes) -> bytes:
        self.uncompressed.update(data)
        self.uncompressed_bytes += len(data)
        if self.uncompressed_bytes > self.limits.extract_max_total_bytes:
            raise UnsafeLayerError(
                f"{self.label} unpacks to more than {self.limits.extract_max_total_bytes} bytes",
                hint="refused as a decompression bomb",
            )
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        if self._inflate is None:
            return self._count(self._next_raw(size))
        while True:
            inflate = self._inflate
            if inflate.eof:
                rest = inflate.unused_data.lstrip(b"\x00") or self._input
                self._input = b""
                while not rest:
                    chunk = self._next_raw(_CHUNK)
                    if not chunk:
                        return b""  # the end of the last gzip member
                    rest = chunk.lstrip(b"\x00")  # gzip allows zero padding between members
                self._inflate = inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._input = rest
            data = inflate.unconsumed_tail or self._input or self._next_raw(_CHUNK)
            self._input = b""
            if not data:
                raise zlib.error("the compressed stream ends in the middle")
            out = inflate.decompress(data, size)
            if out:
                return self._count(out)

    def _drain(self) -> None:
        try:
            while self.read(_CHUNK):
                pass
        except (zlib.error, EOFError) as exc:
            self.damage = self.damage or exc
        # whatever the decompressor could not use still counts for the blob's digest
        while self._raw(_CHUNK):
            pass

    # ------------------------------------------------------------ checking

    def finish(self) -> None:
        self._drain()
        actual = "sha256:" + self.compressed.hexdigest()
        if actual != self.digest:
            raise IntegrityError(
                f"{self.label} does not match its digest (got {actual})",
                hint="the cached copy was modified on disk; it is discarded and re-downloaded",
            )
        if self.damage is not None:
            kind = "gzip" if self.gzip else "tar"
            raise RemoteDataError(
                f"{self.label} is not a valid {kind} archive: {self.damage}",
                hint="the publisher pushed a broken layer",
            ) from self.damage
        uncompressed = "sha256:" + self.uncompressed.hexdigest()
        if self.diff_id is not None and uncompressed != self.diff_id:
            raise DiffIdMismatchError(
                f"{self.label}: its uncompressed content is {uncompressed}, but the signed "
                f"image config lists diff_id {self.diff_id}",
                hint="the image's layers and its config disagree (a broken or tampered "
                "build); nothing was applied",
            )
