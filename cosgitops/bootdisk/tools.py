"""The external tools the disk writer drives, and its errors.

Every tool runs without privileges on plain files: ``mkfs.ext4 -d`` and ``debugfs`` for
ext4, ``mkfs.vfat`` and mtools for the ESP, ``sgdisk`` for the partition table and
``qemu-img`` for qcow2. A missing tool is reported with the Debian package to install.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from cosgitops.errors import CosgitopsError

PACKAGES = {
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "mdir": "mtools",
    "sgdisk": "gdisk",
    "qemu-img": "qemu-utils",
    "tar2sqfs": "squashfs-tools-ng",
    "rdsquashfs": "squashfs-tools-ng",
}
_SBIN = ("/usr/sbin", "/sbin")


class DiskError(CosgitopsError):
    """A disk image could not be written or read."""


class DiskSizeError(DiskError):
    """The requested disk size cannot hold what it must."""


class BootImageError(DiskError):
    """The OS image cannot boot from a disk (no kernel, initrd, boot integration, platform)."""


def tool(name: str) -> str:
    """The absolute path of a tool (``/usr/sbin`` is searched too: it is not on every PATH)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if found is None:
        package = PACKAGES.get(name, name)
        raise DiskError(f"{name} is not installed", hint=f"install it (Debian package: {package})")
    return found


def require(*names: str) -> None:
    for name in names:
        tool(name)


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the tools: C locale, no user mtools config, no fake times."""
    env = {key: value for key, value in os.environ.items() if key != "SOURCE_DATE_EPOCH"}
    env.update({"LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull})
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str],
    *,
    what: str,
    input_bytes: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool; a failure raises :class:`DiskError` with its last output lines."""
    argv = [tool(argv[0]), *argv[1:]]
    result = subprocess.run(
        argv, input=input_bytes, capture_output=True, check=False, env=tool_env(env)
    )
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise DiskError(
            f"{what}: {Path(argv[0]).name} failed (exit code {result.returncode}): {output[-800:]}"
        )
    return result


@functools.cache
def e2fsprogs_version() -> tuple[int, ...]:
    """mke2fs's version, e.g. (1, 47, 0)."""
    result = subprocess.run(
        [tool("mkfs.ext4"), "-V"], capture_output=True, check=False, env=tool_env()
    )
    text = (result.stderr + result.stdout).decode(errors="replace")
    match = re.search(r"mke2fs (\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return (0,)
    return tuple(int(part) for part in match.groups() if part is not None)
