"""A root file system tarball -> split, reproducible OCI layers, losing nothing."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from cosgitops.errors import BuildError
from cosgitops.osbase.rootfs import pack_rootfs, read_members

EPOCH = 1_700_000_000
CAPABILITY = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


def _add(
    archive: tarfile.TarFile,
    name: str,
    *,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    link: str = "",
    xattrs: dict[str, bytes] | None = None,
    mtime: int = EPOCH + 99,
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
    info.linkname = link
    if xattrs:
        info.pax_headers = {
            f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
            for key, value in xattrs.items()
        }
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    else:
        archive.addfile(info)


def make_rootfs(path: Path, *, special: str | None = None) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for folder in (
            "./",
            "./boot/",
            "./dev/",
            "./etc/",
            "./usr/",
            "./usr/bin/",
            "./usr/lib/",
            "./usr/lib/cosgitops/",
            "./usr/lib/cosgitops/base/",
            "./usr/lib/modules/",
            "./usr/lib/python3.11/",
        ):
            _add(archive, folder, kind=tarfile.DIRTYPE, mode=0o755)
        _add(archive, "./boot/vmlinuz-6.1", data=b"kernel")
        _add(archive, "./boot/vmlinuz", kind=tarfile.SYMTYPE, link="vmlinuz-6.1", mode=0o777)
        _add(archive, "./dev/null", kind=tarfile.CHRTYPE, mode=0o666)
        _add(archive, "./dev/fd", kind=tarfile.SYMTYPE, link="/proc/self/fd", mode=0o777)
        _add(archive, "./etc/os-release", kind=tarfile.SYMTYPE, link="../usr/lib/os-release")
        _add(archive, "./etc/shadow", data=b"root:*:1::::::\n", mode=0o640, gid=42)
        _add(
            archive,
            "./usr/bin/ping",
            data=b"ping",
            mode=0o755,
            xattrs={"security.capability": CAPABILITY},
        )
        _add(archive, "./usr/bin/su", data=b"su", mode=0o4755)
        _add(archive, "./usr/lib/cosgitops/base/packages.tsv", data=b"jq\t1.6\n")
        _add(archive, "./usr/lib/cosgitops/agent.py", data=b"print('agent')\n")
        _add(archive, "./usr/lib/modules/ext4.ko", data=b"module")
        # a hard link in the kernel part's folder to a file of the system part
        _add(archive, "./usr/lib/modules/su-link", kind=tarfile.LNKTYPE, link="./usr/bin/su")
        _add(archive, "./usr/lib/os-release", data=b'NAME="Debian GNU/Linux"\n')
        _add(archive, "./usr/lib/python3.11/os.py", data=b"# os\n")
        if special:
            _add(archive, special, kind=tarfile.FIFOTYPE)
    return path


def members(blob: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(blob, "r:gz") as archive:
        return {member.name: member for member in archive}


def test_split_layers_keep_everything(tmp_path: Path) -> None:
    packed = pack_rootfs(
        make_rootfs(tmp_path / "root.tar"), tmp_path / "out", epoch=EPOCH, os_release="NAME=Base\n"
    )
    parts = {name: members(blob.path) for name, blob in packed.layers}
    assert list(parts) == ["kernel", "agent", "python", "system"]
    kernel, agent, python, system = (parts[n] for n in ("kernel", "agent", "python", "system"))
    assert {
        "boot",
        "boot/vmlinuz-6.1",
        "boot/vmlinuz",
        "usr",
        "usr/lib",
        "usr/lib/modules",
        "usr/lib/modules/ext4.ko",
    } <= set(kernel)
    assert "usr/lib/cosgitops/agent.py" in agent and "usr/lib/python3.11/os.py" in python
    # the package list changes with every package: not in the agent's layer
    assert "usr/lib/cosgitops/base/packages.tsv" in system
    assert not any(name.startswith("usr/lib/cosgitops/base") for name in agent)
    # the hard link went with its target
    assert "usr/lib/modules/su-link" in system and "usr/lib/modules/su-link" not in kernel
    assert system["usr/lib/modules/su-link"].islnk()
    assert system["usr/lib/modules/su-link"].linkname == "usr/bin/su"
    # owners, setuid, capabilities, clamped times
    assert system["usr/bin/su"].mode == 0o4755
    assert system["etc/shadow"].gid == 42 and system["etc/shadow"].mode == 0o640
    cap = system["usr/bin/ping"].pax_headers["SCHILY.xattr.security.capability"]
    assert cap.encode("utf-8", "surrogateescape") == CAPABILITY
    assert all(m.mtime <= EPOCH for part in parts.values() for m in part.values())
    # /dev is kept empty of nodes; os-release is a regular file with the base's text
    assert "dev" in system and "dev/null" not in system and "dev/fd" not in system
    assert set(packed.dropped) == {"dev/null", "dev/fd"}
    assert system["etc/os-release"].isreg()
    with tarfile.open(next(b for n, b in packed.layers if n == "system").path, "r:gz") as archive:
        handle = archive.extractfile("etc/os-release")
        assert handle is not None and handle.read() == b"NAME=Base\n"
    # each layer's diff_id is the digest of its uncompressed tar
    import hashlib

    for _name, blob in packed.layers:
        assert (
            blob.diff_id
            == "sha256:" + hashlib.sha256(gzip.decompress(blob.path.read_bytes())).hexdigest()
        )


def test_gnu_tar_extracts_capabilities(tmp_path: Path) -> None:
    packed = pack_rootfs(
        make_rootfs(tmp_path / "root.tar"), tmp_path / "out", epoch=EPOCH, os_release="NAME=Base\n"
    )
    system = next(blob for name, blob in packed.layers if name == "system")
    listing = subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-tvvzf", str(system.path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "usr/bin/ping" in listing


def test_reproducible(tmp_path: Path) -> None:
    source = make_rootfs(tmp_path / "root.tar")
    first = pack_rootfs(source, tmp_path / "a", epoch=EPOCH, os_release="NAME=Base\n")
    second = pack_rootfs(source, tmp_path / "b", epoch=EPOCH, os_release="NAME=Base\n")
    assert [b.digest for _n, b in first.layers] == [b.digest for _n, b in second.layers]
    third = pack_rootfs(source, tmp_path / "c", epoch=EPOCH, os_release="NAME=Other\n")
    assert [b.digest for _n, b in first.layers][:3] == [b.digest for _n, b in third.layers][:3]
    assert first.layers[3][1].digest != third.layers[3][1].digest


def test_special_file_outside_dev_is_refused(tmp_path: Path) -> None:
    source = make_rootfs(tmp_path / "root.tar", special="./etc/initctl")
    with pytest.raises(BuildError, match="special file /etc/initctl"):
        pack_rootfs(source, tmp_path / "out", epoch=EPOCH, os_release="")
    assert not list((tmp_path / "out").glob("*")), "nothing half written is left"


def test_read_members(tmp_path: Path) -> None:
    source = make_rootfs(tmp_path / "root.tar")
    found = read_members(source, ["usr/lib/os-release", "etc/os-release", "missing"])
    assert found == {"usr/lib/os-release": b'NAME="Debian GNU/Linux"\n'}
