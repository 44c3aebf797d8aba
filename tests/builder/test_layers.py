"""Reproducible layer tarballs: same content -> same bytes, whatever the file system says."""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from cosgitops.builder.layers import (
    LayerEntry,
    content_entries,
    layer_bytes,
    tree_entries,
    write_layer,
)
from cosgitops.config import Limits
from cosgitops.errors import BuildError
from cosgitops.fsutil import PathEscapeError
from cosgitops.oci.digest import sha256_digest
from tests.helpers.services import require_binary

EPOCH = 1_700_000_000
GOLDEN_DIFF_ID = "sha256:2fa10b9898d4ec1bcb1a632d02797aab125850a271607e276e5cecd93648bb81"


def _members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as archive:
        return archive.getmembers()


def _tree(root: Path, *, umask: int, mtime: int, reverse: bool = False) -> Path:
    """The same content written under a different umask, mtime and creation order."""
    old = os.umask(umask)
    try:
        names = ["etc/motd", "etc/app/config.toml", "usr/local/bin/tool", "a-b", "a/b"]
        for name in reversed(names) if reverse else names:
            path = root / "overlay" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"content of {name}\n")
        (root / "overlay/usr/local/bin/tool").chmod(0o700 if reverse else 0o755)
        (root / "overlay/etc/motd").chmod(0o600 if reverse else 0o664)
        os.symlink("motd", root / "overlay/etc/motd.link")
    finally:
        os.umask(old)
    for path in (root / "overlay").rglob("*"):
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root / "overlay"


def test_same_content_gives_same_digest_whatever_path_umask_mtime_and_order(
    tmp_path: Path,
) -> None:
    first = _tree(tmp_path / "one", umask=0o022, mtime=1_000_000)
    second = _tree(tmp_path / "somewhere/else/two", umask=0o077, mtime=2_000_000, reverse=True)
    blob_one = write_layer(tree_entries(first, boundary=tmp_path), tmp_path / "out1", EPOCH)
    blob_two = write_layer(tree_entries(second, boundary=tmp_path), tmp_path / "out2", EPOCH)
    assert blob_one.digest == blob_two.digest
    assert blob_one.diff_id == blob_two.diff_id
    assert blob_one.path.read_bytes() == blob_two.path.read_bytes()
    assert sha256_digest(blob_one.path.read_bytes()) == blob_one.digest
    assert blob_one.size == blob_one.path.stat().st_size
    # a different epoch is a different layer
    other = write_layer(tree_entries(first, boundary=tmp_path), tmp_path / "out3", EPOCH + 1)
    assert other.digest != blob_one.digest


def test_members_are_sorted_and_normalised(tmp_path: Path) -> None:
    overlay = _tree(tmp_path, umask=0o077, mtime=5)
    blob, diff_id = layer_bytes(tree_entries(overlay, boundary=tmp_path), EPOCH)
    members = _members(blob)
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert names[:3] == ["a", "a/b", "a-b"]
    by_name = {m.name: m for m in members}
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == EPOCH
    assert by_name["etc"].isdir() and by_name["etc"].mode == 0o755
    assert by_name["etc/motd"].mode == 0o644  # 0600 on disk: git keeps only the x bit
    assert by_name["usr/local/bin/tool"].mode == 0o755  # 0700 on disk
    assert by_name["etc/motd.link"].issym() and by_name["etc/motd.link"].linkname == "motd"
    assert sha256_digest(gzip.decompress(blob)) == diff_id


def test_gzip_header_is_fixed(tmp_path: Path) -> None:
    blob, _ = layer_bytes(content_entries({"etc/x": b"x"}), EPOCH)
    assert blob[:3] == b"\x1f\x8b\x08"
    flags = blob[3]
    assert flags & 0x08 == 0  # no file name
    assert int.from_bytes(blob[4:8], "little") == EPOCH
    assert blob[9] == 255  # OS "unknown", whatever the machine


def test_content_entries_add_parent_folders() -> None:
    blob, _ = layer_bytes(content_entries({"etc/deep/os-release": b"ID=x\n"}), EPOCH)
    assert [m.name for m in _members(blob)] == ["etc", "etc/deep", "etc/deep/os-release"]


def test_prefix_and_include_patterns(tmp_path: Path) -> None:
    oem = tmp_path / "oem"
    (oem / "sub").mkdir(parents=True)
    (oem / "90_custom.yaml").write_text("name: x\n")
    (oem / "91_other.yml").write_text("name: y\n")
    (oem / "README.md").write_text("not a cloud-config\n")
    (oem / "sub" / "nested.yaml").write_text("name: z\n")
    entries = tree_entries(oem, prefix="system/oem", boundary=tmp_path, include=("*.yaml", "*.yml"))
    blob, _ = layer_bytes(entries, EPOCH)
    assert [m.name for m in _members(blob)] == [
        "system",
        "system/oem",
        "system/oem/90_custom.yaml",
        "system/oem/91_other.yml",
    ]
    assert tree_entries(tmp_path / "missing", boundary=tmp_path) == []


def test_absolute_symlink_is_an_image_path_and_kept(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay" / "etc"
    overlay.mkdir(parents=True)
    os.symlink("/usr/share/zoneinfo/UTC", overlay / "localtime")
    blob, _ = layer_bytes(tree_entries(tmp_path / "overlay", boundary=tmp_path), EPOCH)
    link = {m.name: m for m in _members(blob)}["etc/localtime"]
    assert link.issym() and link.linkname == "/usr/share/zoneinfo/UTC"


def test_symlink_out_of_overlay_to_a_repository_file_is_packed_as_the_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "banner").write_text("shared banner\n")
    overlay = tmp_path / "derivatives/x/overlay/etc"
    overlay.mkdir(parents=True)
    os.symlink("../../../../shared/banner", overlay / "issue")
    entries = tree_entries(tmp_path / "derivatives/x/overlay", boundary=tmp_path)
    blob, _ = layer_bytes(entries, EPOCH)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as archive:
        member = archive.getmember("etc/issue")
        assert member.isfile()
        extracted = archive.extractfile(member)
        assert extracted is not None and extracted.read() == b"shared banner\n"


def test_symlink_escaping_the_repository_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    overlay = repo / "overlay" / "etc"
    overlay.mkdir(parents=True)
    (tmp_path / "secret").write_text("host secret\n")
    os.symlink("../../../secret", overlay / "leak")
    with pytest.raises(PathEscapeError) as error:
        tree_entries(repo / "overlay", boundary=repo)
    assert "outside the repository" in str(error.value)
    assert error.value.hint


def test_symlinked_overlay_folder_leaving_the_repository_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_text("x")
    os.symlink(tmp_path / "elsewhere", repo / "overlay")
    with pytest.raises(PathEscapeError):
        tree_entries(repo / "overlay", boundary=repo)


def test_symlink_to_a_folder_outside_the_overlay_is_refused(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    os.symlink("../shared", overlay / "shared")
    with pytest.raises(BuildError) as error:
        tree_entries(overlay, boundary=tmp_path)
    assert "not a regular file" in str(error.value)


def test_special_files_and_oversized_files_are_refused(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    os.mkfifo(overlay / "pipe")
    with pytest.raises(BuildError) as error:
        tree_entries(overlay, boundary=tmp_path)
    assert "special file" in str(error.value)
    (overlay / "pipe").unlink()
    (overlay / "big").write_bytes(b"x" * 2048)
    with pytest.raises(BuildError) as too_big:
        tree_entries(overlay, boundary=tmp_path, limits=Limits(overlay_max_file_bytes=1024))
    assert "over the limit" in str(too_big.value)


def test_duplicate_paths_keep_the_last_entry() -> None:
    entries = content_entries({"etc/a": b"first"}) + content_entries({"etc/a": b"second"})
    blob, _ = layer_bytes(entries, EPOCH)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as archive:
        assert [m.name for m in archive.getmembers()] == ["etc", "etc/a"]
        extracted = archive.extractfile("etc/a")
        assert extracted is not None and extracted.read() == b"second"


def test_long_and_non_ascii_names_use_pax_headers_that_gnu_tar_reads(tmp_path: Path) -> None:
    long_name = "usr/share/" + "/".join(["a-rather-long-folder-name"] * 5) + "/file.txt"
    entries = [
        *content_entries({long_name: b"deep\n", "etc/café.conf": b"ol\xc3\xa9\n"}),
        LayerEntry("etc/link", "symlink", 0o777, link_target="/" + "x" * 150),
    ]
    blob, _ = layer_bytes(entries, EPOCH)
    members = {m.name: m for m in _members(blob)}
    assert long_name in members and "etc/café.conf" in members
    assert members["etc/link"].linkname == "/" + "x" * 150
    (tmp_path / "layer.tar.gz").write_bytes(blob)
    listing = subprocess.run(
        [require_binary("tar", "tar"), "-tvzf", str(tmp_path / "layer.tar.gz")],
        capture_output=True, text=True, check=True, env={"LC_ALL": "C.UTF-8", "TZ": "UTC"},
    ).stdout  # fmt: skip
    assert long_name in listing and "etc/café.conf" in listing
    assert "2023-11-14 22:13" in listing  # mtime = EPOCH for every member


def test_golden_layer_bytes() -> None:
    """The exact bytes for fixed input: a change here breaks every published digest.

    The tar stream (its digest is the diff_id) and the gzip framing are cosgitops' own
    and pinned here; the deflate data between them is whatever the zlib Python links
    against makes of the tar at level 6 (zlib-ng and zlib differ), so it is compared
    with that same zlib's output rather than with a digest from one machine."""
    entries = [
        *content_entries({"etc/motd": b"hello\n"}),
        LayerEntry("usr/bin/tool", "symlink", 0o777, link_target="../../etc/motd"),
    ]
    blob, diff_id = layer_bytes(entries, EPOCH)
    assert diff_id == GOLDEN_DIFF_ID
    tar = gzip.decompress(blob)
    assert sha256_digest(tar) == GOLDEN_DIFF_ID
    assert blob[:10] == b"\x1f\x8b\x08\x00" + struct.pack("<I", EPOCH) + b"\x00\xff"
    assert blob[-8:] == struct.pack("<II", zlib.crc32(tar), len(tar))
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS, 8)
    assert blob[10:-8] == compressor.compress(tar) + compressor.flush()
