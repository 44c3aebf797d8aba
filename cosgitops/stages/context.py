"""Where a stage runs: the root it changes, how paths map into it, how commands run in
it, and what it knows about the system (users, groups, OS, machine id).

With the root ``/`` (a live system) commands run directly and the running kernel is
changed too (host name, sysctl values, modules, units started). With another root
(``--root R``, how tests and image builds apply a stage), files are written under R
and commands run inside ``chroot R`` in their own mount, UTS and IPC namespaces, so a
command that mounts something or sets the host name cannot touch the machine running
the stage; nothing is done to the running kernel.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import CosgitopsError
from cosgitops.fsutil import atomic_writer

Pointer = tuple[str | int, ...]

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Go's names for machine architectures (only_arch matches these, as yip does)
_GO_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "i386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


class StepError(CosgitopsError):
    """A step (or one part of it) cannot be applied. ``pointer`` says where inside the
    step, so the report points at the line that caused it."""

    traceback: str | None = None  # set for an internal error (a bug), kept in the record

    def __init__(self, message: str, *, hint: str | None = None, pointer: Pointer = ()):
        super().__init__(message, hint=hint)
        self.pointer = pointer


class Account(NamedTuple):
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


class Group(NamedTuple):
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass
class RunContext:
    root: Path
    limits: Limits = DEFAULT_LIMITS
    disks: Sequence[Path] = ()  # disk images where layout steps look for labels
    # users and groups that earlier parts of the step being prepared will create
    pending_users: set[str] = field(default_factory=set)
    pending_groups: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.root = Path(os.path.abspath(self.root))
        self.live = os.path.realpath(self.root) == "/"

    # ---------------------------------------------------------------- paths

    def path(self, device_path: Any, *, pointer: Pointer = (), follow: bool = True) -> Path:
        """The host path of ``device_path`` inside the root. Symlinks are followed the way
        they would be inside ``chroot R`` (an absolute link points into R); ``..`` in the
        path, or a relative link that climbs above the root, is refused."""
        text = "" if device_path is None else str(device_path)
        if not text.startswith("/"):
            raise StepError(
                f"path {text!r} is not absolute",
                hint="write the full path on the device, e.g. /etc/motd",
                pointer=pointer,
            )
        if "\0" in text:
            raise StepError(f"path {text!r} holds a NUL byte", pointer=pointer)
        if ".." in text.split("/"):
            raise StepError(
                f"path {text!r} escapes the root with '..'",
                hint="write the path without '..'",
                pointer=pointer,
            )
        inside: list[str] = []
        queue = [part for part in text.split("/") if part not in ("", ".")]
        hops = 0
        while queue:
            name = queue.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if not inside:
                    raise StepError(
                        f"path {text!r} escapes the root through a symlink",
                        hint="a relative symlink on the way climbs above /",
                        pointer=pointer,
                    )
                inside.pop()
                continue
            candidate = self.root.joinpath(*inside, name)
            if (follow or queue) and candidate.is_symlink():
                hops += 1
                if hops > 40:
                    raise StepError(f"path {text!r}: too many levels of symlinks", pointer=pointer)
                target = os.readlink(candidate)
                if target.startswith("/"):
                    inside = []
                queue = [part for part in target.split("/") if part] + queue
                continue
            inside.append(name)
        return self.root.joinpath(*inside)

    def exists(self, device_path: str) -> bool:
        try:
            return self.path(device_path).exists()
        except StepError:
            return False

    def device_path(self, host_path: Path) -> str:
        """The path inside the root that ``host_path`` stands for (for messages)."""
        if self.live:
            return str(host_path)
        relative = os.path.relpath(host_path, self.root)
        return "/" if relative == "." else "/" + relative

    # ---------------------------------------------------------------- writing

    def write_file(
        self,
        target: Path,
        data: bytes,
        *,
        mode: int,
        uid: int | None = None,
        gid: int | None = None,
        parents: tuple[int, int, int] | None = None,
    ) -> None:
        """Replace ``target`` atomically with ``data``, mode and owner set before the
        rename, so nobody sees a half-written file or one with the wrong owner."""
        if parents is not None:
            self.make_parents(target.parent, *parents)
        with atomic_writer(target, mode, uid=uid, gid=gid) as handle:
            handle.write(data)

    def update_file(self, target: Path, data: bytes, *, mode: int = 0o644) -> bool:
        """Write ``data`` to ``target`` unless it already holds exactly that; an existing
        file keeps its mode and owner. True when it was written."""
        state = file_state(target)
        uid: int | None = None
        gid: int | None = None
        if state is not None:
            if state[3] == data:
                return False
            mode, uid, gid = state[0], state[1], state[2]
        self.write_file(
            target, data, mode=mode, uid=uid, gid=gid, parents=(0o755, os.getuid(), os.getgid())
        )
        return True

    def make_parents(self, folder: Path, mode: int, uid: int, gid: int) -> list[Path]:
        """Create the missing folders up to ``folder`` (inside the root), each with
        ``mode`` and owner; the folders created."""
        missing: list[Path] = []
        current = folder
        while not current.exists() and current not in (self.root, current.parent):
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            os.mkdir(path)
            os.chmod(path, mode)
            os.chown(path, uid, gid)
        return list(reversed(missing))

    # ---------------------------------------------------------------- commands

    def command(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        proc: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` in the root (output and errors combined); never raises for a
        non-zero exit, raises :class:`StepError` when it cannot start. ``proc`` gives a
        tool that needs /proc (systemd-firstboot) its own inside another root; commands
        of a step never get one, so they cannot reach the machine's kernel settings."""
        full = list(argv)
        environment = (
            dict(os.environ)
            if self.live
            else {"PATH": _PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        )
        if env:
            environment.update(env)
        if not self.live:
            prefix = ["chroot", str(self.root)]
            unshare = shutil.which("unshare")
            if unshare:
                namespaces = ["--mount", "--uts", "--ipc"]
                if proc:
                    namespaces += ["--fork", "--pid", f"--mount-proc={self.root / 'proc'}"]
                prefix = [unshare, *namespaces, "--", *prefix]
            full = prefix + full
        elif not shutil.which(full[0], path=environment.get("PATH", _PATH)) and "/" not in full[0]:
            raise StepError(f"{full[0]} is not installed on this system")
        try:
            return subprocess.run(
                full,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=environment,
                timeout=timeout or self.limits.stage_command_timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise StepError(
                f"{' '.join(argv)[:200]} did not finish within {error.timeout:.0f}s",
                hint="raise Limits.stage_command_timeout_seconds, or make the command shorter",
            ) from error
        except OSError as error:
            raise StepError(f"cannot run {argv[0]}: {error.strerror or error}") from error

    def shell(
        self, script: str, *, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """``sh -c script``, as yip runs commands and ``if`` conditions."""
        return self.command(["sh", "-c", script], timeout=timeout)

    def has_tool(self, name: str) -> bool:
        for folder in _PATH.split(":"):
            with contextlib.suppress(StepError):
                candidate = self.path(f"{folder}/{name}")
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return True
        return False

    def tool(self, name: str, *, pointer: Pointer = ()) -> str:
        """``name``, after checking the root has it."""
        if not self.has_tool(name):
            raise StepError(
                f"{name} is not installed in {'this system' if self.live else self.root}",
                hint=f"add the package that provides {name} to the image",
                pointer=pointer,
            )
        return name

    # ---------------------------------------------------------------- the system's data

    def read_text(self, device_path: str) -> str | None:
        try:
            return self.path(device_path).read_text(encoding="utf-8", errors="replace")
        except (OSError, StepError):
            return None

    def accounts(self) -> dict[str, Account]:
        result: dict[str, Account] = {}
        for line in (self.read_text("/etc/passwd") or "").splitlines():
            parts = line.split(":")
            if len(parts) < 7 or not parts[2].isdigit() or not parts[3].isdigit():
                continue
            result.setdefault(
                parts[0],
                Account(parts[0], int(parts[2]), int(parts[3]), parts[4], parts[5], parts[6]),
            )
        return result

    def groups(self) -> dict[str, Group]:
        result: dict[str, Group] = {}
        for line in (self.read_text("/etc/group") or "").splitlines():
            parts = line.split(":")
            if len(parts) < 4 or not parts[2].isdigit():
                continue
            members = tuple(m for m in parts[3].split(",") if m)
            result.setdefault(parts[0], Group(parts[0], int(parts[2]), members))
        return result

    def shadow(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for line in (self.read_text("/etc/shadow") or "").splitlines():
            parts = line.split(":")
            if len(parts) >= 2:
                result.setdefault(parts[0], parts)
        return result

    def os_release(self) -> dict[str, str]:
        text = self.read_text("/etc/os-release") or self.read_text("/usr/lib/os-release") or ""
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                values[key.strip()] = value.strip().strip("\"'")
        return values

    def machine_id(self) -> str:
        for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            text = (self.read_text(candidate) or "").strip()
            if text and text != "uninitialized":
                return text
        return ""

    def hostname(self) -> str:
        if self.live:
            return platform.node()
        return (self.read_text("/etc/hostname") or "").strip()

    def arch(self) -> str:
        machine = platform.machine()
        return _GO_ARCH.get(machine, machine)

    def system_values(self) -> dict[str, Any]:
        """What yip's templates see under ``.Values`` (a subset of its sysinfo data)."""
        release = self.os_release()
        machine_id = self.machine_id()
        uname = platform.uname()
        values: dict[str, Any] = {
            "node": {"hostname": self.hostname(), "machineid": machine_id},
            "os": {
                "name": release.get("PRETTY_NAME", ""),
                "vendor": release.get("ID", ""),
                "version": release.get("VERSION_ID", ""),
                "release": (self.read_text("/etc/debian_version") or "").strip()
                if release.get("ID") == "debian"
                else release.get("VERSION", ""),
                "architecture": self.arch(),
            },
            "kernel": {
                "release": uname.release,
                "version": uname.version,
                "architecture": uname.machine,
            },
            "ProtectedID": protected_id(machine_id),
            "Random": random_string(32),
        }
        return values


def protected_id(machine_id: str, app: str = "yip") -> str:
    """The machine id hashed for one application (HMAC-SHA256 keyed by the id, as the Go
    machineid package yip uses computes it), so it can be shown without revealing the id."""
    if not machine_id:
        return ""
    import hashlib
    import hmac

    return hmac.new(machine_id.encode(), app.encode(), hashlib.sha256).hexdigest()


def random_string(length: int) -> str:
    import secrets
    import string

    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def file_state(path: Path) -> tuple[int, int, int, bytes] | None:
    """(mode, uid, gid, content) of a regular file, None when it is not one."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, path.read_bytes()
