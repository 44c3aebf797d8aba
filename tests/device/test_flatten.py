"""OCI layers -> one squashfs image (cosgitops.device.flatten), checked against what the
agent's own extractor makes of the same layers."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cosgitops.config import Limits, MiB
from cosgitops.device.extract import UnsafeLayerError, extract_layer
from cosgitops.device.flatten import (
    FlattenResult,
    LayerBlob,
    SquashfsImage,
    flatten_image,
    flatten_layers,
    layer_blobs,
    parse_os_release,
)
from cosgitops.device.slots import tree_digest
from cosgitops.errors import IntegrityError, NotFoundError, RemoteDataError
from cosgitops.oci import media
from tests.device.tarbuild import digest_of
from tests.helpers.tools import require

MTIME = 1_700_000_000
IS_ROOT = os.geteuid() == 0


@dataclass
class E:
    """One tar entry of a hand-made layer."""

    name: str
    kind: str = "file"  # file | dir | symlink | hardlink | chr | blk | fifo
    data: bytes = b""
    target: str = ""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: float = MTIME
    pax: dict[str, str] = field(default_factory=dict)


def f(name: str, data: str | bytes = b"", **kw: object) -> E:
    return E(name, "file", data.encode() if isinstance(data, str) else data, **kw)  # type: ignore[arg-type]


def d(name: str, **kw: object) -> E:
    return E(name, "dir", **kw)  # type: ignore[arg-type]


def sym(name: str, target: str) -> E:
    return E(name, "symlink", target=target)


def hard(name: str, target: str) -> E:
    return E(name, "hardlink", target=target)


_TYPES = {
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def tar_of(entries: list[E]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            default = {"dir": 0o755, "symlink": 0o777}.get(entry.kind, 0o644)
            info.mode = default if entry.mode is None else entry.mode
            info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
            info.pax_headers = dict(entry.pax)
            if entry.kind == "file":
                info.size = len(entry.data)
                archive.addfile(info, io.BytesIO(entry.data))
                continue
            info.type = _TYPES[entry.kind]
            info.linkname = entry.target
            archive.addfile(info)
    return raw.getvalue()


class Layers:
    """Writes layer blobs into a folder and runs both the flattener and the extractor."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def blob(self, data: bytes, *, compress: bool = True, diff_id: str | None = None) -> LayerBlob:
        stored = gzip.compress(data, mtime=0) if compress else data
        digest = digest_of(stored)
        path = self.blobs / digest.split(":")[1]
        path.write_bytes(stored)
        media_type = media.OCI_LAYER_GZIP if compress else media.OCI_LAYER_TAR
        return LayerBlob(path, media_type, digest, diff_id or digest_of(data))

    def stack(self, *layers: list[E]) -> list[LayerBlob]:
        return [self.blob(tar_of(entries)) for entries in layers]

    def flatten(
        self, blobs: list[LayerBlob], name: str = "image.squashfs", **kw: object
    ) -> FlattenResult:
        return flatten_layers(blobs, self.root / name, **kw)  # type: ignore[arg-type]

    def extracted(self, blobs: list[LayerBlob]) -> Path:
        slot = self.root / "extracted"
        shutil.rmtree(slot, ignore_errors=True)
        slot.mkdir()
        for blob in blobs:
            extract_layer(blob.path, digest=blob.digest, media_type=blob.media_type, slot=slot)
        return slot


def unpack(image: Path, target: Path) -> Path:
    """The image unpacked by squashfs-tools (as root: owners, modes and xattrs kept)."""
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(target), str(image)], check=True,
                   capture_output=True)  # fmt: skip
    return target


def listing(image: Path) -> list[str]:
    return [path for _, path in SquashfsImage(image).entries()]


@pytest.fixture
def layers(tmp_path: Path) -> Layers:
    require("tar2sqfs", "rdsquashfs", "unsquashfs")  # .ci/run installs them
    return Layers(tmp_path)


# ------------------------------------------------------------------ what the image holds


def test_files_links_owners_modes_xattrs_and_times(layers: Layers, tmp_path: Path) -> None:
    capability = bytes.fromhex("0100000200200000") + bytes(12)  # cap_net_raw, effective
    caps = {"SCHILY.xattr.security.capability": capability.decode(errors="surrogateescape")}
    blobs = layers.stack(
        [
            d("usr", mode=0o755),
            d("usr/bin"),
            f("usr/bin/ping", b"\x7fELF ping", mode=0o755, pax=caps),
            f("usr/bin/sudo", "sudo", mode=0o4755),
            f("usr/bin/wall", "wall", mode=0o2755, gid=5),
            hard("usr/bin/sudoedit", "usr/bin/sudo"),
            sym("bin", "usr/bin"),
            sym("etc/localtime", "/usr/share/zoneinfo/UTC"),
            d("home/user", mode=0o700, uid=1000, gid=1000),
            f("home/user/.profile", "x", uid=1000, gid=1000, mtime=MTIME + 5),
            f("opt/user-attr", "u", pax={"SCHILY.xattr.user.comment": "hello"}),
            f("opt/libarchive", "l", pax={"LIBARCHIVE.xattr.user.from%20la": "dmFsdWU="}),
            d("tmp", mode=0o1777),
            d("empty"),
        ]
    )  # fmt: skip
    result = layers.flatten(blobs)
    assert result.path.is_file() and result.size == result.path.stat().st_size
    assert result.digest == digest_of(result.path.read_bytes())
    assert result.layers == 1
    image = SquashfsImage(result.path)
    sudo = image.stat("/usr/bin/sudo")
    assert sudo is not None and sudo.mode == 0o4755 and sudo.kind == "file"
    wall = image.stat("/usr/bin/wall")
    assert wall is not None and (wall.mode, wall.gid) == (0o2755, 5)
    home = image.stat("/home/user")
    assert home is not None and (home.kind, home.mode, home.uid, home.gid) == (
        "dir",
        0o700,
        1000,
        1000,
    )
    profile = image.stat("/home/user/.profile")
    assert profile is not None and profile.mtime == MTIME + 5
    tmp = image.stat("/tmp")
    assert tmp is not None and tmp.mode == 0o1777
    link = image.stat("/etc/localtime")
    assert link is not None and (link.kind, link.target) == ("symlink", "/usr/share/zoneinfo/UTC")
    assert image.read_bytes("/bin/sudoedit") == b"sudo"  # through the symlink and the hard link
    xattrs = subprocess.run(["rdsquashfs", "-x", "/usr/bin/ping", str(result.path)],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "security.capability=0x0100000200200000" in xattrs
    assert (
        "user.comment=hello"
        in subprocess.run(
            ["rdsquashfs", "-x", "/opt/user-attr", str(result.path)], capture_output=True, text=True
        ).stdout
    )
    assert (
        "user.from la=value"
        in subprocess.run(
            ["rdsquashfs", "-x", "/opt/libarchive", str(result.path)],
            capture_output=True,
            text=True,
        ).stdout
    )
    # the implicit /etc and /home directories exist with defaults, and nothing else does
    assert listing(result.path) == [
        "/bin", "/empty", "/etc", "/etc/localtime", "/home", "/home/user",
        "/home/user/.profile", "/opt", "/opt/libarchive", "/opt/user-attr", "/tmp", "/usr",
        "/usr/bin", "/usr/bin/ping", "/usr/bin/sudo", "/usr/bin/sudoedit", "/usr/bin/wall",
    ]  # fmt: skip
    assert result.entries == 17
    etc = image.stat("/etc")
    assert etc is not None and (etc.mode, etc.uid, etc.mtime) == (0o755, 0, 0)
    if IS_ROOT:
        tree = unpack(result.path, tmp_path / "unpacked")
        assert tree_digest(tree) == tree_digest(layers.extracted(blobs))
        assert os.getxattr(tree / "usr/bin/ping", "security.capability") == capability
        sudo_info, edit_info = (tree / "usr/bin/sudo").stat(), (tree / "usr/bin/sudoedit").stat()
        assert sudo_info.st_ino == edit_info.st_ino and sudo_info.st_nlink == 2


def test_whiteouts_opaque_directories_and_replacements(layers: Layers, tmp_path: Path) -> None:
    blobs = layers.stack(
        [
            f("etc/keep", "k"),
            f("etc/drop", "d"),
            f("etc/sub/deep", "d"),
            f("opt/old/a", "a"),
            f("opt/old/sub/b", "b"),
            f("var/replaced", "file"),
            d("var/was-dir"),
            f("var/was-dir/child", "c"),
            sym("srv", "var"),
            d("meta", mode=0o700, uid=7),
            f("meta/lower", "l"),
        ],
        [
            f("etc/.wh.drop"),
            f("etc/.wh.sub"),
            f("opt/old/new", "n"),  # same layer as the opaque marker: stays
            f("opt/old/.wh..wh..opq"),
            d("var/replaced"),  # a directory replaces a file
            f("var/replaced/inner", "i"),
            f("var/was-dir", "now a file"),  # a file replaces a directory and its children
            d("srv"),  # a directory replaces a symlink
            f("srv/www", "w"),
            f("nothing/.wh.absent"),  # whiteout of something that never existed
            f("meta/upper", "u"),  # no entry for meta: the lower one's metadata stays
        ],
        [
            f("etc/.wh.keep"),
            f("etc/keep", "again"),  # a whiteout hides lower layers only
            f("etc/sub/fresh", "f"),  # a path whited out below comes back fresh
        ],
    )
    result = layers.flatten(blobs)
    paths = listing(result.path)
    assert not [p for p in paths if ".wh." in p]
    image = SquashfsImage(result.path)
    assert image.listdir("/etc") == ["keep", "sub"]
    assert image.listdir("/etc/sub") == ["fresh"]
    assert image.read_text("/etc/keep") == "again"
    assert image.listdir("/opt/old") == ["new"]
    assert image.listdir("/var/replaced") == ["inner"]
    assert image.read_text("/var/was-dir") == "now a file"
    assert image.listdir("/srv") == ["www"]
    meta = image.stat("/meta")
    assert meta is not None and (meta.mode, meta.uid) == (0o700, 7)
    assert image.listdir("/meta") == ["lower", "upper"]
    assert "/nothing" not in paths  # a whiteout creates no directory
    if IS_ROOT:
        tree = unpack(result.path, tmp_path / "unpacked")
        assert tree_digest(tree) == tree_digest(layers.extracted(blobs))


def test_a_file_between_two_directories_drops_the_lowest_children(
    layers: Layers, tmp_path: Path
) -> None:
    blobs = layers.stack(
        [d("x", mode=0o700), f("x/old", "o"), f("y/old", "o")],
        [f("x", "a file now"), sym("y", "elsewhere")],
        [d("x"), f("x/new", "n"), d("y")],
    )
    image = SquashfsImage(layers.flatten(blobs).path)
    assert image.listdir("/x") == ["new"]
    assert image.listdir("/y") == []
    if IS_ROOT:
        tree = unpack(layers.root / "image.squashfs", tmp_path / "unpacked")
        assert tree_digest(tree) == tree_digest(layers.extracted(blobs))


def test_opaque_marker_alone_leaves_an_empty_directory(layers: Layers, tmp_path: Path) -> None:
    blobs = layers.stack(
        [d("cache", mode=0o750), f("cache/a", "a"), f("cache/sub/b", "b"), f("other", "o")],
        [f("cache/.wh..wh..opq")],
        [f("unrelated", "u")],
    )
    result = layers.flatten(blobs)
    image = SquashfsImage(result.path)
    assert image.listdir("/cache") == []
    cache = image.stat("/cache")
    assert cache is not None and cache.mode == 0o750  # the lower entry's metadata
    assert image.listdir("/") == ["cache", "other", "unrelated"]
    if IS_ROOT:
        tree = unpack(result.path, tmp_path / "unpacked")
        assert tree_digest(tree) == tree_digest(layers.extracted(blobs))


def test_opaque_root_hides_every_lower_layer(layers: Layers) -> None:
    blobs = layers.stack([f("a", "a"), f("dir/b", "b")], [f(".wh..wh..opq"), f("top", "t")])
    assert SquashfsImage(layers.flatten(blobs).path).listdir("/") == ["top"]


def test_hard_link_whose_file_a_later_layer_replaced(layers: Layers, tmp_path: Path) -> None:
    blobs = layers.stack(
        [
            f("bin/tool", "old tool", mode=0o4750, uid=3),
            hard("bin/tool-alias", "bin/tool"),
            hard("bin/tool-alias2", "bin/tool-alias"),  # a link to a link: the same file
            f("lib/data", "data"),
            hard("lib/data-link", "lib/data"),
        ],
        [f("bin/tool", "new tool"), f("lib/.wh.data")],
    )
    result = layers.flatten(blobs)
    image = SquashfsImage(result.path)
    assert image.read_text("/bin/tool") == "new tool"
    assert image.read_text("/bin/tool-alias") == "old tool"
    alias = image.stat("/bin/tool-alias")
    assert alias is not None and (alias.mode, alias.uid) == (0o4750, 3)
    assert image.read_text("/bin/tool-alias2") == "old tool"
    assert image.listdir("/lib") == ["data-link"]
    assert image.read_text("/lib/data-link") == "data"
    if IS_ROOT:
        tree = unpack(result.path, tmp_path / "unpacked")
        assert tree_digest(tree) == tree_digest(layers.extracted(blobs))
        assert (tree / "bin/tool-alias").stat().st_ino == (tree / "bin/tool-alias2").stat().st_ino
        assert (tree / "bin/tool-alias").stat().st_ino != (tree / "bin/tool").stat().st_ino


def test_the_same_layers_give_the_same_bytes(layers: Layers) -> None:
    entries = [f(f"dir{i % 7}/file{i}", os.urandom(3000) * (i % 5 + 1)) for i in range(200)]
    blobs = layers.stack(entries, [f("dir1/.wh.file1"), f("added", "a")])
    first = layers.flatten(blobs, "one.squashfs", jobs=1)
    second = layers.flatten(blobs, "two.squashfs", jobs=2)
    os.environ["SOURCE_DATE_EPOCH"] = "12345"  # must not leak into the superblock
    try:
        third = layers.flatten(blobs, "three.squashfs")
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    assert first.digest == second.digest == third.digest
    assert first.path.read_bytes() == second.path.read_bytes()
    other_level = layers.flatten(blobs, "level9.squashfs", compression_level=9)
    assert SquashfsImage(other_level.path).entries() == SquashfsImage(first.path).entries()


def test_plain_tar_and_empty_layers(layers: Layers) -> None:
    plain = layers.blob(tar_of([f("plain", "p")]), compress=False)
    empty_tar = layers.blob(tar_of([]))
    nothing = layers.blob(b"", compress=True)
    result = layers.flatten([plain, empty_tar, nothing])
    assert SquashfsImage(result.path).listdir("/") == ["plain"]
    assert result.layers == 3


def test_sparse_files_count_at_full_size(layers: Layers, tmp_path: Path) -> None:
    source = tmp_path / "sparse-source"
    source.mkdir()
    with (source / "disk.img").open("wb") as handle:
        handle.truncate(40 * MiB)
        handle.seek(20 * MiB)
        handle.write(b"middle")
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=pax", "-cf", str(archive), "-C", str(source),
                    "disk.img"], check=True)  # fmt: skip
    data = archive.read_bytes()
    assert len(data) < MiB  # the holes are not in the tar
    blob = layers.blob(data)
    with pytest.raises(UnsafeLayerError, match=r"disk\.img.*more than 10485760 bytes"):
        layers.flatten([blob], limits=Limits(extract_max_total_bytes=10 * MiB))
    result = layers.flatten([blob])
    image = SquashfsImage(result.path)
    entry = image.stat("/disk.img")
    assert entry is not None and entry.size == 40 * MiB
    assert result.size < 2 * MiB  # zero blocks stay sparse in the image
    assert result.tar_bytes == 40 * MiB


def test_flatten_image_from_an_oci_layout(tmp_path: Path) -> None:
    from cosgitops.oci.layout import OCILayoutStore

    store = OCILayoutStore(tmp_path / "layout")
    store.ensure_layout()
    raws = [
        tar_of([f("etc/os-release", 'NAME="Test OS"\nVERSION_ID=1\n')]),
        tar_of([f("usr/x", "x")]),
    ]
    layers_json = []
    for raw in raws:
        blob = gzip.compress(raw, mtime=0)
        digest = digest_of(blob)
        store.put_blob(blob, digest, size=len(blob))
        layers_json.append({"mediaType": media.OCI_LAYER_GZIP, "digest": digest, "size": len(blob)})
    rootfs = {"type": "layers", "diff_ids": [digest_of(raw) for raw in raws]}
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs}).encode()
    store.put_blob(config, digest_of(config), size=len(config))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media.OCI_MANIFEST,
        "config": {"mediaType": media.OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": layers_json,
    }).encode()  # fmt: skip
    store.put_manifest(manifest, media.OCI_MANIFEST, tag="1.0.0")
    result = flatten_image(store, "1.0.0", tmp_path / "out" / "image.squashfs")
    image = SquashfsImage(result.path)
    assert image.os_release() == {"NAME": "Test OS", "VERSION_ID": "1"}
    assert result.layers == 2
    from cosgitops.oci.store import Descriptor

    descriptors = [Descriptor.from_json(item) for item in layers_json]
    with pytest.raises(RemoteDataError, match="2 layers but its config lists 1"):
        layer_blobs(descriptors, {"rootfs": {"diff_ids": [digest_of(raws[0])]}}, store.blob_path)
    with pytest.raises(RemoteDataError, match=r"no valid rootfs\.diff_ids"):
        layer_blobs(descriptors, {}, store.blob_path)


# ------------------------------------------------------------------ agreement with extract.py


def _random_stack(rng: random.Random) -> list[list[E]]:
    names = ["a", "b", "c", "etc", "lib"]
    stack: list[list[E]] = []
    for _ in range(rng.randint(1, 4)):
        entries: list[E] = []
        used: set[str] = set()
        nondirs: set[str] = set()
        for _ in range(rng.randint(1, 12)):
            depth = rng.randint(1, 3)
            path = "/".join(rng.choice(names) for _ in range(depth))
            parents = {"/".join(path.split("/")[:i]) for i in range(1, depth)}
            if path in used or parents & nondirs or any(u.startswith(path + "/") for u in used):
                continue
            roll = rng.random()
            if roll < 0.35:
                mode = rng.choice([0o644, 0o4755, 0o600])
                uid = rng.choice([0, 1, 1000])
                entries.append(f(path, rng.choice(["x", "yy", "zzz"]), mode=mode, uid=uid))
                nondirs.add(path)
            elif roll < 0.55:
                entries.append(d(path, mode=rng.choice([0o755, 0o700]), uid=rng.choice([0, 5])))
            elif roll < 0.65:
                entries.append(sym(path, rng.choice(["a", "/etc", "../x"])))
                nondirs.add(path)
            elif roll < 0.75:
                files = [e.name for e in entries if e.kind == "file"]
                if not files:
                    continue
                entries.append(hard(path, rng.choice(files)))
                nondirs.add(path)
            elif roll < 0.92:
                parent, _, base = path.rpartition("/")
                entries.append(f(f"{parent}/.wh.{base}" if parent else f".wh.{base}"))
                path = f"{parent}/.wh.{base}"
            else:
                entries.append(f(f"{path}/.wh..wh..opq"))
                path = f"{path}/.wh..wh..opq"
            used.add(path)
            used.update(parents)
        stack.append(entries)
    return stack


@pytest.mark.skipif(not IS_ROOT, reason="owners need root to compare unpacked trees")
def test_random_layer_stacks_match_the_extractor(tmp_path: Path) -> None:
    """Whatever both accept, they must agree on, entry for entry (owners, modes, data)."""
    rng = random.Random(20240610)
    compared = 0
    for round_number in range(100):
        stack = _random_stack(rng)
        work = Layers(tmp_path / f"round-{round_number}")
        blobs = work.stack(*stack)
        try:
            expected = tree_digest(work.extracted(blobs))
        except UnsafeLayerError:
            continue  # e.g. an upper layer writing through a lower symlink
        try:
            result = work.flatten(blobs)
        except UnsafeLayerError as error:
            pytest.fail(
                f"round {round_number}: flatten refused what extract accepted: {error}\n{stack}"
            )
        tree = unpack(result.path, work.root / "unpacked")
        assert tree_digest(tree) == expected, f"round {round_number}: {stack}"
        compared += 1
    assert compared >= 40


# ------------------------------------------------------------------ refusals


_NFS4_ACL = {"SCHILY.xattr.system.nfs4_acl": "a"}
_BIG = {"SCHILY.xattr.user.big": "v" * 70000}
HOSTILE = {
    "absolute": ([f("/etc/passwd", "x")], "absolute path"),
    "dotdot": ([f("../outside", "x")], r"climbs out .*'\.\.'"),
    "dotdot-inside": ([f("a/../../outside", "x")], "climbs out"),
    "block-device": ([E("dev/sda", "blk")], "device node"),
    "char-device": ([E("dev/mem", "chr")], "device node"),
    "fifo": ([E("run/fifo", "fifo")], "FIFO"),
    "hardlink-missing": ([hard("stolen", "not-there")], "not a regular file earlier"),
    "hardlink-dir": ([d("dir"), hard("stolen", "dir")], "not a regular file earlier"),
    "hardlink-symlink": ([sym("link", "x"), hard("stolen", "link")], "not a regular file"),
    "hardlink-forward": ([hard("stolen", "later"), f("later", "x")], "not a regular file earlier"),
    "hardlink-absolute": ([hard("stolen", "/etc/passwd")], "absolute"),
    "hardlink-dotdot": ([hard("stolen", "../x")], "climbs out"),
    "long-name": ([f("n" * 256, "x")], "longer than 255 bytes"),
    "long-path": ([f("/".join(["d" * 200] * 21), "x")], "longer than 4096 bytes"),
    "too-deep": ([f("/".join(["d"] * 129), "x")], "129 levels deep"),
    "duplicate": ([f("x", "1"), f("x", "2")], "appears twice"),
    "through-symlink": ([sym("escape", "/"), f("escape/tmp/pwned", "x")], "below /escape"),
    "through-file": ([f("file", "x"), f("file/child", "y")], "below /file"),
    "file-over-own-dir": ([f("dir/child", "y"), f("dir", "x")], "has entries below it"),
    "nfs4-acl-xattr": ([f("x", "a", pax=_NFS4_ACL)], "squashfs cannot store"),
    "big-xattr": ([f("x", "a", pax=_BIG)], "too large"),
    "empty-whiteout": ([f("etc/.wh."), f("x")], "names no valid entry"),
    "huge-uid": ([f("x", "a", uid=2**32)], "out of range"),
}


@pytest.mark.parametrize(("entries", "message"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_entries_are_refused_naming_layer_and_entry(
    layers: Layers, entries: list[E], message: str
) -> None:
    blobs = layers.stack([f("fine", "ok")], entries)
    with pytest.raises(UnsafeLayerError, match=message) as caught:
        layers.flatten(blobs)
    assert "layer 2 of 2 (sha256:" in str(caught.value)
    assert "entry '" in str(caught.value)
    assert not (layers.root / "image.squashfs").exists()
    assert not list(layers.root.glob(".tmp-*"))


def test_a_lower_file_under_an_upper_directory_is_refused(layers: Layers) -> None:
    """An upper layer that writes below a path a lower layer made a symlink would write
    through it; the extractor refuses that too."""
    blobs = layers.stack([sym("etc", "/tmp/elsewhere")], [f("etc/passwd", "x")])
    with pytest.raises(
        UnsafeLayerError, match=r"layer 1 of 2.*'etc'.*layer above has entries below"
    ):
        layers.flatten(blobs)
    with pytest.raises(UnsafeLayerError):
        layers.extracted(blobs)
    # with an explicit directory entry the symlink is simply replaced
    blobs = layers.stack([sym("etc", "/tmp/elsewhere")], [d("etc"), f("etc/passwd", "x")])
    assert SquashfsImage(layers.flatten(blobs).path).listdir("/etc") == ["passwd"]


def test_hard_link_to_a_lower_layer_is_refused(layers: Layers) -> None:
    blobs = layers.stack([f("bin/tool", "t")], [hard("bin/alias", "bin/tool")])
    with pytest.raises(UnsafeLayerError, match=r"layer 2 of 2.*bin/alias"):
        layers.flatten(blobs)


def test_entry_and_byte_budgets(layers: Layers) -> None:
    blobs = layers.stack([f(f"f{i}", "x") for i in range(6)], [f("g", "y" * 100)])
    with pytest.raises(UnsafeLayerError, match="more than 5 entries"):
        layers.flatten(blobs, limits=Limits(extract_max_entries=5))
    with pytest.raises(UnsafeLayerError, match="more than 50 bytes"):
        layers.flatten(blobs, limits=Limits(extract_max_total_bytes=50))
    with pytest.raises(UnsafeLayerError, match="3 levels deep"):
        layers.flatten(layers.stack([f("a/b/c", "x")]), limits=Limits(extract_max_depth=2))
    assert layers.flatten(blobs, limits=Limits(extract_max_entries=7, extract_max_total_bytes=106))


def test_zstd_layers_are_refused(layers: Layers) -> None:
    blob = layers.blob(b"\x28\xb5\x2f\xfd" + b"\x00" * 64, compress=False)
    zstd = LayerBlob(
        blob.path, "application/vnd.oci.image.layer.v1.tar+zstd", blob.digest, blob.diff_id
    )
    with pytest.raises(UnsafeLayerError, match="zstd"):
        layers.flatten([zstd])


# ------------------------------------------------------------------ digests and damage


def test_digest_and_diff_id_are_checked_while_streaming(layers: Layers) -> None:
    raw = tar_of([f("etc/hello", "hi")])
    good = layers.blob(raw)
    wrong_diff = LayerBlob(good.path, good.media_type, good.digest, digest_of(b"other"))
    with pytest.raises(IntegrityError, match="not the diff_id"):
        layers.flatten([wrong_diff])
    wrong_digest = LayerBlob(good.path, good.media_type, digest_of(b"other"), good.diff_id)
    with pytest.raises(IntegrityError, match="does not match its digest"):
        layers.flatten([wrong_digest])
    # a tampered blob under the old name: the content changed, so both digests fail
    tampered = gzip.compress(tar_of([f("etc/hello", "evil")]), mtime=0)
    good.path.write_bytes(tampered)
    with pytest.raises(IntegrityError):
        layers.flatten([good])
    assert not (layers.root / "image.squashfs").exists()


def test_a_failed_flatten_keeps_the_previous_output(layers: Layers) -> None:
    target = layers.root / "image.squashfs"
    target.write_bytes(b"previous")
    blob = layers.blob(tar_of([f("x", "x")]), diff_id=digest_of(b"nope"))
    with pytest.raises(IntegrityError):
        layers.flatten([blob])
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in layers.root.iterdir()) == ["blobs", "image.squashfs"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated-gzip"),
        pytest.param(lambda data: data[:10] + bytes(b ^ 0x55 for b in data[10:40]) + data[40:],
                     id="corrupt-gzip"),
        pytest.param(lambda data: data + b"trailing garbage", id="garbage-after-gzip"),
        pytest.param(lambda data: b"this is not a layer at all" * 40, id="not-gzip"),
    ],
)  # fmt: skip
def test_damaged_blobs_are_refused(layers: Layers, damage: object) -> None:
    raw = tar_of([f("etc/file", os.urandom(5000))])
    damaged = damage(gzip.compress(raw, mtime=0))  # type: ignore[operator]
    path = layers.blobs / "damaged"
    path.write_bytes(damaged)
    blob = LayerBlob(path, media.OCI_LAYER_GZIP, digest_of(damaged), digest_of(raw))
    with pytest.raises(RemoteDataError):
        layers.flatten([blob])
    assert not (layers.root / "image.squashfs").exists()


def test_data_hidden_after_a_damaged_header_is_refused(layers: Layers) -> None:
    """Python's tar reader stops quietly at a broken header in the middle of an archive;
    what follows it must not silently vanish from the image."""
    first = tar_of([f("a", "a")])[:-1024]  # without its end-of-archive blocks
    broken = bytearray(tar_of([f("b", "b")]))
    broken[148:156] = b"garbage!"  # the header checksum
    raw = first + bytes(broken)
    blob = layers.blob(raw)
    with pytest.raises(RemoteDataError, match="data follows the end of its tar archive"):
        layers.flatten([blob])
    padded = layers.blob(tar_of([f("a", "a")]) + b"\x00" * 8192)  # zero padding is fine
    assert SquashfsImage(layers.flatten([padded]).path).listdir("/") == ["a"]


def test_missing_blob(layers: Layers) -> None:
    blob = LayerBlob(layers.blobs / "absent", media.OCI_LAYER_GZIP, digest_of(b""), digest_of(b""))
    with pytest.raises(NotFoundError, match="does not exist"):
        layers.flatten([blob])


# ------------------------------------------------------------------ reading images back


def test_reading_an_image_follows_symlinks_and_parses_os_release(layers: Layers) -> None:
    blobs = layers.stack(
        [
            f("usr/lib/os-release", 'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
              "PRETTY_NAME='Debian 12 (bookworm)'\n# comment\nBAD LINE\n"),
            sym("etc/os-release", "../usr/lib/os-release"),
            f("boot/vmlinuz-6.1.0-amd64", b"kernel"),
            sym("boot/vmlinuz", "vmlinuz-6.1.0-amd64"),
            sym("lib", "usr/lib"),
            sym("abs", "/lib/os-release"),
            sym("loop1", "loop2"),
            sym("loop2", "loop1"),
            f("dir with space/file \"quoted\"", "q"),
        ]
    )  # fmt: skip
    image = SquashfsImage(layers.flatten(blobs).path)
    assert image.os_release() == {
        "NAME": "Debian GNU/Linux", "VERSION_ID": "12", "ID": "debian",
        "PRETTY_NAME": "Debian 12 (bookworm)",
    }  # fmt: skip
    assert image.read_bytes("/boot/vmlinuz") == b"kernel"
    assert image.resolve("/abs").path == "/usr/lib/os-release"
    assert image.resolve("usr/lib/../../boot/vmlinuz").path == "/boot/vmlinuz-6.1.0-amd64"
    with pytest.raises(NotFoundError):  # ".." after a symlink is the parent of its target
        image.resolve("lib/../boot/vmlinuz")
    assert image.stat("/boot/vmlinuz") is not None
    assert image.stat("/nope") is None
    assert image.stat("/boot/vmlinuz-6.1.0-amd64/below") is None
    with pytest.raises(NotFoundError, match="too many symlinks"):
        image.resolve("/loop1")
    with pytest.raises(NotFoundError, match="not in the image"):
        image.read_bytes("/boot/initrd.img")
    with pytest.raises(NotFoundError, match="not a file"):
        image.read_bytes("/boot")
    assert image.read_text('/dir with space/file "quoted"') == "q"
    assert ("file", '/dir with space/file "quoted"') in image.entries()
    assert image.listdir("/lib") == ["os-release"]
    assert image.listdir("/dir with space") == ['file "quoted"']
    assert image.stat("/") is not None


def test_parse_os_release() -> None:
    assert parse_os_release('A="x \\"y\\""\nB=plain\n\nC=\'single\'\n#D=no\nE="unterminated\n') == {
        "A": 'x "y"', "B": "plain", "C": "single", "E": "unterminated",
    }  # fmt: skip


def test_not_an_image(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.squashfs"
    bogus.write_bytes(b"nope" * 100)
    from cosgitops.device.flatten import SquashfsError

    with pytest.raises(SquashfsError):
        SquashfsImage(bogus).listdir("/")
    with pytest.raises(NotFoundError):
        SquashfsImage(tmp_path / "absent.squashfs")


def test_file_modes_survive_as_extract_sees_them(layers: Layers, tmp_path: Path) -> None:
    blobs = layers.stack(
        [d("ro", mode=0o555), f("ro/inside", "x", mode=0o400), f("exec", "#!", mode=0o6711)]
    )
    image = SquashfsImage(layers.flatten(blobs).path)
    entry = image.stat("/exec")
    assert entry is not None and stat.S_IMODE(entry.mode) == 0o6711
    if IS_ROOT:
        tree = unpack(layers.root / "image.squashfs", tmp_path / "unpacked")
        assert tree_digest(tree) == tree_digest(layers.extracted(blobs))


def test_a_tampered_blob_is_reported_by_its_digest_whatever_else_breaks(layers: Layers) -> None:
    """Damage that also breaks the gzip stream or plants a hostile entry is still named
    for what it is, a blob that does not match its digest, so the cache can drop it."""
    from cosgitops.device.flatten import LayerIntegrityError

    good = layers.blob(tar_of([f("etc/file", os.urandom(3000))]))
    good.path.write_bytes(good.path.read_bytes()[:-1] + b"!")  # breaks the gzip trailer
    with pytest.raises(LayerIntegrityError, match="does not match its digest") as caught:
        layers.flatten([good])
    assert caught.value.digest == good.digest
    hostile = gzip.compress(tar_of([f("../escape", "x")]), mtime=0)
    good.path.write_bytes(hostile)
    with pytest.raises(LayerIntegrityError):
        layers.flatten([good])


def test_posix_acls_are_left_out_and_named(layers: Layers) -> None:
    acl = {"SCHILY.xattr.system.posix_acl_access": "\x02\x00\x00\x00",
           "SCHILY.xattr.system.posix_acl_default": "\x02\x00\x00\x00",
           "SCHILY.xattr.user.kept": "yes"}  # fmt: skip
    blobs = layers.stack([d("var/log/journal", mode=0o2755, gid=101, pax=acl), f("x", "x")])
    result = layers.flatten(blobs)
    assert result.dropped_acls == ("/var/log/journal",)
    assert result.to_json()["droppedAcls"] == ["/var/log/journal"]
    xattrs = subprocess.run(["rdsquashfs", "-x", "/var/log/journal", str(result.path)],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "user.kept=yes" in xattrs and "posix_acl" not in xattrs
