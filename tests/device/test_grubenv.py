"""grubenv: GRUB's 1024-byte environment block, read and written by the agent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cosgitops.device.grubenv import (
    HEADER,
    SIZE,
    parse_grubenv,
    read_grubenv,
    render_grubenv,
    write_grubenv,
)
from cosgitops.errors import DeviceError
from tests.helpers.tools import require


def test_round_trip_with_escapes(tmp_path: Path) -> None:
    values = {"cos_active": "/slots/a.squashfs", "odd": "back\\slash\nand newline", "empty": ""}
    path = tmp_path / "grubenv"
    write_grubenv(path, values)
    data = path.read_bytes()
    assert len(data) == SIZE and data.startswith(HEADER) and data.endswith(b"#")
    assert read_grubenv(path) == values


def test_grub_editenv_reads_what_we_write(tmp_path: Path) -> None:
    require("grub-editenv")
    path = tmp_path / "grubenv"
    write_grubenv(path, {"cos_active": "/slots/a.squashfs", "cos_tries": "xx"})
    listed = subprocess.run(
        ["grub-editenv", str(path), "list"], capture_output=True, text=True, check=True
    ).stdout
    assert "cos_active=/slots/a.squashfs" in listed and "cos_tries=xx" in listed
    subprocess.run(["grub-editenv", str(path), "set", "cos_tries=x"], check=True)
    assert read_grubenv(path)["cos_tries"] == "x"


def test_absent_file_is_empty(tmp_path: Path) -> None:
    assert read_grubenv(tmp_path / "missing") == {}


@pytest.mark.parametrize("data", [b"", b"# GRUB Environment Block\n", b"x" * SIZE])
def test_not_an_environment_block(data: bytes) -> None:
    with pytest.raises(DeviceError, match="not a GRUB environment block"):
        parse_grubenv(data)


def test_too_large_is_refused() -> None:
    with pytest.raises(DeviceError, match="does not fit"):
        render_grubenv({"big": "x" * SIZE})


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="invalid GRUB variable"):
        write_grubenv(tmp_path / "grubenv", {"a=b": "c"})
