"""Reproducible layer tarballs.

A layer built here depends only on the *content* of its inputs and their executable
bit: never on the checkout path, the umask, file mtimes, owners, the commit time or the
order the file system lists a folder in. Concretely:

* entries sorted by path, parents before children;
* uid/gid 0, user and group names empty, mtime = the epoch the caller passes (the
  builders pass :data:`LAYER_EPOCH`);
* modes normalised: directories and executables 0755, other files 0644 (git only
  tracks the executable bit, so anything finer would differ between checkouts);
* gzip at a fixed level, header mtime = the epoch, no file name, OS byte "unknown";
* the tar and gzip framing written here, byte by byte, not by Python's ``tarfile`` and
  ``gzip``, whose output differs between Python releases.

Symlinks: a relative link that stays inside the folder being packed is kept as a
link; an absolute link is an image path (``/etc/localtime -> /usr/share/zoneinfo/UTC``)
and is kept as is, never followed on the build machine; a relative link that leaves
the folder but resolves to a regular file inside the repository is packed as that
file's content; anything resolving outside the repository is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol, cast

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import BuildError
from cosgitops.fsutil import PathEscapeError
from cosgitops.oci.media import OCI_LAYER_GZIP
from cosgitops.oci.store import Descriptor

GZIP_LEVEL = 6
DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644
LINK_MODE = 0o777
_CHUNK = 1024 * 1024

EntryKind = Literal["file", "dir", "symlink"]

# File and gzip-header times inside the layers the builders write. Not the commit time
# (SOURCE_DATE_EPOCH): that changes with every commit and would give every layer a new
# digest each release, so a device would download unchanged overlay and cloud-config
# layers again. The commit time is recorded where it means something instead: the
# image config's `created`, the `org.opencontainers.image.created` annotation and
# /etc/os-release's TIMESTAMP. (gzip reads an mtime of 0 as "no time stamp".)
LAYER_EPOCH = 0


@dataclass(frozen=True)
class LayerEntry:
    """One member of a layer: ``path`` is relative to the image root, no leading slash."""

    path: str
    kind: EntryKind
    mode: int
    source: Path | None = None  # file content on disk
    data: bytes | None = None  # or file content in memory
    link_target: str | None = None

    @property
    def sort_key(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


@dataclass(frozen=True)
class LayerBlob:
    """A finished layer: the compressed blob on disk and the digests OCI needs."""

    path: Path
    digest: str  # sha256 of the gzip stream: the blob's name in a store
    diff_id: str  # sha256 of the uncompressed tar: what the image config lists
    size: int
    entries: int
    media_type: str = OCI_LAYER_GZIP

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)


def normalised_mode(mode: int) -> int:
    """0755 for anything executable by someone, 0644 otherwise."""
    return EXEC_MODE if mode & 0o111 else FILE_MODE


def parent_dirs(path: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _is_inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_image_path(path: str) -> str:
    if not path or path.startswith("/") or ".." in path.split("/") or "\x00" in path:
        raise BuildError(f"{path!r} is not a relative image path")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BuildError(
            f"file name {path!r} is not valid UTF-8",
            hint="rename the file: image layers store names as UTF-8",
        ) from exc
    return path


def _symlink_entry(
    link: Path, image_path: str, relative: str, *, boundary: Path, limits: Limits
) -> LayerEntry:
    target = os.readlink(link)
    if posixpath.isabs(target):
        return LayerEntry(image_path, "symlink", LINK_MODE, link_target=target)
    lexical = posixpath.normpath(posixpath.join(posixpath.dirname(relative), target))
    if lexical != ".." and not lexical.startswith("../"):
        return LayerEntry(image_path, "symlink", LINK_MODE, link_target=target)
    # Leaves the folder: acceptable only as a file elsewhere in the repository.
    resolved = (link.parent / target).resolve()
    if not _is_inside(resolved, boundary.resolve()):
        raise PathEscapeError(
            f"symlink {link} points to {resolved}, outside the repository",
            hint="replace the link with the file itself, or point it inside the repository",
        )
    if not resolved.is_file():
        raise BuildError(
            f"symlink {link} points to {resolved}, which is not a regular file",
            hint="links leaving the folder may only name files; copy folders instead",
        )
    return _file_entry(resolved, image_path, limits)


def _file_entry(source: Path, image_path: str, limits: Limits) -> LayerEntry:
    info = source.stat()
    if info.st_size > limits.overlay_max_file_bytes:
        raise BuildError(
            f"{source} is {info.st_size} bytes, over the limit of {limits.overlay_max_file_bytes}",
            hint="ship large artefacts in the base image or raise Limits.overlay_max_file_bytes",
        )
    return LayerEntry(image_path, "file", normalised_mode(info.st_mode), source=source)


def tree_entries(
    tree_root: Path,
    *,
    prefix: str = "",
    boundary: Path,
    limits: Limits = DEFAULT_LIMITS,
    include: Sequence[str] | None = None,
) -> list[LayerEntry]:
    """Entries for everything under ``tree_root``, placed under ``prefix`` in the image.

    ``include`` (file name patterns) restricts the top level to matching regular files
    and links, without descending into folders: used for ``oem/*.yaml``.
    ``boundary`` is the repository root no symlink may leave.
    """
    import fnmatch

    if not tree_root.is_dir():
        return []
    if not _is_inside(tree_root.resolve(), boundary.resolve()):
        raise PathEscapeError(
            f"{tree_root} resolves to {tree_root.resolve()}, outside the repository",
            hint="keep the folder inside the repository instead of linking to it",
        )
    entries: list[LayerEntry] = []
    pending: list[str] = [""]
    while pending:
        relative_dir = pending.pop()
        folder = tree_root / relative_dir if relative_dir else tree_root
        with os.scandir(folder) as listing:
            children = sorted(listing, key=lambda item: item.name)
        for child in children:
            relative = f"{relative_dir}/{child.name}" if relative_dir else child.name
            image_path = _check_image_path(f"{prefix}/{relative}" if prefix else relative)
            if include is not None:
                if child.is_dir(follow_symlinks=False):
                    continue
                if not any(fnmatch.fnmatchcase(child.name, pattern) for pattern in include):
                    continue
            mode = child.stat(follow_symlinks=False).st_mode
            path = Path(child.path)
            if stat.S_ISLNK(mode):
                entries.append(
                    _symlink_entry(path, image_path, relative, boundary=boundary, limits=limits)
                )
            elif stat.S_ISDIR(mode):
                entries.append(LayerEntry(image_path, "dir", DIR_MODE))
                pending.append(relative)
            elif stat.S_ISREG(mode):
                entries.append(_file_entry(path, image_path, limits))
            else:
                raise BuildError(
                    f"{path} is a special file (device, fifo or socket)",
                    hint="layers built from a repository hold only files, folders and links",
                )
    if entries and prefix:
        entries.extend(LayerEntry(p, "dir", DIR_MODE) for p in [*parent_dirs(prefix), prefix])
    return entries


def content_entries(
    files: Mapping[str, bytes], *, executable: Iterable[str] = ()
) -> list[LayerEntry]:
    """Entries for in-memory files (and their parent folders)."""
    exec_paths = set(executable)
    entries: dict[str, LayerEntry] = {}
    for path, data in files.items():
        _check_image_path(path)
        for parent in parent_dirs(path):
            entries.setdefault(parent, LayerEntry(parent, "dir", DIR_MODE))
        mode = EXEC_MODE if path in exec_paths else FILE_MODE
        entries[path] = LayerEntry(path, "file", mode, data=data)
    return list(entries.values())


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through it."""

    def __init__(self, target: _Sink | None) -> None:
        super().__init__()
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        view = memoryview(data)
        self._hash.update(view)
        self.size += view.nbytes
        if self._target is not None:
            self._target.write(bytes(view))
        return view.nbytes

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def sorted_entries(entries: Iterable[LayerEntry]) -> list[LayerEntry]:
    """Sort by path and drop duplicate paths (the last one given wins)."""
    unique: dict[str, LayerEntry] = {}
    for entry in entries:
        unique[entry.path] = entry
    return sorted(unique.values(), key=lambda entry: entry.sort_key)


# The tar and gzip framing are written here rather than by ``tarfile``/``gzip``, whose
# output has changed between Python releases (device fields, pax details): the layer
# bytes must not depend on which Python builds them.
_BLOCK = 512
_RECORD = 20 * _BLOCK
_NAME_MAX = 100
_TYPE = {"file": b"0", "symlink": b"2", "dir": b"5"}


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode("ascii") + b"\0"


def _field(text: str, width: int) -> bytes:
    data = text.encode("utf-8")
    return data[:width].ljust(width, b"\0")


def _header(
    name: str,
    *,
    mode: int,
    size: int,
    kind: bytes,
    link: str,
    epoch: int,
    uid: int = 0,
    gid: int = 0,
) -> bytes:
    header = b"".join(
        [
            _field(name, 100),
            _octal(mode, 8),
            _octal(uid, 8),
            _octal(gid, 8),
            _octal(size, 12),
            _octal(epoch, 12),
            b" " * 8,  # checksum, computed below over the header with blanks here
            kind,
            _field(link, 100),
            b"ustar\x0000",
            b"\0" * 32,  # uname
            b"\0" * 32,  # gname
            b"\0" * 16,  # devmajor, devminor
            b"\0" * 155,  # prefix (long names go into a pax header instead)
            b"\0" * 12,
        ]
    )
    checksum = f"{sum(header):06o}".encode("ascii") + b"\0 "
    return header[:148] + checksum + header[156:]


def _pax_record(key: str, value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode()
    body = b" " + key.encode() + b"=" + raw + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _needs_pax(text: str) -> bool:
    return len(text.encode("utf-8")) > _NAME_MAX or not text.isascii()


def write_member_header(
    out: IO[bytes],
    name: str,
    *,
    kind: bytes,
    mode: int,
    size: int = 0,
    mtime: int,
    link: str = "",
    uid: int = 0,
    gid: int = 0,
    extra: Mapping[str, bytes] | None = None,
) -> None:
    """One member's header: a pax extended header first when a name or link is long or
    not ASCII, or ``extra`` records are given (e.g. ``SCHILY.xattr.*``), then the ustar
    header. The caller writes ``size`` bytes of content and :func:`pad_member`."""
    records = b""
    if _needs_pax(name):
        records += _pax_record("path", name)
    if _needs_pax(link):
        records += _pax_record("linkpath", link)
    for key, value in (extra or {}).items():
        records += _pax_record(key, value)
    if records:
        out.write(
            _header(
                "././@PaxHeader", mode=0o644, size=len(records), kind=b"x", link="", epoch=mtime
            )
        )
        out.write(records + b"\0" * (-len(records) % _BLOCK))
    out.write(
        _header(name, mode=mode, size=size, kind=kind, link=link, epoch=mtime, uid=uid, gid=gid)
    )


def pad_member(out: IO[bytes], size: int) -> None:
    out.write(b"\0" * (-size % _BLOCK))


def end_of_archive(out: HashingWriter) -> None:
    """The two zero blocks, padding the stream to a whole 10 KiB record."""
    end = 2 * _BLOCK
    end += -(out.size + end) % _RECORD
    out.write(b"\0" * end)


def _write_member(out: IO[bytes], entry: LayerEntry, epoch: int) -> None:
    name = entry.path + "/" if entry.kind == "dir" else entry.path
    size = 0
    if entry.kind == "file":
        size = len(entry.data) if entry.data is not None else _file_size(entry)
    write_member_header(
        out,
        name,
        kind=_TYPE[entry.kind],
        mode=entry.mode,
        size=size,
        mtime=epoch,
        link=entry.link_target or "",
    )
    if entry.kind != "file":
        return
    if entry.data is not None:
        out.write(entry.data)
    else:
        assert entry.source is not None
        remaining = size
        with entry.source.open("rb") as handle:
            while remaining:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    raise BuildError(
                        f"{entry.source} shrank while it was being packed",
                        hint="do not change the repository while a build runs",
                    )
                out.write(chunk)
                remaining -= len(chunk)
    pad_member(out, size)


def _file_size(entry: LayerEntry) -> int:
    assert entry.source is not None
    return entry.source.stat().st_size


def write_tar(entries: Iterable[LayerEntry], out: IO[bytes], epoch: int) -> int:
    """Write the uncompressed tar stream of ``entries`` to ``out``; returns the entry count.

    POSIX ustar headers, with a pax extended header for names over 100 bytes or not
    ASCII; the end-of-archive blocks pad the stream to a whole 10 KiB record."""
    ordered = sorted_entries(entries)
    counter = HashingWriter(out)
    for entry in ordered:
        _write_member(cast(IO[bytes], counter), entry, epoch)
    end_of_archive(counter)
    return len(ordered)


class GzipWriter:
    """A gzip member (RFC 1952) with a fixed header: no name, mtime given, OS unknown.

    ``gzip.GzipFile`` is avoided for the same reason as ``tarfile``: its header bytes are
    not guaranteed across Python releases."""

    def __init__(self, out: IO[bytes], *, mtime: int, level: int = GZIP_LEVEL) -> None:
        self._out = out
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8)
        self._crc = 0
        self._size = 0
        out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", mtime & 0xFFFFFFFF) + b"\x00\xff")

    def write(self, data: bytes) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._out.write(self._compressor.compress(data))
        return len(data)

    def close(self) -> None:
        self._out.write(self._compressor.flush())
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))


def write_layer(entries: Iterable[LayerEntry], dest_dir: Path, epoch: int) -> LayerBlob:
    """Pack ``entries`` into a gzip layer under ``dest_dir`` named by its digest."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".layer-", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressed = HashingWriter(raw)
            gz = GzipWriter(cast(IO[bytes], compressed), mtime=epoch)
            plain = HashingWriter(gz)
            count = write_tar(entries, cast(IO[bytes], plain), epoch)
            gz.close()
        final = dest_dir / compressed.digest.split(":", 1)[1]
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return LayerBlob(final, compressed.digest, plain.digest, compressed.size, count)


def layer_bytes(entries: Iterable[LayerEntry], epoch: int) -> tuple[bytes, str]:
    """The gzip layer in memory plus its diff_id (for small layers and tests)."""
    buffer = io.BytesIO()
    gz = GzipWriter(buffer, mtime=epoch)
    plain = HashingWriter(gz)
    write_tar(entries, cast(IO[bytes], plain), epoch)
    gz.close()
    return buffer.getvalue(), plain.digest
