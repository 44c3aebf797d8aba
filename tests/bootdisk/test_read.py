"""Reading an ext4 partition that a guest left mid-journal (a power cut): the changes
still in its jbd2 journal are seen, and the disk itself is not changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cosgitops.bootdisk.filesystems import Ext4Reader
from cosgitops.bootdisk.gpt import GptPartition
from cosgitops.bootdisk.read import needs_journal_replay, replayed_copy
from tests.helpers.tools import require_root

LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def _cut_off_file_system(tmp_path: Path) -> Path:
    """An ext4 file system copied while mounted: what the disk holds after a power cut."""
    image, mountpoint, snapshot = tmp_path / "fs.img", tmp_path / "mnt", tmp_path / "cut.img"
    with open(image, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        (mountpoint / "state.json").write_text("old\n")
        subprocess.run(["sync"], check=True)
        (mountpoint / "state.json.tmp").write_text("new\n")
        (mountpoint / "state.json.tmp").replace(mountpoint / "state.json")
        subprocess.run(["sync"], check=True)
        subprocess.run(["cp", "--sparse=always", str(image), str(snapshot)], check=True)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    return snapshot


def test_a_cut_off_file_system_is_read_after_its_journal_is_replayed(tmp_path: Path) -> None:
    require_root()
    disk = _cut_off_file_system(tmp_path)
    before = disk.read_bytes()
    assert needs_journal_replay(disk, 0), "the copy of a mounted ext4 holds an open journal"
    sectors = disk.stat().st_size // 512
    partition = GptPartition(1, "COS_STATE", LINUX_DATA, "", 0, sectors - 1, 0, 512)
    copy = replayed_copy(disk, partition)
    assert not needs_journal_replay(copy, 0)
    assert Ext4Reader(copy, label="COS_STATE").read_bytes("/state.json") == b"new\n"
    assert disk.read_bytes() == before, "the disk stays as the guest left it"
    assert replayed_copy(disk, partition) == copy, "an unchanged disk is replayed once"


def test_a_cleanly_unmounted_file_system_needs_no_replay(tmp_path: Path) -> None:
    image = tmp_path / "fs.img"
    with open(image, "wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    assert not needs_journal_replay(image, 0)
    assert not needs_journal_replay(image, 4096), "no ext4 superblock there"


def test_a_sparse_copy_keeps_the_bytes_and_the_holes(tmp_path: Path) -> None:
    from cosgitops.bootdisk.read import copy_sparse

    source = tmp_path / "disk.img"
    with open(source, "wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(1 << 20)
        handle.write(b"first")
        handle.seek(40 << 20)
        handle.write(b"second")
    whole, part = tmp_path / "whole.img", tmp_path / "part.img"
    copy_sparse(source, whole)
    assert whole.read_bytes() == source.read_bytes()
    assert whole.stat().st_blocks * 512 < 16 << 20, "the holes stay holes"
    copy_sparse(source, part, offset=32 << 20, size=16 << 20)
    assert part.stat().st_size == 16 << 20
    assert part.read_bytes() == source.read_bytes()[32 << 20 : 48 << 20]
