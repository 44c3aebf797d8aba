"""GRUB's environment block (``grubenv``): the boot state GRUB reads before it boots.

The file is exactly 1024 bytes: the line ``# GRUB Environment Block``, ``name=value``
lines, then ``#`` padding. GRUB rewrites it in place (``save_env``) to count tentative
boots; the agent replaces it whole (temp file, fsync, rename), so GRUB and a power cut
only ever see the old or the new block. Values are escaped as GRUB does: a backslash or
a newline is preceded by a backslash.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cosgitops.errors import DeviceError
from cosgitops.fsutil import atomic_write_bytes

SIZE = 1024
HEADER = b"# GRUB Environment Block\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\\n")


def parse_grubenv(data: bytes) -> dict[str, str]:
    """The variables of an environment block; raise :class:`DeviceError` if it is not one."""
    if not data.startswith(HEADER) or len(data) != SIZE:
        raise DeviceError(
            f"not a GRUB environment block ({len(data)} bytes)",
            hint="a grubenv file is exactly 1024 bytes starting with '# GRUB Environment Block'",
        )
    text = data[len(HEADER) :].decode("utf-8", errors="replace")
    values: dict[str, str] = {}
    line = ""
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            line += text[index + 1]
            index += 2
            continue
        if char == "\n":
            if line and not line.startswith("#") and "=" in line:
                name, _, value = line.partition("=")
                values[name] = value
            line = ""
        else:
            line += char
        index += 1
    return values


def render_grubenv(values: Mapping[str, str]) -> bytes:
    body = HEADER + "".join(
        f"{name}={_escape(value)}\n" for name, value in sorted(values.items())
    ).encode("utf-8")
    if len(body) > SIZE:
        raise DeviceError(f"the GRUB environment does not fit in {SIZE} bytes ({len(body)})")
    return body + b"#" * (SIZE - len(body))


def read_grubenv(path: Path) -> dict[str, str]:
    """The variables of ``path``; an absent file is an empty environment."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        return parse_grubenv(data)
    except DeviceError as error:
        raise DeviceError(f"{path}: {error.message}", hint=error.hint) from None


def write_grubenv(path: Path, values: Mapping[str, str]) -> None:
    for name in values:
        if not name or "=" in name or "\n" in name:
            raise DeviceError(f"invalid GRUB variable name {name!r}")
    atomic_write_bytes(path, render_grubenv(values))
