"""OCI image layers -> one squashfs image, without unpacking to disk or privileges.

The layers are read once each, from the top layer down, and turned into a single PAX
tar stream that ``tar2sqfs`` (squashfs-tools-ng) packs into a gzip-compressed squashfs
image (GRUB 2.06 reads gzip). Nothing is unpacked: an entry either reaches the stream
or is shadowed by a layer above it, and the image holds owners, modes (setuid too),
extended attributes (``security.capability`` …), symlinks, hard links and the tar's
timestamps exactly as the layers say.

Shadowing, top-down. A path a layer above already produced hides the same path below
(directories merge: the upper one's metadata wins, the children of both stay); an OCI
whiteout ``.wh.NAME`` hides ``NAME`` and everything under it in the layers below, an
opaque marker ``.wh..wh..opq`` hides everything under its directory, and a file or
symlink hides everything under its path. The result is the tree that unpacking the
layers bottom-up gives (``cosgitops.device.extract``), with the same refusals.

Layers come from the network, so each entry is checked before it is used: no absolute
paths or ``..``, no device nodes, FIFOs or sockets, hard links only to a regular file
seen earlier in the same layer, names up to 255 bytes, paths up to 4096 bytes, depth,
entry and byte counts (sparse files at their full size) within
:class:`~cosgitops.config.Limits`, and only extended attributes squashfs can store.
Each layer's compressed digest and uncompressed digest (the config's
``rootfs.diff_ids``) are checked while it streams; a mismatch fails the whole image.

The image is written to a temporary file beside the output, synced and renamed, so the
output name only ever holds a complete, verified image. The same layers always give
the same bytes (entry order comes from the layers, tar2sqfs is deterministic whatever
its job count, the superblock time is fixed).

:class:`SquashfsImage` reads an image back without mounting it (``rdsquashfs``).
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cosgitops.config import DEFAULT_LIMITS, Limits, MiB
from cosgitops.device.extract import OPAQUE_MARKER, WHITEOUT_PREFIX, UnsafeLayerError
from cosgitops.errors import CosgitopsError, IntegrityError, NotFoundError, RemoteDataError
from cosgitops.fsutil import fsync_dir
from cosgitops.oci import media
from cosgitops.progress import NULL_PROGRESS, Progress, ProgressTask

NAME_MAX = 255  # bytes in one path component
PATH_MAX = 4096  # bytes in a whole path or a symlink target
XATTR_VALUE_MAX = 64 * 1024
XATTR_NAMESPACES = ("user.", "trusted.", "security.")  # what squashfs stores
# POSIX ACLs live in system.*, which squashfs cannot store (mksquashfs drops them too).
# Real images carry some (systemd puts one on /var/log/journal and re-applies it at boot
# with tmpfiles); they are left out and counted, any other unstorable attribute refused.
DROPPED_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
DEFAULT_COMPRESSION_LEVEL = 1  # 1.7x faster than 6 for a 9% larger image (a Debian base)
_CHUNK = 1 * MiB
_LOOKAHEAD = 256 * 1024  # more than tarfile reads ahead of the member it returns
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"  # names and values are bytes; tarfile hands them over as str
_MTIME_MAX = 2**32 - 1  # squashfs stores 32-bit unsigned times
_ID_MAX = 2**32 - 1

_GZIP_TYPES = {media.OCI_LAYER_GZIP, media.DOCKER_LAYER_GZIP}
_TAR_TYPES = {media.OCI_LAYER_TAR, "application/vnd.docker.image.rootfs.diff.tar"}
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# What the image holds at a path, as far as the layers above the current one said.
_DIR = 1  # a directory with its own entry
_IMPLICIT = 2  # a directory only because something is below it (or an opaque marker)
_OTHER = 3  # a file, symlink or hard link


class SquashfsError(CosgitopsError):
    """A squashfs tool is missing or failed."""


class LayerIntegrityError(IntegrityError):
    """A layer blob does not match its digest or its diff_id."""

    def __init__(self, message: str, *, digest: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.digest = digest


@dataclass(frozen=True)
class LayerBlob:
    """One layer to flatten: its blob on disk and the two digests it must match."""

    path: Path
    media_type: str
    digest: str  # of the blob as stored (compressed)
    diff_id: str  # of the uncompressed tar (the image config's rootfs.diff_ids)


@dataclass(frozen=True)
class FlattenResult:
    path: Path
    digest: str  # sha256 of the squashfs file
    size: int  # bytes
    entries: int  # entries in the image (the root not counted)
    layers: int
    tar_bytes: int  # uncompressed layer bytes read
    seconds: float
    dropped_acls: tuple[str, ...] = ()  # paths whose POSIX ACLs squashfs could not keep

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "digest": self.digest,
            "size": self.size,
            "entries": self.entries,
            "layers": self.layers,
            "tarBytes": self.tar_bytes,
            "seconds": round(self.seconds, 3),
            "droppedAcls": list(self.dropped_acls),
        }


# ------------------------------------------------------------------ reading a layer


def _compression(blob: LayerBlob, head: bytes, label: str) -> str:
    if "zstd" in blob.media_type or head.startswith(_ZSTD_MAGIC):
        raise UnsafeLayerError(
            f"{label}: media type {blob.media_type} (zstd) is not supported",
            hint="publish images with gzip layers",
        )
    if blob.media_type in _GZIP_TYPES:
        return "gzip"
    if blob.media_type in _TAR_TYPES:
        return "tar"
    return "gzip" if head.startswith(_GZIP_MAGIC) else "tar"


class _LayerStream:
    """A blob read as its uncompressed tar: hashes both sides, bounds every inflate."""

    def __init__(self, handle: IO[bytes], compression: str, label: str, task: ProgressTask):
        self._handle = handle
        self._label = label
        self._task = task
        self._gzip = compression == "gzip"
        self._inflater = zlib.decompressobj(31)
        self._member_open = False  # inside a gzip member that has not ended
        self._pending = b""  # compressed bytes not inflated yet
        self._buffer = bytearray()
        self._recent: collections.deque[tuple[int, bytes]] = collections.deque()
        self._started = False
        self.compressed = hashlib.sha256()
        self.uncompressed = hashlib.sha256()
        self.uncompressed_size = 0

    def _read_raw(self) -> bytes:
        chunk = self._handle.read(_CHUNK)
        if chunk:
            self.compressed.update(chunk)
            self._task.advance(len(chunk))
        return chunk

    def _emit(self, data: bytes) -> None:
        if data:
            self._recent.append((self.uncompressed_size, data))
            while (
                len(self._recent) > 2 and self._recent[1][0] + _LOOKAHEAD < self.uncompressed_size
            ):
                self._recent.popleft()
            self.uncompressed.update(data)
            self.uncompressed_size += len(data)
            self._buffer += data

    def _fill(self) -> bool:
        """Decode more bytes into the buffer; False at the end of the stream."""
        if not self._gzip:
            chunk = self._read_raw()
            self._emit(chunk)
            return bool(chunk)
        if not self._pending:
            self._pending = self._read_raw()
            if not self._pending:
                if self._member_open or not self._started:
                    raise RemoteDataError(
                        f"{self._label} is not a complete gzip stream (it ends early)",
                        hint="the blob is truncated or is not gzip",
                    )
                return False
        if self._inflater.eof:  # the last member ended and more bytes follow: a new member
            self._inflater = zlib.decompressobj(31)
        self._started = True
        self._member_open = True
        try:
            out = self._inflater.decompress(self._pending, _CHUNK)
        except zlib.error as exc:
            raise RemoteDataError(
                f"{self._label} is not a valid gzip stream: {exc}",
                hint="the publisher pushed a broken layer",
            ) from exc
        if self._inflater.eof:
            self._member_open = False
            self._pending = self._inflater.unused_data
        else:
            self._pending = self._inflater.unconsumed_tail
        self._emit(out)
        return True

    def read(self, size: int = -1) -> bytes:
        want = size if size >= 0 else 1 << 62
        while len(self._buffer) < want and self._fill():
            pass
        data = bytes(self._buffer[:want])
        del self._buffer[:want]
        return data

    def hash_rest(self) -> None:
        """Hash the compressed bytes not read yet (after the stream proved broken)."""
        self._pending = b""
        while self._read_raw():
            pass

    def drain(self, end: int | None = None) -> None:
        """Read to the end (hashing). With ``end`` (where the tar's end-of-archive marker
        starts), every byte from there on must be zero: anything else is data the tar
        reader stopped before (a damaged header), and the layer is refused."""
        if end is not None:
            self._check_zero(end)
        while self._fill():
            if end is not None and any(self._buffer):
                raise RemoteDataError(
                    f"{self._label}: data follows the end of its tar archive",
                    hint="the layer holds a damaged entry header; refused",
                )
            self._buffer.clear()
        self._buffer.clear()

    def _check_zero(self, end: int) -> None:
        if not self._recent or self._recent[0][0] > end:
            raise RemoteDataError(f"{self._label}: the tar reader stopped at an unknown offset")
        for start, data in self._recent:
            if start + len(data) > end and any(data[max(0, end - start) :]):
                raise RemoteDataError(
                    f"{self._label}: data follows the end of its tar archive",
                    hint="the layer holds a damaged entry header; refused",
                )


def _check_digests(blob: LayerBlob, stream: _LayerStream, label: str) -> None:
    actual = "sha256:" + stream.compressed.hexdigest()
    if actual != blob.digest:
        raise LayerIntegrityError(
            f"{label} does not match its digest (got {actual})",
            digest=blob.digest,
            hint="the blob was modified or corrupted on disk; nothing was written",
        )
    uncompressed = "sha256:" + stream.uncompressed.hexdigest()
    if uncompressed != blob.diff_id:
        raise LayerIntegrityError(
            f"{label}: its uncompressed content {uncompressed} is not the diff_id "
            f"{blob.diff_id} the image config names",
            digest=blob.digest,
            hint="the image config and the layer disagree; the image is refused",
        )


@contextlib.contextmanager
def _open_layer(
    blob: LayerBlob, label: str, progress: Progress
) -> Iterator[tuple[tarfile.TarFile | None, _LayerStream]]:
    """The layer's tar (None for an empty layer); digests are checked on a clean exit.

    When the layer turns out broken or hostile, the rest of the blob is hashed first: a
    blob that does not match its digest (a tampered or rotted cache file) is reported as
    that, which is what the caller acts on (dropping the cached copy)."""
    task = progress.task(f"flatten {label}", total=_size_or_none(blob.path))
    try:
        with blob.path.open("rb") as handle:
            head = handle.read(4)
            handle.seek(0)
            stream = _LayerStream(handle, _compression(blob, head, label), label, task)
            try:
                archive = _tar_reader(stream, label)
                try:
                    yield archive, stream
                except (tarfile.TarError, EOFError) as exc:
                    raise RemoteDataError(
                        f"{label} is not a valid tar archive: {exc}",
                        hint="the publisher pushed a broken layer",
                    ) from exc
                finally:
                    if archive is not None:
                        archive.close()
                stream.drain(None if archive is None else archive.offset)
            except RemoteDataError as damage:
                if isinstance(damage, IntegrityError):
                    raise
                stream.hash_rest()
                actual = "sha256:" + stream.compressed.hexdigest()
                if actual != blob.digest:
                    raise LayerIntegrityError(
                        f"{label} does not match its digest (got {actual})",
                        digest=blob.digest,
                        hint="the blob was modified or corrupted on disk; nothing was written",
                    ) from damage
                raise
            _check_digests(blob, stream, label)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{label}: the blob {blob.path} does not exist") from exc
    finally:
        task.close()


def _tar_reader(stream: _LayerStream, label: str) -> tarfile.TarFile | None:
    try:
        return tarfile.open(  # type: ignore[call-overload, no-any-return]
            fileobj=stream, mode="r|", encoding=_ENCODING, errors=_ERRORS
        )
    except tarfile.ReadError as exc:
        if stream.uncompressed_size:
            raise RemoteDataError(
                f"{label} is not a valid tar archive: {exc}",
                hint="the publisher pushed a broken layer",
            ) from exc
        return None  # an empty stream: a layer that adds nothing


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# ------------------------------------------------------------------ checking entries


def _encoded(text: str) -> bytes:
    return text.encode(_ENCODING, _ERRORS)


def _parents(path: str) -> Iterator[str]:
    """The proper ancestors of ``a/b/c``: ``""`` (the root), ``a``, ``a/b``."""
    yield ""
    index = path.find("/")
    while index != -1:
        yield path[:index]
        index = path.find("/", index + 1)


def _parent_of(path: str) -> str:
    return path.rpartition("/")[0]


@dataclass
class _Layer:
    """What the current layer said so far; applies to the layers below it only."""

    label: str
    kinds: dict[str, int] = field(default_factory=dict)  # path -> _DIR/_OTHER in this layer
    parents: set[str] = field(default_factory=set)  # directories this layer has entries in
    files: dict[str, str] = field(default_factory=dict)  # regular file or link -> its origin
    origins_emitted: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    sealed: set[str] = field(default_factory=set)
    pending: dict[str, list[str]] = field(default_factory=dict)  # hidden origin -> links


class _Sink:
    """The PAX tar stream tar2sqfs reads."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._tar = tarfile.open(  # noqa: SIM115 - closed by close()
            fileobj=handle,
            mode="w|",
            format=tarfile.PAX_FORMAT,
            encoding=_ENCODING,
            errors=_ERRORS,
        )
        self.entries = 0

    def add(
        self,
        path: str,
        kind: bytes,
        member: tarfile.TarInfo | None,
        *,
        xattrs: Mapping[str, str] | None = None,
        linkname: str = "",
        data: IO[bytes] | None = None,
    ) -> None:
        info = tarfile.TarInfo(path)
        info.type = kind
        info.uname = info.gname = ""
        if member is None:  # a directory no layer gave an entry for
            info.mode, info.uid, info.gid, info.mtime = 0o755, 0, 0, 0
        else:
            info.mode = member.mode & 0o7777
            info.uid, info.gid = member.uid, member.gid
            info.mtime = min(max(int(member.mtime), 0), _MTIME_MAX)
        info.linkname = linkname
        info.pax_headers = {f"SCHILY.xattr.{name}": value for name, value in (xattrs or {}).items()}
        if data is not None:
            assert member is not None
            info.size = member.size
        self._tar.addfile(info, data)
        self.entries += 1

    def close(self) -> None:
        self._tar.close()

    def abandon(self) -> None:
        """Drop what is buffered without writing it (tar2sqfs is being killed)."""
        stream = self._tar.fileobj
        self._tar.closed = True  # type: ignore[attr-defined]
        if stream is not None:
            stream.closed = True  # type: ignore[attr-defined]


class _Flattener:
    def __init__(self, sink: _Sink, limits: Limits) -> None:
        self.sink = sink
        self.limits = limits
        self.taken: dict[str, int] = {}
        self.gone: set[str] = set()
        self.sealed: set[str] = set()
        self.read_entries = 0
        self.read_bytes = 0
        self.dropped_acls: list[str] = []

    # ---------------------------------------------------------------- checks

    def _charge(self, member: tarfile.TarInfo, where: str) -> None:
        self.read_entries += 1
        if member.isreg():  # sparse files count at their full size
            self.read_bytes += member.size
        if self.read_entries > self.limits.extract_max_entries:
            raise UnsafeLayerError(
                f"{where}: the image has more than {self.limits.extract_max_entries} entries",
                hint="far larger than any OS image should be; refused as a bomb",
            )
        if self.read_bytes > self.limits.extract_max_total_bytes:
            raise UnsafeLayerError(
                f"{where}: the image holds more than {self.limits.extract_max_total_bytes} "
                f"bytes of files",
                hint="raise Limits.extract_max_total_bytes if the image is really this big",
            )

    def _path(self, name: str, where: str) -> str:
        if "\x00" in name:
            raise UnsafeLayerError(f"{where}: the name contains a NUL byte")
        if name.startswith("/"):
            raise UnsafeLayerError(
                f"{where} has an absolute path", hint="layer entries are relative to the root"
            )
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise UnsafeLayerError(
                f"{where} climbs out of the image root with '..'",
                hint="the layer was crafted to write outside the image",
            )
        for part in parts:
            if len(_encoded(part)) > NAME_MAX:
                raise UnsafeLayerError(f"{where}: a name is longer than {NAME_MAX} bytes")
        path = "/".join(parts)
        if len(_encoded(path)) + 1 > PATH_MAX:
            raise UnsafeLayerError(f"{where}: the path is longer than {PATH_MAX} bytes")
        if len(parts) > self.limits.extract_max_depth:
            raise UnsafeLayerError(
                f"{where}: the path is {len(parts)} levels deep, over the limit of "
                f"{self.limits.extract_max_depth}",
                hint="raise Limits.extract_max_depth if the image really nests this deep",
            )
        return path

    @staticmethod
    def _kind(member: tarfile.TarInfo, where: str) -> str:
        if member.isdir():
            return "dir"
        if member.isreg():
            return "file"
        if member.issym():
            return "symlink"
        if member.islnk():
            return "hardlink"
        if member.ischr() or member.isblk():
            raise UnsafeLayerError(
                f"{where} is a device node",
                hint="device files are refused in an OS image; /dev is populated at boot",
            )
        if member.isfifo():
            raise UnsafeLayerError(
                f"{where} is a FIFO", hint="named pipes are refused in an OS image"
            )
        raise UnsafeLayerError(f"{where} has an unsupported tar entry type {member.type!r}")

    def _xattrs(self, member: tarfile.TarInfo, where: str, path: str = "") -> dict[str, str]:
        found: dict[str, str] = {}
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                name, content = key[len("SCHILY.xattr.") :], value
            elif key.startswith("LIBARCHIVE.xattr."):
                name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :], errors=_ERRORS)
                try:
                    raw = base64.b64decode(_encoded(value) + b"==", validate=False)
                except (binascii.Error, ValueError) as exc:
                    raise UnsafeLayerError(
                        f"{where}: extended attribute {name!r} is not base64"
                    ) from exc
                content = raw.decode(_ENCODING, _ERRORS)
            else:
                continue
            if name in DROPPED_XATTRS:
                if path and path not in self.dropped_acls:
                    self.dropped_acls.append(path)
                continue
            if not name.startswith(XATTR_NAMESPACES) or name in XATTR_NAMESPACES:
                raise UnsafeLayerError(
                    f"{where} has the extended attribute {name!r}, which squashfs cannot store",
                    hint="squashfs keeps user.*, trusted.* and security.* attributes only",
                )
            if len(_encoded(content)) > XATTR_VALUE_MAX:
                raise UnsafeLayerError(f"{where}: extended attribute {name!r} is too large")
            found[name] = content
        return dict(sorted(found.items()))

    def _hidden(self, path: str) -> bool:
        if path in self.gone:
            return True
        return any(parent in self.sealed or (parent and parent in self.gone)
                   for parent in _parents(path))  # fmt: skip

    def _claim(self, path: str) -> None:
        """``path``'s ancestors are directories in the image."""
        for parent in _parents(path):
            if parent and parent not in self.taken:
                self.taken[parent] = _IMPLICIT

    # ---------------------------------------------------------------- one layer

    def layer(self, archive: tarfile.TarFile | None, label: str) -> _Layer:
        layer = _Layer(label)
        if archive is not None:
            for member in archive:
                self._member(archive, member, layer)
        self.gone |= layer.gone
        self.sealed |= layer.sealed
        return layer

    def _member(self, archive: tarfile.TarFile, member: tarfile.TarInfo, layer: _Layer) -> None:
        where = f"{layer.label}: entry {member.name!r}"
        self._charge(member, where)
        path = self._path(member.name, where)
        if not path:
            return  # the root: the image root keeps its own metadata
        parent, _, base = path.rpartition("/")
        for ancestor in _parents(path):
            if ancestor and layer.kinds.get(ancestor) == _OTHER:
                raise UnsafeLayerError(
                    f"{where} is below /{ancestor}, which this layer makes a file or symlink",
                    hint="layers must not write through symlinks or files; refused",
                )
            layer.parents.add(ancestor)
        if base == OPAQUE_MARKER:
            layer.sealed.add(parent)
            if parent and not self._hidden(parent):
                self._claim(parent)
                self.taken.setdefault(parent, _IMPLICIT)
            return
        if base.startswith(WHITEOUT_PREFIX):
            name = base[len(WHITEOUT_PREFIX) :]
            if name in ("", ".", ".."):
                raise UnsafeLayerError(f"{where}: the whiteout names no valid entry")
            layer.gone.add(f"{parent}/{name}" if parent else name)
            return
        kind = self._kind(member, where)
        if not (0 <= member.uid <= _ID_MAX and 0 <= member.gid <= _ID_MAX):
            raise UnsafeLayerError(f"{where}: owner {member.uid}:{member.gid} is out of range")
        if path in layer.kinds:
            raise UnsafeLayerError(
                f"{where} appears twice in the layer",
                hint="a layer lists each path once; refused as ambiguous",
            )
        is_dir = kind == "dir"
        layer.kinds[path] = _DIR if is_dir else _OTHER
        if not is_dir and path in layer.parents:
            raise UnsafeLayerError(
                f"{where} is a {kind}, but this layer has entries below it",
                hint="layers must not write through symlinks or files; refused",
            )
        origin = self._origin(member, path, kind, layer, where)
        xattrs = self._xattrs(member, where, path)
        if self._hidden(path):
            if not is_dir:
                layer.sealed.add(path)
            return
        current = self.taken.get(path)
        if current is not None:
            if current != _IMPLICIT:
                if not is_dir:
                    layer.sealed.add(path)  # it replaced what the layers below had here
                return
            if not is_dir:
                raise UnsafeLayerError(
                    f"{where} is a {kind}, but a layer above has entries below it",
                    hint="the layer above would write through it; refused",
                )
        self._claim(path)
        self.taken[path] = _DIR if is_dir else _OTHER
        if not is_dir:
            layer.sealed.add(path)
        self._emit(archive, member, path=path, kind=kind, origin=origin, xattrs=xattrs,
                   layer=layer, where=where)  # fmt: skip

    def _origin(
        self, member: tarfile.TarInfo, path: str, kind: str, layer: _Layer, where: str
    ) -> str:
        if kind == "file":
            layer.files[path] = path
            return path
        if kind != "hardlink":
            return ""
        target = self._path(member.linkname, f"{where} (hard link target)")
        origin = layer.files.get(target)
        if origin is None:
            raise UnsafeLayerError(
                f"{where} is a hard link to {member.linkname!r}, which is not a regular file "
                f"earlier in the same layer",
                hint="hard links may only point to regular files their own layer holds",
            )
        layer.files[path] = origin
        return origin

    def _emit(
        self,
        archive: tarfile.TarFile,
        member: tarfile.TarInfo,
        *,
        path: str,
        kind: str,
        origin: str,
        xattrs: dict[str, str],
        layer: _Layer,
        where: str,
    ) -> None:
        if kind == "dir":
            self.sink.add(path, tarfile.DIRTYPE, member, xattrs=xattrs)
        elif kind == "symlink":
            target = member.linkname
            if not target or "\x00" in target or len(_encoded(target)) + 1 > PATH_MAX:
                raise UnsafeLayerError(f"{where}: the symlink target is empty or too long")
            self.sink.add(path, tarfile.SYMTYPE, member, xattrs=xattrs, linkname=target)
        elif kind == "hardlink":
            if origin in layer.origins_emitted:
                self.sink.add(path, tarfile.LNKTYPE, member, linkname=origin)
            else:  # the file it shares is hidden by a layer above: it gets its own copy
                layer.pending.setdefault(origin, []).append(path)
        else:
            source = archive.extractfile(member)
            if source is None:
                raise RemoteDataError(f"{where}: the archive holds no data for this file")
            self.sink.add(path, tarfile.REGTYPE, member, xattrs=xattrs, data=source)
            layer.origins_emitted.add(path)

    def copies(self, archive: tarfile.TarFile | None, layer: _Layer) -> None:
        """Second read of a layer: the content of hidden files that links still share."""
        wanted = dict(layer.pending)
        if archive is None:
            return
        for member in archive:
            if not member.isreg():
                continue
            path = "/".join(p for p in member.name.split("/") if p not in ("", "."))
            links = wanted.pop(path, None)
            if links is None:
                continue
            where = f"{layer.label}: entry {member.name!r}"
            source = archive.extractfile(member)
            if source is None:
                raise RemoteDataError(f"{where}: the archive holds no data for this file")
            first, *others = links
            self.sink.add(first, tarfile.REGTYPE, member, xattrs=self._xattrs(member, where),
                          data=source)  # fmt: skip
            for other in others:
                self.sink.add(other, tarfile.LNKTYPE, member, linkname=first)
        if wanted:
            raise IntegrityError(f"{layer.label} changed between two reads")

    def finish(self) -> None:
        """Directories only opaque markers or children implied get default metadata."""
        for path, state in self.taken.items():
            if state == _IMPLICIT:
                self.sink.add(path, tarfile.DIRTYPE, None)


# ------------------------------------------------------------------ tar2sqfs


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SquashfsError(
            f"{name} is not installed", hint="install squashfs-tools-ng (Debian: squashfs-tools-ng)"
        )
    return found


def _file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def flatten_layers(
    layers: Sequence[LayerBlob],
    output: Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
    compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    jobs: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> FlattenResult:
    """Write the image the ``layers`` (bottom first, as in a manifest) make to ``output``.

    Raises :class:`UnsafeLayerError` (naming the layer and entry) for anything an OS
    image must not hold, :class:`IntegrityError` when a blob does not match its digest
    or diff_id; in every failure nothing is left under ``output``.
    """
    if not 1 <= compression_level <= 9:
        raise ValueError("compression_level is 1..9")
    started = time.monotonic()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    binary = _tool("tar2sqfs")
    jobs = jobs or max(1, min(os.cpu_count() or 1, 4))
    fd, name = tempfile.mkstemp(prefix=f".tmp-{output.name}.", dir=output.parent)
    os.close(fd)
    temporary = Path(name)
    env = {key: value for key, value in os.environ.items() if key != "SOURCE_DATE_EPOCH"}
    argv = [
        binary, "--quiet", "--no-skip", "--force",
        "--compressor", "gzip", "--comp-extra", f"level={compression_level}",
        "--num-jobs", str(jobs),
        "--defaults", "uid=0,gid=0,mode=0755,mtime=0",
        str(temporary),
    ]  # fmt: skip
    try:
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=env
            )
            assert process.stdin is not None
            sink = _Sink(process.stdin)
            try:
                flattener = _Flattener(sink, limits)
                count = len(layers)
                for position, blob in enumerate(reversed(layers)):
                    label = f"layer {count - position} of {count} ({blob.digest[:19]})"
                    with _open_layer(blob, label, progress) as (archive, _):
                        layer = flattener.layer(archive, label)
                    if layer.pending:
                        with _open_layer(blob, label, NULL_PROGRESS) as (archive, _):
                            flattener.copies(archive, layer)
                flattener.finish()
                sink.close()
                process.stdin.close()
                code = process.wait()
            except BrokenPipeError:  # tar2sqfs stopped reading: its message says why
                sink.abandon()
                code = process.wait() or -1
            except BaseException:
                sink.abandon()
                process.kill()
                process.wait()
                raise
            finally:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            if code != 0:
                errors.seek(0)
                text = errors.read().decode(errors="replace").strip()[-800:]
                raise SquashfsError(
                    f"tar2sqfs failed (exit code {code}): {text}",
                    hint="a bug in the tar stream cosgitops wrote, or the disk is full",
                )
        with temporary.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        digest, size = _file_digest(temporary)
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(output.parent)
    return FlattenResult(
        path=output,
        digest=digest,
        size=size,
        entries=sink.entries,
        layers=len(layers),
        tar_bytes=flattener.read_bytes,
        seconds=time.monotonic() - started,
        dropped_acls=tuple("/" + path for path in flattener.dropped_acls),
    )


def layer_blobs(
    layers: Sequence[Any], config: Mapping[str, Any], blob_path: Callable[[str], Path]
) -> list[LayerBlob]:
    """Pair a manifest's layer descriptors with the config's ``rootfs.diff_ids``."""
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, Mapping) else None
    if not isinstance(diff_ids, list) or not all(isinstance(item, str) for item in diff_ids):
        raise RemoteDataError("the image config has no valid rootfs.diff_ids")
    if len(diff_ids) != len(layers):
        raise RemoteDataError(
            f"the image has {len(layers)} layers but its config lists {len(diff_ids)} diff_ids"
        )
    return [
        LayerBlob(blob_path(layer.digest), layer.media_type, layer.digest, diff_id)
        for layer, diff_id in zip(layers, diff_ids, strict=True)
    ]


def flatten_image(
    store: Any,
    identifier: str,
    output: Path,
    *,
    platform: str = "linux/amd64",
    limits: Limits = DEFAULT_LIMITS,
    compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    progress: Progress = NULL_PROGRESS,
) -> FlattenResult:
    """Flatten an image of an OCI layout store (``OCILayoutStore``) by tag or digest."""
    from cosgitops.oci.transfer import fetch_image_manifest

    manifest, config = fetch_image_manifest(store, identifier, platform, limits=limits)
    blobs = layer_blobs(manifest.children()[1:], config, store.blob_path)
    return flatten_layers(
        blobs, output, limits=limits, compression_level=compression_level, progress=progress
    )


# ------------------------------------------------------------------ reading an image

_KINDS = (
    ("symbolic link", "symlink"),
    ("directory", "dir"),
    ("character device", "char"),
    ("block device", "block"),
    ("fifo", "fifo"),
    ("named pipe", "fifo"),
    ("socket", "socket"),
    ("file", "file"),
)
_DESCRIBE_KINDS = {"dir": "dir", "file": "file", "slink": "symlink", "nod": "device",
                   "pipe": "fifo", "sock": "socket", "link": "hardlink"}  # fmt: skip
_MAX_LINK_HOPS = 40


@dataclass(frozen=True)
class SquashfsEntry:
    path: str  # absolute inside the image: "/etc/os-release"
    kind: str  # file | dir | symlink | char | block | fifo | socket
    mode: int  # permission bits (07777)
    uid: int
    gid: int
    size: int = 0  # regular files
    target: str = ""  # symlinks
    mtime: int = 0


def _absolute(path: str) -> str:
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return "/" + "/".join(parts)


class SquashfsImage:
    """Read a squashfs image without mounting it (squashfs-tools-ng's ``rdsquashfs``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFoundError(f"squashfs image {self.path} does not exist")
        self._binary = _tool("rdsquashfs")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [self._binary, *args, str(self.path)], capture_output=True, check=False
        )
        if check and result.returncode != 0:
            raise SquashfsError(
                f"rdsquashfs {' '.join(args)} {self.path} failed: "
                f"{result.stderr.decode(errors='replace').strip()[-500:]}",
                hint="is it a squashfs image?",
            )
        return result

    def stat(self, path: str) -> SquashfsEntry | None:
        """What ``path`` is (a symlink itself, not its target); None if absent."""
        path = _absolute(path)
        result = self._run("--stat", path, check=False)
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").lower()
            if "no such file" in message or "not a directory" in message:
                return None
            raise SquashfsError(f"rdsquashfs --stat {path} {self.path} failed: {message.strip()}")
        fields: dict[str, str] = {}
        for line in result.stdout.decode(_ENCODING, _ERRORS).splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                fields.setdefault(key.strip(), value)
        inode_type = fields.get("Inode type", "").lower()
        kind = next((name for word, name in _KINDS if word in inode_type), "unknown")
        mtime = fields.get("Last modified", "")
        return SquashfsEntry(
            path=path,
            kind=kind,
            mode=int(fields.get("Access", "0"), 8) & 0o7777,
            uid=int(fields.get("UID", "0").split()[0]),
            gid=int(fields.get("GID", "0").split()[0]),
            size=int(fields.get("File size", "0")),
            target=fields.get("Link target", ""),
            mtime=int(mtime.rsplit("(", 1)[1].rstrip(")")) if "(" in mtime else 0,
        )

    def resolve(self, path: str) -> SquashfsEntry:
        """Follow symlinks inside the image (as the booted system would); raise if absent."""
        pending = [part for part in _absolute(path).split("/") if part]
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            current = "/" + "/".join([*done, part])
            entry = self.stat(current)
            if entry is None:
                raise NotFoundError(f"{_absolute(path)} is not in the image {self.path.name}")
            if entry.kind == "symlink":
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise NotFoundError(f"{_absolute(path)}: too many symlinks in the image")
                target = [p for p in entry.target.split("/") if p not in ("", ".")]
                if entry.target.startswith("/"):
                    done = []
                pending = target + pending
                continue
            if pending and entry.kind != "dir":
                raise NotFoundError(f"{_absolute(path)}: {current} is not a directory")
            done.append(part)
        final = self.stat("/" + "/".join(done))
        assert final is not None
        return final

    def read_bytes(self, path: str, *, max_bytes: int = 64 * MiB) -> bytes:
        """The content of a regular file (symlinks followed), at most ``max_bytes``."""
        entry = self.resolve(path)
        if entry.kind != "file":
            raise NotFoundError(f"{path} is a {entry.kind} in the image, not a file")
        if entry.size > max_bytes:
            raise SquashfsError(f"{path} in the image is {entry.size} bytes, over {max_bytes}")
        return self._run("--cat", entry.path).stdout

    def read_text(self, path: str, *, max_bytes: int = 1 * MiB) -> str:
        return self.read_bytes(path, max_bytes=max_bytes).decode("utf-8", errors="replace")

    def listdir(self, path: str = "/") -> list[str]:
        """The names in a directory (symlinks followed)."""
        entry = self.resolve(path)
        if entry.kind != "dir":
            raise NotFoundError(f"{path} is a {entry.kind} in the image, not a directory")
        names = []
        for line in self._run("--list", entry.path).stdout.decode(_ENCODING, _ERRORS).splitlines():
            fields = line.split(None, 3)
            if len(fields) < 4:
                continue
            name = fields[3]
            if line.startswith("l") and " -> " in name:
                name = name.split(" -> ", 1)[0]
            names.append(name)
        return sorted(names)

    def entries(self) -> list[tuple[str, str]]:
        """Every entry as ``(kind, absolute path)``, in the image's order."""
        out = []
        for line in self._run("--describe").stdout.decode(_ENCODING, _ERRORS).splitlines():
            fields = shlex.split(line)
            if len(fields) >= 2:
                out.append((_DESCRIBE_KINDS.get(fields[0], fields[0]), _absolute(fields[1])))
        return out

    def copy_tree(self, path: str, dest: Path) -> list[str]:
        """Copy the folder ``path`` of the image (files and folders only) into ``dest``;
        returns the files copied, relative to ``path``."""
        root = self.resolve(path)
        if root.kind != "dir":
            raise NotFoundError(f"{path} is a {root.kind} in the image, not a directory")
        prefix = root.path.rstrip("/") + "/"
        copied = []
        dest.mkdir(parents=True, exist_ok=True)
        for kind, entry in self.entries():
            if not entry.startswith(prefix):
                continue
            relative = entry[len(prefix) :]
            target = dest / relative
            if kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
            elif kind == "file":
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as handle:
                    result = subprocess.run(
                        [self._binary, "--cat", entry, str(self.path)],
                        stdout=handle, stderr=subprocess.PIPE, check=False,
                    )  # fmt: skip
                if result.returncode != 0:
                    raise SquashfsError(f"rdsquashfs --cat {entry} failed: {result.stderr!r}")
                copied.append(relative)
            else:
                raise SquashfsError(
                    f"{entry} in the image is a {kind}; only files and folders can be copied"
                )
        return sorted(copied)

    def os_release(self) -> dict[str, str]:
        """``/etc/os-release`` (or ``/usr/lib/os-release``), parsed; {} when neither exists."""
        for candidate in ("/etc/os-release", "/usr/lib/os-release"):
            try:
                return parse_os_release(self.read_text(candidate))
            except NotFoundError:
                continue
        return {}


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` lines as os-release(5) defines them (shell quoting, ``#`` comments)."""
    values: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        if not key.replace("_", "").isalnum():
            continue
        try:
            parts = shlex.split(raw, posix=True)
        except ValueError:
            parts = [raw.strip("\"'")]
        values[key] = " ".join(parts)
    return values


# ------------------------------------------------------------------ as a slot applier


class FlattenApplier:
    """Installs a verified image as one squashfs image file, straight from the layer
    cache (the form a cOS disk boots; see :mod:`cosgitops.device.cosdisk`).

    Same steps and crash points as the built-in applier: missing layers are downloaded
    into the cache, then the image is flattened to ``<partition>/transition.squashfs``
    (which a crash leaves behind for ``SlotStore.reconcile`` to remove), synced, and
    renamed into ``<partition>/slots/`` before any state names it. Nothing is unpacked,
    so owners, modes and file capabilities are exact and no privileges are needed.
    """

    def __init__(
        self,
        device: Any,
        limits: Limits = DEFAULT_LIMITS,
        *,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    ) -> None:
        from cosgitops.device.cache import LayerCache

        self.device = device
        self.limits = limits
        self.compression_level = compression_level
        self.cache = LayerCache(device)

    def apply(self, image: Any, store: Any, partition: str, progress: Progress) -> Any:
        from cosgitops.device import faults
        from cosgitops.device.apply import ApplyResult
        from cosgitops.device.cache import CacheStats
        from cosgitops.device.slots import SQUASHFS_SUFFIX
        from cosgitops.device.state import SlotRecord, now_text
        from cosgitops.oci.transfer import read_image_config

        stats = CacheStats()
        for layer in image.layers:
            self.cache.fetch(store, layer, stats, progress)
            faults.crash_point("layer-downloaded")
        manifest = store.get_manifest(image.manifest_digest)
        config = read_image_config(store, manifest, limits=self.limits)
        blobs = layer_blobs(image.layers, config, self.cache.path)
        base = self.device.partition(partition)
        transition = base / f"transition{SQUASHFS_SUFFIX}"
        try:
            result = flatten_layers(
                blobs,
                transition,
                limits=self.limits,
                compression_level=self.compression_level,
                progress=progress,
            )
        except LayerIntegrityError as error:
            # A cached layer rotted or was altered: drop it so the next run fetches it.
            self.cache.discard(error.digest)
            raise
        faults.crash_point("transition-complete")
        label = f"{image.release.version}-{image.digest.split(':', 1)[1][:12]}"
        safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in label)
        slots = base / "slots"
        slots.mkdir(parents=True, exist_ok=True)
        target = slots / f"{safe}-{os.urandom(4).hex()}{SQUASHFS_SUFFIX}"
        os.rename(result.path, target)
        fsync_dir(slots)
        fsync_dir(base)
        faults.crash_point("slot-stored")
        record = SlotRecord(
            version=image.release.version,
            digest=image.digest,
            image=image.release.image,
            storage=str(target.relative_to(self.device.root)),
            format="squashfs",
            manifest_digest=image.manifest_digest,
            layers=tuple(layer.digest for layer in image.layers),
            file_digest=result.digest,
            installed=now_text(),
        )
        return ApplyResult(record, stats)
