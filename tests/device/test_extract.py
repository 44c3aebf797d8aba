from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cosgitops.config import Limits
from cosgitops.device.extract import ExtractBudget, UnsafeLayerError, extract_layer
from cosgitops.errors import IntegrityError, RemoteDataError
from cosgitops.oci import media
from tests.device.tarbuild import (
    Entry,
    directory,
    file,
    gzip_layer,
    hardlink,
    symlink,
    tar_bytes,
    write_blob,
)


@pytest.fixture
def slot(tmp_path: Path) -> Path:
    path = tmp_path / "device" / "state" / "transition"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the slot that no layer may ever touch."""
    path = tmp_path / "device" / "outside"
    path.mkdir(parents=True)
    (path / "victim").write_text("original")
    return path


def apply(tmp_path: Path, slot: Path, entries: list[Entry], **kw: object) -> None:
    blob, digest = write_blob(tmp_path / "blobs", gzip_layer(entries))
    extract_layer(blob, digest=digest, media_type=media.OCI_LAYER_GZIP, slot=slot, **kw)  # type: ignore[arg-type]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
        out[str(path.relative_to(folder))] = (info.st_mode, data)
    return out


def test_regular_layers_with_files_links_and_modes(tmp_path: Path, slot: Path) -> None:
    apply(
        tmp_path,
        slot,
        [
            directory("./etc"),
            file("./etc/os-release", "NAME=test\n"),
            file("usr/bin/tool", "#!/bin/sh\n", mode=0o4755, uid=0, gid=0),
            symlink("bin", "usr/bin"),
            hardlink("usr/bin/tool2", "usr/bin/tool"),
            directory("readonly", mode=0o555),
            file("readonly/inside", "x"),
            file("data/owned", "y", uid=1234, gid=4321),
        ],
    )
    assert (slot / "etc/os-release").read_text() == "NAME=test\n"
    assert os.readlink(slot / "bin") == "usr/bin"
    assert (slot / "usr/bin/tool").stat().st_ino == (slot / "usr/bin/tool2").stat().st_ino
    assert stat.S_IMODE((slot / "usr/bin/tool").stat().st_mode) == 0o4755
    assert stat.S_IMODE((slot / "readonly").stat().st_mode) == 0o555
    assert (slot / "readonly/inside").read_text() == "x"
    if os.geteuid() == 0:
        info = (slot / "data/owned").stat()
        assert (info.st_uid, info.st_gid) == (1234, 4321)


def test_whiteouts_and_opaque_directories(tmp_path: Path, slot: Path) -> None:
    apply(
        tmp_path,
        slot,
        [
            file("etc/keep", "k"),
            file("etc/drop", "d"),
            file("etc/sub/deep", "d"),
            file("opt/old/a", "a"),
            file("opt/old/sub/b", "b"),
            file("var/replaced", "file"),
        ],
    )
    apply(
        tmp_path,
        slot,
        [
            file("etc/.wh.drop"),
            file("etc/.wh.sub"),
            file("opt/old/new", "n"),  # same layer as the opaque marker: stays
            file("opt/old/.wh..wh..opq"),
            directory("var/replaced"),  # a directory replaces a file
            file("var/replaced/inner", "i"),
            file("nothing/.wh.absent"),  # whiteout of something that never existed
        ],
    )
    assert sorted(p.name for p in (slot / "etc").iterdir()) == ["keep"]
    assert sorted(p.name for p in (slot / "opt/old").iterdir()) == ["new"]
    assert (slot / "var/replaced/inner").read_text() == "i"
    assert not list(slot.rglob(".wh.*"))


def test_later_layer_replaces_symlink_instead_of_writing_through_it(
    tmp_path: Path, slot: Path, outside: Path
) -> None:
    apply(tmp_path, slot, [symlink("victim", str(outside / "victim"))])
    apply(tmp_path, slot, [file("victim", "new content")])
    assert (slot / "victim").read_text() == "new content"
    assert not (slot / "victim").is_symlink()
    assert (outside / "victim").read_text() == "original"


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param([file("../outside/victim", "pwned")], id="dotdot"),
        pytest.param([file("a/../../outside/victim", "pwned")], id="dotdot-inside"),
        pytest.param([file("/outside/victim", "pwned")], id="absolute"),
        pytest.param(
            [symlink("escape", "../outside"), file("escape/victim", "pwned")], id="symlink-parent"
        ),
        pytest.param(
            [symlink("escape", "/"), file("escape/tmp/pwned", "pwned")], id="symlink-to-root"
        ),
        pytest.param(
            [symlink("loop", "."), symlink("loop/escape", "..")], id="symlink-self-then-through"
        ),
        pytest.param([hardlink("stolen", "../outside/victim")], id="hardlink-dotdot"),
        pytest.param([hardlink("stolen", "/etc/passwd")], id="hardlink-absolute"),
        pytest.param(
            [symlink("link", "../outside/victim"), hardlink("stolen", "link")],
            id="hardlink-to-symlink",
        ),
        pytest.param([hardlink("stolen", "not-there")], id="hardlink-missing"),
        pytest.param([Entry("dev/sda", "blk")], id="block-device"),
        pytest.param([Entry("dev/mem", "chr")], id="char-device"),
        pytest.param([file("etc/.wh..."), file("x")], id="whiteout-dotdot"),
    ],
)
def test_hostile_layers_are_refused(
    tmp_path: Path, slot: Path, outside: Path, entries: list[Entry]
) -> None:
    before = snapshot(outside)
    with pytest.raises(UnsafeLayerError):
        apply(tmp_path, slot, entries)
    assert snapshot(outside) == before
    assert not (tmp_path / "outside").exists()
    assert not Path("/tmp/pwned").exists()


def test_symlink_planted_by_an_earlier_layer_cannot_redirect_writes(
    tmp_path: Path, slot: Path, outside: Path
) -> None:
    apply(tmp_path, slot, [symlink("etc", str(outside))])
    with pytest.raises(UnsafeLayerError, match="symlink"):
        apply(tmp_path, slot, [file("etc/victim", "pwned")])
    assert (outside / "victim").read_text() == "original"


def test_whiteout_through_a_symlink_deletes_nothing_outside(
    tmp_path: Path, slot: Path, outside: Path
) -> None:
    apply(tmp_path, slot, [symlink("etc", str(outside))])
    with pytest.raises(UnsafeLayerError):
        apply(tmp_path, slot, [file("etc/.wh.victim")])
    with pytest.raises(UnsafeLayerError):
        apply(tmp_path, slot, [file("etc/.wh..wh..opq")])
    assert (outside / "victim").read_text() == "original"


def test_tampered_blob_fails_its_digest(tmp_path: Path, slot: Path) -> None:
    data = gzip_layer([file("etc/hello", "hi")])
    blob, digest = write_blob(tmp_path / "blobs", data)
    blob.write_bytes(gzip_layer([file("etc/hello", "evil")]))
    with pytest.raises(IntegrityError):
        extract_layer(blob, digest=digest, media_type=media.OCI_LAYER_GZIP, slot=slot)
    blob.write_bytes(data[:-10] + b"0123456789")  # damaged gzip stream
    with pytest.raises(IntegrityError):
        extract_layer(blob, digest=digest, media_type=media.OCI_LAYER_GZIP, slot=slot)


def test_uncompressed_layers_and_garbage(tmp_path: Path, slot: Path) -> None:
    blob, digest = write_blob(tmp_path / "blobs", tar_bytes([file("plain", "p")]))
    extract_layer(blob, digest=digest, media_type=media.OCI_LAYER_TAR, slot=slot)
    assert (slot / "plain").read_text() == "p"
    blob, digest = write_blob(tmp_path / "blobs", b"this is not a tarball at all" * 40)
    with pytest.raises(RemoteDataError):
        extract_layer(blob, digest=digest, media_type=media.OCI_LAYER_GZIP, slot=slot)
    with pytest.raises(RemoteDataError, match="zstd"):
        extract_layer(blob, digest=digest, media_type=media.OCI_LAYER_TAR + "+zstd", slot=slot)


def test_limits_on_entries_and_bytes(tmp_path: Path, slot: Path) -> None:
    many = [file(f"f{i}", "x") for i in range(20)]
    with pytest.raises(UnsafeLayerError, match="entries"):
        apply(tmp_path, slot, many, budget=ExtractBudget(Limits(extract_max_entries=10)))
    big = [file("big", b"x" * 5000)]
    with pytest.raises(UnsafeLayerError, match="bytes"):
        apply(tmp_path, slot, big, budget=ExtractBudget(Limits(extract_max_total_bytes=4096)))
