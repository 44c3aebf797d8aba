"""A root file system tarball (mmdebstrap's output) -> reproducible OCI layers.

The tree is split into a few layers by path, so that a device downloads only the part
that changed: the kernel and its modules, the cosgitops agent, the Python runtime, and
the rest of the system. Each layer repeats the folders above its entries (with their
real attributes), a hard link always goes into the layer of its target, and nothing
from mmdebstrap's tarball is lost on the way: owners, modes (setuid included),
extended attributes (file capabilities, ACLs) and hard links survive; times are
clamped to ``SOURCE_DATE_EPOCH``.

Device nodes under ``/dev`` are dropped (the kernel's devtmpfs provides them at boot);
the ``/dev`` folder itself stays, since a read-only root without it cannot boot.
``/etc/os-release`` becomes a regular file holding the base's os-release.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from cosgitops.builder.layers import (
    GzipWriter,
    HashingWriter,
    LayerBlob,
    end_of_archive,
    pad_member,
    write_member_header,
)
from cosgitops.errors import BuildError
from cosgitops.progress import NULL_PROGRESS, Progress

OS_RELEASE = "etc/os-release"
OS_RELEASE_SOURCES = ("usr/lib/os-release", "etc/os-release")

# (layer name, path prefixes); the last group takes everything else
LAYER_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kernel", ("boot/", "usr/lib/modules/", "usr/lib/firmware/")),
    ("agent", ("usr/lib/cosgitops/",)),
    ("python", ("usr/lib/python3/", "usr/lib/python3.11/")),
    ("system", ()),
)
# Paths under a group's prefixes that belong to the catch-all group: the package list
# changes with every package, and must not take the agent's layer with it.
LAYER_EXCEPTIONS = ("usr/lib/cosgitops/base/",)
_CHUNK = 1024 * 1024
_TYPES = {
    tarfile.REGTYPE: b"0",
    tarfile.AREGTYPE: b"0",
    tarfile.LNKTYPE: b"1",
    tarfile.SYMTYPE: b"2",
    tarfile.DIRTYPE: b"5",
}


@dataclass
class _Group:
    name: str
    prefixes: tuple[str, ...]
    path: Path
    raw: IO[bytes]
    compressed: HashingWriter
    gzip: GzipWriter
    plain: HashingWriter
    dirs: set[str] = field(default_factory=set)
    entries: int = 0

    def matches(self, path: str) -> bool:
        if not self.prefixes:
            return True
        if any(path.startswith(p) or path + "/" == p for p in LAYER_EXCEPTIONS):
            return False
        return any(path.startswith(prefix) or path + "/" == prefix for prefix in self.prefixes)


@dataclass(frozen=True)
class PackedRootfs:
    layers: tuple[tuple[str, LayerBlob], ...]  # (group name, blob), bottom first
    os_release: str
    entries: int
    dropped: tuple[str, ...]  # device nodes left out


def _normalise(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    # tarfile decodes pax values as UTF-8 with surrogateescape: encoding back that way
    # gives the original bytes of binary values such as ACLs and capabilities.
    return {
        key: value.encode("utf-8", "surrogateescape")
        for key, value in sorted(member.pax_headers.items())
        if key.startswith("SCHILY.xattr.")
    }


def read_members(tar_path: Path, names: Sequence[str]) -> dict[str, bytes]:
    """The content of the regular files ``names`` (normalised paths), where present."""
    wanted = set(names)
    found: dict[str, bytes] = {}
    with tarfile.open(tar_path, "r:") as archive:
        for member in archive:
            name = _normalise(member.name)
            if name in wanted and member.isreg():
                handle = archive.extractfile(member)
                if handle is not None:
                    found[name] = handle.read()
    return found


def _open_groups(work_dir: Path, epoch: int) -> list[_Group]:
    groups = []
    for name, prefixes in LAYER_GROUPS:
        path = work_dir / f"layer-{name}.tar.gz"
        raw = path.open("wb")
        compressed = HashingWriter(raw)
        gzip = GzipWriter(cast(IO[bytes], compressed), mtime=0)
        plain = HashingWriter(gzip)
        groups.append(_Group(name, prefixes, path, raw, compressed, gzip, plain))
    return groups


def pack_rootfs(
    tar_path: Path,
    work_dir: Path,
    *,
    epoch: int,
    os_release: str,
    progress: Progress = NULL_PROGRESS,
) -> PackedRootfs:
    """Split and rewrite the tarball at ``tar_path`` into gzip layers under ``work_dir``.

    ``os_release`` is the text written as ``/etc/os-release``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    groups = _open_groups(work_dir, epoch)
    directories: dict[str, tarfile.TarInfo] = {}
    group_of: dict[str, _Group] = {}
    dropped: list[str] = []
    total = 0
    task = progress.task("pack the base layers", total=tar_path.stat().st_size)

    def emit_header(
        group: _Group,
        name: str,
        member: tarfile.TarInfo,
        kind: bytes,
        *,
        size: int = 0,
        link: str = "",
    ) -> None:
        write_member_header(
            cast(IO[bytes], group.plain),
            name,
            kind=kind,
            mode=member.mode,
            size=size,
            mtime=min(int(member.mtime), epoch),
            link=link,
            uid=member.uid,
            gid=member.gid,
            extra=_xattrs(member),
        )
        group.entries += 1

    def ensure_parents(group: _Group, path: str) -> None:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent in group.dirs:
                continue
            info = directories.get(parent)
            if info is None:
                raise BuildError(f"the base tarball lists {path} before its folder {parent}")
            emit_header(group, parent + "/", info, b"5")
            group.dirs.add(parent)

    try:
        with tarfile.open(tar_path, "r:") as archive:
            for member in archive:
                name = _normalise(member.name)
                if not name:
                    continue
                task.advance(member.size + 512)
                if member.isdir():
                    directories[name] = member
                if name.startswith("dev/") and not member.isdir():
                    dropped.append(name)
                    continue
                kind = _TYPES.get(member.type)
                if kind is None:
                    raise BuildError(
                        f"the base tarball holds the special file /{name} outside /dev",
                        hint="device nodes, FIFOs and sockets have no place in an image",
                    )
                if member.islnk():
                    target = _normalise(member.linkname)
                    group = group_of.get(target)
                    if group is None:
                        raise BuildError(f"/{name} is a hard link to /{target}, which is missing")
                else:
                    group = next(g for g in groups if g.matches(name))
                group_of[name] = group
                ensure_parents(group, name)
                out = cast(IO[bytes], group.plain)
                if member.isdir():
                    if name not in group.dirs:
                        emit_header(group, name + "/", member, b"5")
                        group.dirs.add(name)
                elif name == OS_RELEASE:
                    data = os_release.encode("utf-8")
                    regular = tarfile.TarInfo(name)
                    regular.mode, regular.uid, regular.gid = 0o644, 0, 0
                    regular.mtime = epoch
                    emit_header(group, name, regular, b"0", size=len(data))
                    out.write(data)
                    pad_member(out, len(data))
                elif member.isreg():
                    emit_header(group, name, member, b"0", size=member.size)
                    handle = archive.extractfile(member)
                    assert handle is not None
                    remaining = member.size
                    while remaining:
                        chunk = handle.read(min(_CHUNK, remaining))
                        if not chunk:
                            raise BuildError(f"the base tarball ends inside /{name}")
                        out.write(chunk)
                        remaining -= len(chunk)
                    pad_member(out, member.size)
                else:
                    link = member.linkname if member.issym() else _normalise(member.linkname)
                    emit_header(group, name, member, kind, link=link)
                total += 1
        blobs: list[tuple[str, LayerBlob]] = []
        for group in groups:
            end_of_archive(group.plain)
            group.gzip.close()
            group.raw.close()
            final = work_dir / group.compressed.digest.split(":", 1)[1]
            group.path.replace(final)
            blobs.append(
                (
                    group.name,
                    LayerBlob(
                        final,
                        group.compressed.digest,
                        group.plain.digest,
                        group.compressed.size,
                        group.entries,
                    ),
                )
            )
    finally:
        task.close()
        for group in groups:
            if not group.raw.closed:
                group.raw.close()
                group.path.unlink(missing_ok=True)
    return PackedRootfs(tuple(blobs), os_release, total, tuple(dropped))


def merge_base_os_release(debian: str, additions: Mapping[str, str]) -> str:
    from cosgitops.builder.image import merge_os_release

    return merge_os_release(debian, dict(additions))
