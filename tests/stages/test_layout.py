"""``layout.expand_partition`` on a disk image file: sgdisk grows the last partition,
resize2fs its ext4 file system, and a second run changes nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cosgitops.stages.kinds.layout import MiB, ext_label_and_size, read_gpt
from cosgitops.stages.runner import run_stage
from tests.stages.conftest import Stage

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("sgdisk", "mkfs.ext4", "resize2fs", "e2fsck")),
    reason="needs gdisk and e2fsprogs",
)


def make_disk(path: Path, *, size_mib: int = 64, grown_mib: int = 128) -> Path:
    """A GPT disk image in the cOS layout's spirit (COS_OEM, then COS_PERSISTENT last,
    ext4 labelled like its partition), then made bigger, as a disk image written to a
    larger disk is."""
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(path)], check=True)
    subprocess.run(
        [
            "sgdisk",
            "-n",
            "1:2048:+8M",
            "-c",
            "1:COS_OEM",
            "-n",
            "2:0:+16M",
            "-c",
            "2:COS_PERSISTENT",
            "-A",
            "2:set:63",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    table = read_gpt(path)
    for part in table.partitions:
        offset = part.first * table.sector
        size = (part.last - part.first + 1) * table.sector // 1024
        subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                part.name,
                "-E",
                f"offset={offset}",
                str(path),
                f"{size}k",
            ],
            check=True,
            capture_output=True,
        )
    subprocess.run(["truncate", "-s", f"{grown_mib}M", str(path)], check=True)
    return path


def _last(path: Path) -> tuple[int, int, int]:
    """(partition MiB, file system MiB, attributes) of the last partition."""
    table = read_gpt(path)
    last = max(table.partitions, key=lambda p: p.last)
    found = ext_label_and_size(path, last.first * table.sector)
    assert found is not None
    return (last.last - last.first + 1) * table.sector // MiB, found[1] // MiB, last.attributes


def test_the_last_partition_and_its_file_system_grow_once(stage: Stage, root: Path) -> None:
    disk = make_disk(root / "var/lib/disk.img")
    before = read_gpt(disk).partitions
    assert _last(disk)[:2] == (16, 16)
    document = """
        stages:
          rootfs:
            - name: Grow persistent
              layout:
                device: {path: /var/lib/disk.img}
                expand_partition: {size: 0}
    """
    report = stage(document, name="rootfs")
    assert report.ok, report.steps[0].error
    partition, filesystem, attributes = _last(disk)
    # to the end of the disk, before GPT's backup entries and header (34 sectors)
    to_the_end = (128 * MiB // 512 - 34 - before[1].first) * 512 // MiB
    assert partition == filesystem == to_the_end == 118
    after = read_gpt(disk).partitions
    # the same partition: start, type, GUID, name and attributes kept
    assert [(p.first, p.type_guid, p.guid, p.name) for p in after] == [
        (p.first, p.type_guid, p.guid, p.name) for p in before
    ]
    assert attributes == 1 << 63
    check = subprocess.run(
        ["e2fsck", "-f", "-n", f"{disk}?offset={after[1].first * 512}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    data = disk.read_bytes()
    again = stage(name="rootfs")
    assert [s.status for s in again.steps] == ["unchanged"]
    assert disk.read_bytes() == data


def test_a_size_in_mib(stage: Stage, root: Path) -> None:
    disk = make_disk(root / "disk.img")
    assert stage(
        "stages: {rootfs: [{layout: {device: {path: /disk.img}, expand_partition: {size: 40}}}]}",
        name="rootfs",
    ).ok
    assert _last(disk)[:2] == (40, 40)
    report = stage(
        "stages: {rootfs: [{layout: {device: {path: /disk.img}, expand_partition: {size: 400}}}]}",
        name="rootfs",
    )
    assert "not 400 MiB" in (report.steps[0].error or "")


def test_a_label_names_the_disk_and_must_be_the_last_partition(
    root: Path, tmp_path: Path, config_dir: Path
) -> None:
    disk = make_disk(tmp_path / "disk.img")
    (config_dir / "00_layout.yaml").write_text(
        "stages:\n  rootfs:\n"
        "    - {name: persistent, layout: {device: {label: COS_PERSISTENT},\n"
        "       expand_partition: {size: 0}}}\n"
        "    - {name: oem, layout: {device: {label: COS_OEM}, expand_partition: {size: 0}}}\n"
        "    - {name: elsewhere, layout: {device: {label: COS_PERSISTENT}, expand_partition: {}}}\n"
    )

    def run(disks: list[Path]) -> dict[str, tuple[str, str]]:
        report = run_stage(
            "rootfs",
            root=root,
            config_dirs=[config_dir],
            default_dirs=False,
            disks=disks,
            record=False,
        )
        return {s.name: (s.status, s.error or s.reason) for s in report.steps}

    outcomes = run([disk])
    assert outcomes["persistent"][0] == "applied"
    assert outcomes["oem"] == (
        "failed",
        f"partition 1 of {disk} is not the last one (partition 2 is): "
        "only the last partition can grow",
    )
    assert outcomes["elsewhere"][0] == "unchanged"
    assert _last(disk)[:2] == (118, 118)
    # without the image, the machine's own disks are never looked at with --root
    assert run([])["persistent"] == (
        "skipped",
        "the machine's disks are left alone with --root (no --disk holds COS_PERSISTENT)",
    )


def test_add_partitions_is_skipped_with_its_reason(stage: Stage, root: Path) -> None:
    disk = make_disk(root / "disk.img")
    data = disk.read_bytes()
    report = stage(
        "stages: {rootfs: [{layout: {device: {path: /disk.img}, "
        "add_partitions: [{fsLabel: EXTRA, size: 8}]}}]}",
        name="rootfs",
    )
    assert report.steps[0].status == "skipped"
    assert "add_partitions skipped: it creates or reformats partitions" in report.steps[0].reason
    assert disk.read_bytes() == data
