"""Trees inside the device root, walked without ever following a link.

Everything here works on directory descriptors opened with ``O_NOFOLLOW`` relative to
their parent, so a symlink planted anywhere in the device root (by a hostile layer, a
careless admin or another program) can never redirect a read, a write or a deletion
outside it. Walks are iterative and hold one descriptor at a time (they climb back
with ``..`` and check the directory is the one they came from), so a tree of any depth
or path length is handled: no ``RecursionError``, no ``EMFILE``, no ``ENAMETOOLONG``.

The one rule for special files (docs/device.md, "What a slot may hold"): a slot holds
regular files, directories, symlinks and hard links. Device nodes, FIFOs and sockets
are refused when a layer is unpacked, when a slot is verified and when one is copied.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from cosgitops.errors import DeviceError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024
_IS_ROOT = os.geteuid() == 0


class ForeignEntryError(DeviceError):
    """Something in the device root is not what the agent made (a link, a wrong type)."""


class SpecialFileError(DeviceError):
    """A slot holds a device node, a FIFO or a socket."""


def kind_name(mode: int) -> str:
    """``regular file``, ``directory``, ``FIFO``, ... for messages."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return f"file of type {stat.S_IFMT(mode):o}"


def allowed_in_slot(mode: int) -> bool:
    """The special-file rule: regular files, directories and symlinks (and hard links,
    which are regular files with more than one name)."""
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)


def lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _ident(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def display(parts: Sequence[str]) -> str:
    return "/".join(parts)


def open_dir(
    base: int | str | os.PathLike[str],
    parts: Sequence[str],
    *,
    create: bool = False,
    mode: int = 0o755,
    shown: str = "",
) -> int | None:
    """A descriptor for ``base/parts...``, each component opened without following links.

    ``base`` (a path or a directory descriptor) may itself be reached through links (it
    is where the admin put the device root); nothing below it is followed. A component
    that is a symlink or not a directory raises :class:`ForeignEntryError`; a missing
    one is created with ``create`` and otherwise returns None. The caller closes the
    descriptor.
    """
    if isinstance(base, int):
        fd = os.dup(base)
    else:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            try:
                next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                next_fd = _open_existing(part, fd, parts[: index + 1], shown)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _foreign(fd, part, parts[: index + 1], shown) from exc
                raise
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def _open_existing(part: str, fd: int, parts: Sequence[str], shown: str) -> int:
    try:
        return os.open(part, DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _foreign(fd, part, parts, shown) from exc
        raise


def _foreign(fd: int, part: str, parts: Sequence[str], shown: str) -> ForeignEntryError:
    info = lstat_at(part, fd)
    kind = kind_name(info.st_mode) if info else "entry"
    where = f"{shown.rstrip('/')}/{display(parts)}" if shown else display(parts)
    return ForeignEntryError(
        f"{where} is a {kind}, not a directory the agent made; the agent never follows "
        "links inside the device root",
        hint=f"move {where} out of the device root (the agent recreates it as a directory)",
    )


@contextlib.contextmanager
def opened_dir(
    base: int | str | os.PathLike[str],
    parts: Sequence[str],
    *,
    create: bool = False,
    shown: str = "",
) -> Iterator[int | None]:
    fd = open_dir(base, parts, create=create, shown=shown)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


# ---------------------------------------------------------------- walking


@dataclass
class Visit:
    """One entry of a walk: its path below the walked directory, its ``lstat`` and the
    descriptor of its parent directory (valid until the walk moves on)."""

    path: tuple[str, ...]
    info: os.stat_result
    parent_fd: int
    leaving: bool = False  # a directory's second visit, after its children

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.info.st_mode)


@dataclass
class _Frame:
    names: list[str]
    path: tuple[str, ...]
    ident: tuple[int, int]
    info: os.stat_result | None = None
    extra: dict[str, int] = field(default_factory=dict)


def _listing(fd: int) -> list[str]:
    return sorted(os.listdir(fd), key=os.fsencode, reverse=True)


class _Cursor:
    """One open directory descriptor that moves down by name and up by ``..``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def down(self, name: str) -> tuple[int, int]:
        child = os.open(name, DIR_FLAGS, dir_fd=self.fd)
        os.close(self.fd)
        self.fd = child
        return _ident(os.fstat(child))

    def up(self, expected: tuple[int, int]) -> None:
        parent = os.open("..", DIR_FLAGS, dir_fd=self.fd)
        os.close(self.fd)
        self.fd = parent
        if _ident(os.fstat(parent)) != expected:
            raise DeviceError(
                "a directory was moved while the agent walked it",
                hint="another program is changing the device root; stop it and run again",
            )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def walk(
    dir_fd: int,
    *,
    post_order: bool = False,
    before_descend: Callable[[Visit], None] | None = None,
) -> Iterator[Visit]:
    """Every entry below ``dir_fd`` in a stable order (sorted by name bytes, a
    directory before its children), never following a link; with ``post_order`` each
    directory is visited again after its children (``leaving``). ``before_descend``
    may prepare a directory (make it readable) before the walk enters it."""
    cursor = _Cursor(os.dup(dir_fd))
    try:
        stack = [_Frame(_listing(cursor.fd), (), _ident(os.fstat(cursor.fd)))]
        while stack:
            frame = stack[-1]
            if not frame.names:
                stack.pop()
                if not stack:
                    break
                cursor.up(stack[-1].ident)
                if post_order and frame.info is not None:
                    yield Visit(frame.path, frame.info, cursor.fd, leaving=True)
                continue
            name = frame.names.pop()
            info = lstat_at(name, cursor.fd)
            if info is None:
                continue
            visit = Visit((*frame.path, name), info, cursor.fd)
            yield visit
            if stat.S_ISDIR(info.st_mode):
                if before_descend is not None:
                    before_descend(visit)
                ident = cursor.down(name)
                stack.append(_Frame(_listing(cursor.fd), visit.path, ident, info))
    finally:
        cursor.close()


# ---------------------------------------------------------------- removing


def remove_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` (a file, a link or a whole tree) from ``dir_fd``; links are
    removed, never followed. Works for any depth and for read-only directories."""
    info = lstat_at(name, dir_fd)
    if info is None:
        return
    if not stat.S_ISDIR(info.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return
    _make_writable(dir_fd, name, info)
    top = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        for visit in walk(top, post_order=True, before_descend=_prepare_removal):
            if visit.leaving:
                os.rmdir(visit.name, dir_fd=visit.parent_fd)
            elif not visit.is_dir:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(visit.name, dir_fd=visit.parent_fd)
    finally:
        os.close(top)
    os.rmdir(name, dir_fd=dir_fd)


def _prepare_removal(visit: Visit) -> None:
    _make_writable(visit.parent_fd, visit.name, visit.info)


def _make_writable(dir_fd: int, name: str, info: os.stat_result) -> None:
    # root ignores directory permissions; anyone else needs rwx to empty a directory
    if _IS_ROOT or (info.st_mode & 0o700) == 0o700:
        return
    with contextlib.suppress(OSError):
        os.chmod(name, stat.S_IMODE(info.st_mode) | 0o700, dir_fd=dir_fd)


def remove_path(base: int | str | os.PathLike[str], parts: Sequence[str]) -> bool:
    """Remove ``base/parts`` without following links on the way; True if it existed."""
    if not parts:
        raise ValueError("refusing to remove the base itself")
    parent = open_dir(base, parts[:-1])
    if parent is None:
        return False
    try:
        existed = lstat_at(parts[-1], parent) is not None
        remove_at(parent, parts[-1])
        return existed
    finally:
        os.close(parent)


# ---------------------------------------------------------------- digest and copy


def check_slot_entry(visit: Visit, what: str) -> None:
    """The special-file rule, applied to an entry of a stored slot."""
    if not allowed_in_slot(visit.info.st_mode):
        raise SpecialFileError(
            f"{what} holds a {kind_name(visit.info.st_mode)} at /{display(visit.path)}; "
            "slots hold only regular files, directories, symlinks and hard links",
            hint="the slot was changed after it was installed; restore it with "
            "`cosgitops device reset` or install the release again",
        )


def tree_digest_fd(dir_fd: int, *, what: str = "the slot") -> str:
    """A digest over an unpacked tree: names, types, modes, owners, contents, link targets.

    Timestamps are left out: they carry no meaning for what the slot runs. Special files
    are refused (:class:`SpecialFileError`).
    """
    digest = hashlib.sha256()
    for visit in walk(dir_fd):
        check_slot_entry(visit, what)
        info = visit.info
        name = b"/".join(os.fsencode(part) for part in visit.path)
        kind = stat.S_IFMT(info.st_mode)
        header = f"{kind:o} {stat.S_IMODE(info.st_mode):o} {info.st_uid} {info.st_gid} ".encode()
        if stat.S_ISREG(info.st_mode):
            content = hashlib.sha256()
            fd = os.open(
                visit.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=visit.parent_fd
            )
            with os.fdopen(fd, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    content.update(chunk)
            extra = content.hexdigest().encode()
        elif stat.S_ISLNK(info.st_mode):
            extra = os.fsencode(os.readlink(visit.name, dir_fd=visit.parent_fd))
        else:
            extra = b""
        digest.update(header + name + b"\x00" + extra + b"\n")
    return "sha256:" + digest.hexdigest()


def copy_tree_fd(source_fd: int, target_fd: int, *, what: str = "the slot") -> None:
    """Copy everything below ``source_fd`` into the empty directory ``target_fd``:
    contents, modes, owners (as root), times, symlinks as links and hard links as hard
    links. Special files are refused; nothing is followed on either side."""
    target = _Cursor(os.dup(target_fd))
    idents: list[tuple[int, int]] = [_ident(os.fstat(target.fd))]
    links: dict[tuple[int, int], tuple[str, ...]] = {}
    try:
        for visit in walk(source_fd, post_order=True):
            info, name = visit.info, visit.name
            if visit.leaving:
                # back in the parent: the directory's own metadata goes on last, so a
                # read-only directory still accepted its children
                idents.pop()
                target.up(idents[-1])
                _set_metadata(target.fd, name, info)
                continue
            check_slot_entry(visit, what)
            if visit.is_dir:
                os.mkdir(name, 0o700, dir_fd=target.fd)
                idents.append(target.down(name))
                continue
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(name, dir_fd=visit.parent_fd), name, dir_fd=target.fd)
            elif info.st_nlink > 1 and _ident(info) in links:
                _hardlink_to(target_fd, links[_ident(info)], target.fd, name)
                continue
            else:
                _copy_file(visit.parent_fd, name, target.fd)
                if info.st_nlink > 1:
                    links[_ident(info)] = visit.path
            _set_metadata(target.fd, name, info)
    finally:
        target.close()


def _hardlink_to(root_fd: int, first: tuple[str, ...], dir_fd: int, name: str) -> None:
    parent = open_dir(root_fd, first[:-1])
    assert parent is not None
    try:
        os.link(first[-1], name, src_dir_fd=parent, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(parent)


def _copy_file(source_dir: int, name: str, target_dir: int) -> None:
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=source_dir)
    try:
        target = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=target_dir,
        )
        try:
            while chunk := os.read(source, _CHUNK):
                view = memoryview(chunk)
                while view:
                    written = os.write(target, view)
                    view = view[written:]
        finally:
            os.close(target)
    finally:
        os.close(source)


def _set_metadata(dir_fd: int, name: str, info: os.stat_result) -> None:
    if _IS_ROOT:
        os.chown(name, info.st_uid, info.st_gid, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(name, stat.S_IMODE(info.st_mode), dir_fd=dir_fd)
    with contextlib.suppress(OSError):
        os.utime(
            name,
            ns=(info.st_atime_ns, info.st_mtime_ns),
            dir_fd=dir_fd,
            follow_symlinks=False,
        )
