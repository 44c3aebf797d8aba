"""File systems as image files, made and read without mounts, loop devices or root.

ext4: ``mkfs.ext4 -d DIR`` copies a staging folder into a new file system; as the caller
owns every file it copies, a non-root run then sets all owners to 0:0 with one
``debugfs -w -f`` command file. File systems GRUB reads are made without the features
GRUB 2.06 refuses. The ESP: ``mkfs.vfat`` (FAT32) and mtools (``mmd``, ``mcopy``).
Reading back: ``debugfs -R`` on ``IMAGE?offset=N`` and mtools on ``IMAGE@@N``.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cosgitops.bootdisk.layout import SECTOR, ext4_journal_size
from cosgitops.bootdisk.tools import DiskError, e2fsprogs_version, run

BLOCK = 4096
# Features GRUB 2.06's ext2 driver refuses (incompatible ones it does not know) or that
# the cOS layout keeps off (orphan_file, PLAN.md); none may be on a file system it reads.
GRUB_REFUSED_FEATURES = frozenset({
    "metadata_csum_seed", "orphan_file", "large_dir", "inline_data", "casefold",
    "ea_inode", "dirdata", "journal_dev", "compression", "encrypt",
})  # fmt: skip
_FAT_FORBIDDEN = set('"*/:<>?\\|')
_BANNER = "debugfs "


@dataclass(frozen=True)
class TreeStats:
    """What a staging folder holds: bytes as allocated on a 4 KiB-block file system."""

    bytes: int
    entries: int
    largest_file: int


def _blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def walk_tree(root: Path, *, label: str) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry below ``root`` (not following symlinks), sorted; refuses what no
    partition of the disk may hold (device nodes, FIFOs, sockets, newlines in names)."""
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError as exc:
            raise DiskError(f"{label}: the staging folder {directory} does not exist") from exc
        for name in names:
            path = directory / name
            info = path.lstat()
            if "\n" in name:
                raise DiskError(f"{label}: {path} has a newline in its name")
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
                    or stat.S_ISLNK(info.st_mode)):  # fmt: skip
                raise DiskError(
                    f"{label}: {path} is a device node, FIFO or socket",
                    hint="a partition's staging folder holds files, folders and symlinks only",
                )
            yield path, info
            if stat.S_ISDIR(info.st_mode):
                stack.append(path)


def tree_stats(root: Path, *, label: str) -> TreeStats:
    total, entries, largest = BLOCK, 0, 0  # the root directory's block
    seen: set[tuple[int, int]] = set()
    for _path, info in walk_tree(root, label=label):
        entries += 1
        if stat.S_ISREG(info.st_mode):
            if info.st_nlink > 1:
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
            total += _blocks(info.st_size)
            largest = max(largest, info.st_size)
        elif stat.S_ISDIR(info.st_mode) or len(os.fsencode(os.readlink(_path))) >= 60:
            total += BLOCK  # a directory block, or a symlink target too long for its inode
    return TreeStats(total, entries, largest)


def _quote(path: str) -> str:
    """A path as debugfs's command parser reads it (double quotes, "" for a quote)."""
    return '"' + path.replace('"', '""') + '"'


def _truncate(image: Path, size: int) -> None:
    image.unlink(missing_ok=True)
    with image.open("wb") as handle:
        handle.truncate(size)


# ------------------------------------------------------------------ ext4


def make_ext4(source: Path, image: Path, *, label: str, size: int) -> None:
    """``image`` becomes an ext4 file system of ``size`` bytes holding ``source``'s tree."""
    if len(label.encode()) > 16:
        raise DiskError(f"ext4 label {label!r} is longer than 16 bytes")
    _truncate(image, size)
    features = ["^metadata_csum_seed"]
    if e2fsprogs_version() >= (1, 47):
        features.append("^orphan_file")
    argv = [
        "mkfs.ext4", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-m", "0", "-i", "16384",
        "-L", label, "-J", f"size={ext4_journal_size(size) // (1024 * 1024)}",
        "-O", ",".join(features), "-E", "root_owner=0:0", "-d", str(source), str(image),
    ]  # fmt: skip
    result = run(argv, what=f"{label}: making the file system", check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        hint = None
        if "allocate" in output or "No space" in output or "Could not" in output:
            hint = "the partition is too small for its files; pass a larger --size"
        raise DiskError(f"{label}: mkfs.ext4 failed: {output[-600:]}", hint=hint)
    if os.geteuid() != 0:
        _owners_to_root(source, image, label)
    refused = GRUB_REFUSED_FEATURES & ext4_features(image)
    if refused:
        raise DiskError(
            f"{label}: mkfs.ext4 enabled {', '.join(sorted(refused))}, which GRUB 2.06 refuses",
            hint="check /etc/mke2fs.conf on this machine",
        )


def ext4_features(image: Path | str) -> set[str]:
    output = run(["dumpe2fs", "-h", str(image)], what="reading ext4 features").stdout
    for line in output.decode(errors="replace").splitlines():
        if line.startswith("Filesystem features:"):
            return set(line.split(":", 1)[1].split())
    return set()


def _debugfs_errors(stderr: bytes) -> list[str]:
    return [
        line
        for line in stderr.decode(errors="replace").splitlines()
        if line.strip() and not line.startswith(_BANNER)
    ]


def _owners_to_root(source: Path, image: Path, label: str) -> None:
    """mkfs.ext4 -d copied the caller's uid and gid; everything becomes 0:0."""
    commands = ["sif / uid 0", "sif / gid 0"]
    for path, _info in walk_tree(source, label=label):
        target = _quote("/" + path.relative_to(source).as_posix())
        commands += [f"sif {target} uid 0", f"sif {target} gid 0"]
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs", encoding="utf-8",
                                     errors="surrogateescape") as script:  # fmt: skip
        script.write("\n".join(commands) + "\n")
        script.flush()
        result = run(["debugfs", "-w", "-f", script.name, str(image)], what=f"{label}: owners")
    errors = [line for line in _debugfs_errors(result.stderr) if not line.startswith("debugfs:")]
    if errors:
        raise DiskError(f"{label}: setting owners failed: {errors[0]}")


@dataclass(frozen=True)
class Ext4Entry:
    name: str
    kind: str  # file | dir | symlink | other
    mode: int  # permission bits
    uid: int
    gid: int
    size: int
    inode: int


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class Ext4Reader:
    """Reads one ext4 file system inside a disk image (``offset`` bytes in) via debugfs."""

    def __init__(self, image: Path, offset: int = 0, *, label: str = "ext4") -> None:
        if "?" in str(image):
            raise DiskError(f"{image}: debugfs cannot open a path with '?' in it")
        self.spec = f"{image}?offset={offset}" if offset else str(image)
        self.label = label

    def _request(self, request: str) -> bytes:
        result = run(["debugfs", "-R", request, self.spec], what=f"{self.label}: {request}")
        errors = _debugfs_errors(result.stderr)
        if errors:
            message = errors[0]
            if "not found" in message.lower() or "No such file" in message:
                raise FileNotFoundError(errno.ENOENT, message)
            raise DiskError(f"{self.label}: debugfs {request}: {message}")
        return result.stdout

    def listdir(self, path: str = "/") -> list[Ext4Entry]:
        """The entries of a directory (without ``.`` and ``..``)."""
        try:
            output = self._request(f"ls -p {_quote(path)}")
        except FileNotFoundError as exc:
            raise DiskError(f"{self.label}: {path} does not exist") from exc
        entries = []
        for line in output.decode("utf-8", errors="surrogateescape").splitlines():
            fields = line.split("/")
            if len(fields) < 8 or fields[0] != "" or fields[5] in (".", ".."):
                continue
            mode = int(fields[2], 8)
            size = int(fields[6]) if fields[6].isdigit() else 0
            uid, gid, inode = int(fields[3]), int(fields[4]), int(fields[1])
            entries.append(
                Ext4Entry(fields[5], _kind(mode), stat.S_IMODE(mode), uid, gid, size, inode)
            )
        if not entries and not output.strip():
            raise DiskError(f"{self.label}: {path} is not a directory")
        return sorted(entries, key=lambda entry: entry.name)

    def stat(self, path: str) -> Ext4Entry | None:
        parts = [part for part in path.split("/") if part]
        if not parts:
            return Ext4Entry("/", "dir", 0o755, 0, 0, 0, 2)
        try:
            siblings = self.listdir("/" + "/".join(parts[:-1]))
        except DiskError:
            return None
        return next((entry for entry in siblings if entry.name == parts[-1]), None)

    def read_bytes(self, path: str, *, max_bytes: int = 64 * 1024 * 1024) -> bytes:
        entry = self.stat(path)
        if entry is None or entry.kind != "file":
            raise DiskError(f"{self.label}: {path} is not a file on the partition")
        if entry.size > max_bytes:
            raise DiskError(f"{self.label}: {path} is {entry.size} bytes, over {max_bytes} bytes")
        data = self._request(f"cat {_quote(path)}")
        if len(data) != entry.size:
            raise DiskError(f"{self.label}: read {len(data)} of {entry.size} bytes of {path}")
        return data

    def copy_out(self, path: str, dest: Path) -> None:
        """Copy a (large) file out of the partition to ``dest``."""
        entry = self.stat(path)
        if entry is None or entry.kind != "file":
            raise DiskError(f"{self.label}: {path} is not a file on the partition")
        self._request(f"dump {_quote(path)} {_quote(str(dest))}")
        if dest.stat().st_size != entry.size:
            raise DiskError(f"{self.label}: copied {dest.stat().st_size} of {entry.size} bytes")


# ------------------------------------------------------------------ the ESP (FAT32)


def _check_fat_name(path: Path, label: str) -> None:
    bad = set(path.name) & _FAT_FORBIDDEN or any(ord(c) < 32 for c in path.name)
    if bad or path.name.endswith((" ", ".")):
        raise DiskError(f"{label}: {path.name!r} cannot be a FAT file name")


def check_esp_tree(source: Path, *, label: str) -> list[tuple[Path, bool]]:
    """The ESP staging folder's entries as ``(path, is_dir)``; refuses what FAT cannot
    hold (symlinks, names with characters FAT forbids, names differing only in case)."""
    entries = []
    seen: set[str] = set()
    for path, info in walk_tree(source, label=label):
        _check_fat_name(path, label)
        if stat.S_ISLNK(info.st_mode):
            raise DiskError(f"{label}: {path} is a symlink; FAT has none", hint="copy the file")
        folded = path.relative_to(source).as_posix().casefold()
        if folded in seen:
            raise DiskError(f"{label}: {path} differs from another name only in case")
        seen.add(folded)
        entries.append((path, stat.S_ISDIR(info.st_mode)))
    return entries


def make_esp(source: Path, image: Path, *, label: str, size: int) -> None:
    """``image`` becomes a FAT32 file system of ``size`` bytes holding ``source``'s tree."""
    if len(label) > 11 or not label.isascii():
        raise DiskError(f"FAT label {label!r} is longer than 11 characters")
    entries = check_esp_tree(source, label=label)
    _truncate(image, size)
    run(["mkfs.vfat", "-F", "32", "-S", str(SECTOR), "-n", label, str(image)],
        what=f"{label}: making the file system")  # fmt: skip
    directories: list[str] = []
    files: list[tuple[Path, str]] = []
    for path, is_dir in entries:
        target = "::/" + path.relative_to(source).as_posix()
        if is_dir:
            directories.append(target)
        else:
            files.append((path, target))
    if directories:
        run(["mmd", "-i", str(image), *sorted(directories)], what=f"{label}: making folders")
    for path, target in files:
        run(["mcopy", "-i", str(image), "-m", "-Q", "-o", str(path), target],
            what=f"{label}: copying {path.name}")  # fmt: skip


class FatReader:
    """Reads the FAT file system inside a disk image (``offset`` bytes in) with mtools."""

    def __init__(self, image: Path, offset: int = 0, *, label: str = "vfat") -> None:
        self.spec = f"{image}@@{offset}" if offset else str(image)
        self.label = label

    def listdir(self, path: str = "/") -> list[str]:
        result = run(["mdir", "-b", "-i", self.spec, "::/" + path.strip("/")],
                     what=f"{self.label}: listing {path}", check=False)  # fmt: skip
        if result.returncode != 0:
            raise DiskError(f"{self.label}: {path} does not exist")
        prefix = "::/" + path.strip("/")
        names = []
        for line in result.stdout.decode(errors="replace").splitlines():
            name = line.strip()
            if name.startswith(prefix):
                name = name[len(prefix) :].lstrip("/")
            if name:
                names.append(name)
        return sorted(names)

    def read_bytes(self, path: str) -> bytes:
        result = run(["mcopy", "-i", self.spec, "-n", "::/" + path.strip("/"), "-"],
                     what=f"{self.label}: reading {path}", check=False)  # fmt: skip
        if result.returncode != 0:
            raise DiskError(f"{self.label}: {path} is not a file on the partition")
        return result.stdout


# ------------------------------------------------------------------ placing file systems


def copy_sparse(source: Path, dest_fd: int, offset: int) -> int:
    """Copy ``source`` into ``dest_fd`` at ``offset``, writing only its data extents
    (holes stay holes in the destination). Returns the bytes written."""
    written = 0
    with source.open("rb") as handle:
        fd = handle.fileno()
        size = os.fstat(fd).st_size
        position = 0
        while position < size:
            try:
                data = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            written += _copy_range(fd, dest_fd, data, hole - data, offset + data)
            position = hole
    return written


def _copy_range(src: int, dst: int, start: int, length: int, dest_start: int) -> int:
    done = 0
    while done < length:
        try:
            count = os.copy_file_range(src, dst, length - done, start + done, dest_start + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            count = 0
        if count == 0:  # no kernel copy here: read and write
            chunk = os.pread(src, min(length - done, 4 * 1024 * 1024), start + done)
            if not chunk:
                raise DiskError("a file system image shrank while it was copied")
            count = os.pwrite(dst, chunk, dest_start + done)
        done += count
    return done
