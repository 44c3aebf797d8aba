"""Writing cOS-layout disks from staging folders and reading them back, unprivileged."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosgitops.bootdisk import image as image_module
from cosgitops.bootdisk import layout as L
from cosgitops.bootdisk.filesystems import GRUB_REFUSED_FEATURES, ext4_features
from cosgitops.bootdisk.gpt import read_gpt
from cosgitops.bootdisk.image import DiskContent, plan_disk, write_disk_image
from cosgitops.bootdisk.read import DiskImage, list_partitions, read_grubenv
from cosgitops.bootdisk.tools import DiskError, DiskSizeError
from cosgitops.device.grubenv import parse_grubenv
from cosgitops.errors import UsageError
from tests.conftest import PROJECT_ROOT
from tests.helpers.tinyboot import grubenv_block

MiB = L.MiB
NOBODY = 65534


def make_content(root: Path, *, image_bytes: int = 3 * MiB) -> DiskContent:
    folders = {name: root / name for name in ("esp", "oem", "recovery", "state", "persistent")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    (folders["esp"] / "EFI" / "BOOT").mkdir(parents=True)
    (folders["esp"] / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ" + os.urandom(4000))
    (folders["esp"] / "EFI" / "BOOT" / "grub.cfg").write_text("set timeout=0\n")
    agent = folders["oem"] / ".cosgitops" / "agent"
    agent.mkdir(parents=True)
    (agent / "config.yaml").write_text("kind: AgentConfig\n")
    (folders["oem"] / "90 my config.yaml").write_text('name: "quoted"\n')
    image = bytes(range(256)) * (image_bytes // 256)
    for partition in ("state", "recovery"):
        (folders[partition] / "slots").mkdir()
        (folders[partition] / "slots" / "1.0.0-ab12.squashfs").write_bytes(image)
    (folders["state"] / "state.json").write_text(json.dumps({"active": "1.0.0"}))
    (folders["state"] / "grubenv").write_bytes(
        grubenv_block({"cos_active": "/slots/1.0.0-ab12.squashfs"})
    )
    (folders["persistent"] / ".cosgitops" / "blobs" / "sha256").mkdir(parents=True)
    (folders["persistent"] / "bin").mkdir()
    (folders["persistent"] / "bin" / "tool").write_text("#!/bin/sh\n")
    (folders["persistent"] / "bin" / "tool").chmod(0o4755)
    (folders["persistent"] / "link").symlink_to("bin/tool")
    return DiskContent(**folders)


def test_a_disk_in_the_cos_layout(tmp_path: Path) -> None:
    content = make_content(tmp_path / "content")
    output = tmp_path / "out" / "disk.img"
    result = write_disk_image(content, output)
    assert result.path == output and output.is_file()
    assert result.size == output.stat().st_size == result.layout.size
    assert result.file_size < result.size // 4  # sparse: the empty space is holes
    partitions = list_partitions(output)
    assert [p.name for p in partitions] == list(L.LABELS)
    assert partitions[0].type_guid == L.ESP_TYPE_GUID
    assert {p.type_guid for p in partitions[1:]} == {L.LINUX_TYPE_GUID}
    for partition, plan in zip(partitions, result.layout.partitions, strict=True):
        assert (partition.offset, partition.size) == (plan.offset, plan.size)
    # the partition table is one sgdisk itself reads back without complaint
    verify = subprocess.run(["sgdisk", "--verify", str(output)], capture_output=True, text=True)
    assert "No problems found" in verify.stdout
    disk = DiskImage(output)
    assert disk.read_json("COS_STATE", "/state.json") == {"active": "1.0.0"}
    assert parse_grubenv(disk.read_bytes("COS_STATE", "/grubenv")) == {
        "cos_active": "/slots/1.0.0-ab12.squashfs"
    }
    assert read_grubenv(output)["cos_active"] == "/slots/1.0.0-ab12.squashfs"
    assert (
        disk.read_bytes("COS_STATE", "/slots/1.0.0-ab12.squashfs")
        == (content.state / "slots" / "1.0.0-ab12.squashfs").read_bytes()
    )
    assert disk.listdir("COS_RECOVERY", "/slots") == ["1.0.0-ab12.squashfs"]
    assert disk.read_text("COS_OEM", "/90 my config.yaml") == 'name: "quoted"\n'
    assert disk.read_text("COS_OEM", "/.cosgitops/agent/config.yaml") == "kind: AgentConfig\n"
    assert disk.listdir("COS_GRUB", "/EFI/BOOT") == ["BOOTX64.EFI", "grub.cfg"]
    assert (
        disk.read_bytes("COS_GRUB", "/EFI/BOOT/BOOTX64.EFI")
        == (content.esp / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes()
    )
    assert disk.exists("COS_GRUB", "/EFI/BOOT/grub.cfg")
    assert not disk.exists("COS_GRUB", "/EFI/BOOT/other")
    tool = disk.stat("COS_PERSISTENT", "/bin/tool")
    assert tool is not None and (tool.kind, tool.mode, tool.uid, tool.gid) == ("file", 0o4755, 0, 0)
    link = disk.stat("COS_PERSISTENT", "/link")
    assert link is not None and link.kind == "symlink"
    assert disk.stat("COS_STATE", "/nothing") is None
    assert not disk.exists("COS_STATE", "/slots/nothing")
    copied = tmp_path / "copied.squashfs"
    disk.copy_out("COS_STATE", "/slots/1.0.0-ab12.squashfs", copied)
    assert copied.read_bytes() == (content.state / "slots" / "1.0.0-ab12.squashfs").read_bytes()
    # labels are the GPT names and the file-system labels both
    for label in L.LABELS[1:]:
        spec = f"{output}?offset={disk.partition(label).offset}"
        blkid = subprocess.run(["dumpe2fs", "-h", spec], capture_output=True, text=True).stdout
        assert f"Filesystem volume name:   {label}" in blkid
        assert not GRUB_REFUSED_FEATURES & ext4_features(spec)
    assert not list(output.parent.glob(".tmp-*"))


def test_errors_reading_back(tmp_path: Path) -> None:
    content = make_content(tmp_path / "content")
    output = write_disk_image(content, tmp_path / "disk.img").path
    disk = DiskImage(output)
    with pytest.raises(DiskError, match=r"no partition named COS_NOPE.*COS_GRUB, COS_OEM"):
        disk.read_bytes("COS_NOPE", "/x")
    with pytest.raises(DiskError, match="not a file"):
        disk.read_bytes("COS_STATE", "/missing")
    with pytest.raises(DiskError, match="not a file"):
        disk.read_bytes("COS_STATE", "/slots")
    with pytest.raises(DiskError, match="does not exist"):
        disk.listdir("COS_STATE", "/missing")
    with pytest.raises(DiskError, match="not a file"):
        disk.read_bytes("COS_GRUB", "/EFI/missing")
    with pytest.raises(DiskError, match="FAT"):
        disk.ext4("COS_GRUB")
    with pytest.raises(DiskError, match="over 10 bytes"):
        disk.read_bytes("COS_STATE", "/state.json", max_bytes=10)


def test_explicit_size_fits_or_is_refused_before_writing(tmp_path: Path) -> None:
    content = make_content(tmp_path / "content")
    minimum = plan_disk(content).minimum_size
    output = tmp_path / "disk.img"
    with pytest.raises(DiskSizeError, match=f"needs at least {minimum // MiB} MiB"):
        write_disk_image(content, output, size=minimum - MiB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content"]
    result = write_disk_image(content, output, size=minimum + 256 * MiB)
    assert result.size == minimum + 256 * MiB
    persistent = DiskImage(output).partition(L.PERSISTENT)
    assert persistent.offset + persistent.size == result.size - MiB


def test_qcow2(tmp_path: Path) -> None:
    content = make_content(tmp_path / "content")
    result = write_disk_image(content, tmp_path / "disk.qcow2", image_format="qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(result.path)],
                                     capture_output=True, check=True).stdout)  # fmt: skip
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == result.size
    with pytest.raises(DiskError, match="qcow2 image"):
        DiskImage(result.path).partitions()
    raw = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(result.path), str(raw)], check=True)
    assert DiskImage(raw).read_json("COS_STATE", "/state.json") == {"active": "1.0.0"}
    assert not list(tmp_path.glob(".tmp-*"))


def test_bad_requests_are_refused_before_writing(tmp_path: Path) -> None:
    content = make_content(tmp_path / "content")
    with pytest.raises(UsageError, match="unknown disk format"):
        write_disk_image(content, tmp_path / "disk.vmdk", image_format="vmdk")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="is a folder"):
        write_disk_image(content, tmp_path)
    missing = DiskContent(**{**content.__dict__, "persistent": tmp_path / "absent"})
    with pytest.raises(DiskError, match=r"COS_PERSISTENT: the staging folder .* does not exist"):
        write_disk_image(missing, tmp_path / "disk.img")
    os.mkfifo(content.oem / "fifo")
    with pytest.raises(DiskError, match=r"COS_OEM: .*fifo is a device node, FIFO or socket"):
        write_disk_image(content, tmp_path / "disk.img")
    (content.oem / "fifo").unlink()
    (content.esp / "EFI" / "link").symlink_to("BOOT")
    with pytest.raises(DiskError, match="symlink; FAT has none"):
        write_disk_image(content, tmp_path / "disk.img")
    (content.esp / "EFI" / "link").unlink()
    (content.esp / "EFI" / "a:b").write_text("x")
    with pytest.raises(DiskError, match="cannot be a FAT file name"):
        write_disk_image(content, tmp_path / "disk.img")
    (content.esp / "EFI" / "a:b").unlink()
    (content.esp / "EFI" / "boot").mkdir()
    with pytest.raises(DiskError, match="only in case"):
        write_disk_image(content, tmp_path / "disk.img")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content"]


def test_an_exception_midway_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = make_content(tmp_path / "content")
    output = tmp_path / "disk.img"
    output.write_bytes(b"the previous disk")
    real = image_module.make_ext4

    def failing(source: Path, image: Path, *, label: str, size: int) -> None:
        if label == L.STATE:
            raise DiskError("the disk filled up (injected)")
        real(source, image, label=label, size=size)

    monkeypatch.setattr(image_module, "make_ext4", failing)
    with pytest.raises(DiskError, match="injected"):
        write_disk_image(content, output)
    assert output.read_bytes() == b"the previous disk"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content", "disk.img"]


_WRITER = """
import sys
from pathlib import Path
from cosgitops.bootdisk.image import DiskContent, write_disk_image
root = Path(sys.argv[1])
content = DiskContent(*(root / name for name in ("esp", "oem", "recovery", "state", "persistent")))
write_disk_image(content, Path(sys.argv[2]))
print("done")
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_run_leaves_nothing_under_the_target(tmp_path: Path, signum: int) -> None:
    content = make_content(tmp_path / "content", image_bytes=256 * MiB)
    output = tmp_path / "disk.img"
    argv = [sys.executable, "-c", _WRITER, str(tmp_path / "content"), str(output)]
    process = subprocess.Popen(
        argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".tmp-disk.img.*/COS_*.img")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert (
        b"interrupted by SIGTERM" if signum == signal.SIGTERM else b"KeyboardInterrupt"
    ) in stderr
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content"]
    del content


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@pytest.fixture
def unprivileged_work() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's own tmp folders are root's 0700)."""
    work = Path(tempfile.mkdtemp(prefix="cosgitops-unprivileged-"))
    work.chmod(0o755)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_without_privileges_every_owner_becomes_root(unprivileged_work: Path) -> None:
    """The writer needs no root: as an ordinary user it makes the same disk, and the
    files the user owned in the staging folders are root's on the disk."""
    work = unprivileged_work
    make_content(work / "content")
    # the package, where the unprivileged user can read it, and a Python it can run
    shutil.copytree(PROJECT_ROOT / "cosgitops", work / "pkg" / "cosgitops",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    python = sys.executable
    if os.geteuid() == 0:
        for path in [work, *work.rglob("*")]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        (work / "content" / "persistent" / "bin" / "tool").chmod(0o4755)  # chown cleared it
        preexec = _as_nobody
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    else:
        preexec = None
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "PYTHONPATH": str(work / "pkg")}
    result = subprocess.run(
        [python, "-c", _WRITER, str(work / "content"), str(work / "disk.img")],
        cwd=work, env=env, capture_output=True, text=True, preexec_fn=preexec, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (work / "disk.img").stat().st_uid == (NOBODY if preexec else os.geteuid())
    disk = DiskImage(work / "disk.img")
    owners = set()
    for label in L.LABELS[1:]:
        reader = disk.ext4(label)
        pending = ["/"]
        while pending:
            folder = pending.pop()
            for entry in reader.listdir(folder):
                owners.add((entry.uid, entry.gid))
                if entry.kind == "dir" and entry.name != "lost+found":
                    pending.append(f"{folder.rstrip('/')}/{entry.name}")
        spec = f"{work / 'disk.img'}?offset={disk.partition(label).offset}"
        root = subprocess.run(["debugfs", "-R", "stat /", spec], capture_output=True, text=True)
        assert "User:     0   Group:     0" in root.stdout
    assert owners == {(0, 0)}
    tool = disk.stat("COS_PERSISTENT", "/bin/tool")
    assert tool is not None and tool.mode == 0o4755  # setuid survives the owner change


def test_gpt_reader_refuses_damage(tmp_path: Path) -> None:
    output = write_disk_image(make_content(tmp_path / "content"), tmp_path / "disk.img").path
    table = read_gpt(output)
    assert table.sector_size == 512 and len(table.partitions) == 5
    sgdisk = subprocess.run(
        ["sgdisk", "-i", "1", str(output)], capture_output=True, text=True
    ).stdout
    assert f"Partition unique GUID: {table.partitions[0].guid}" in sgdisk
    with output.open("rb") as handle:
        data = bytearray(handle.read(64 * 1024))
    damaged = tmp_path / "damaged.img"
    header = data.copy()
    header[512 + 40] ^= 0xFF  # inside the header: its CRC no longer matches
    damaged.write_bytes(bytes(header))
    with pytest.raises(DiskError, match="header is damaged"):
        read_gpt(damaged)
    entries = data.copy()
    entries[1024 + 60] ^= 0xFF  # inside the first partition entry
    damaged.write_bytes(bytes(entries))
    with pytest.raises(DiskError, match="entries are damaged"):
        read_gpt(damaged)
    damaged.write_bytes(b"\0" * 4096)
    with pytest.raises(DiskError, match="no GPT"):
        read_gpt(damaged)
    with pytest.raises(DiskError, match="does not exist"):
        read_gpt(tmp_path / "absent.img")
    truncated = tmp_path / "truncated.img"  # the table, on a disk too small for it
    truncated.write_bytes(bytes(data))
    os.truncate(truncated, 200 * MiB)
    with pytest.raises(DiskError, match="outside the disk"):
        read_gpt(truncated)


def test_write_speed_is_reported(tmp_path: Path) -> None:
    content = make_content(tmp_path / "content", image_bytes=64 * MiB)
    result = write_disk_image(content, tmp_path / "disk.img")
    assert 0 < result.seconds < 120
    assert result.to_json()["layout"]["partitions"][3]["label"] == "COS_STATE"  # type: ignore[index]
    print(
        textwrap.dedent(f"""
        disk of {result.size // MiB} MiB ({result.file_size // MiB} MiB allocated) in
        {result.seconds:.2f} s""")
    )
