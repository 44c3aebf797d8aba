"""Building a real base from the offline Debian mirror (root, mmdebstrap)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cosgitops.oci import open_store
from cosgitops.oci.transfer import read_image_config
from cosgitops.osbase.build import BOOT_LABEL, PACKAGES_LABEL, packages_from_config
from tests.helpers.bootbase import BASE_YAML, BuiltBase, build_shared_base, make_base_repository

pytestmark = [pytest.mark.osbase, pytest.mark.timeout(2400)]


def _config(built: BuiltBase) -> tuple[dict[str, Any], list[Path]]:
    reference = built.result.reference
    store = open_store(reference.split("@")[0])
    manifest = store.get_manifest(built.result.digest)
    config = read_image_config(store, manifest)
    layout = Path(reference.removeprefix("oci:").split("@")[0])
    blobs = [
        layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
        for layer in manifest.json()["layers"]
    ]
    return config, blobs


def test_base_image_holds_a_bootable_system(built_base: BuiltBase) -> None:
    config, blobs = _config(built_base)
    labels = config["config"]["Labels"]
    assert labels[BOOT_LABEL] == "1"
    assert "VARIANT_ID=cosgitops-debian" in labels["cosgitops.os-release"]
    packages = {p.name: p.version for p in packages_from_config(config)}
    assert {"linux-image-amd64", "systemd", "iputils-ping", "squashfs-tools-ng"} <= set(packages)
    assert len(json.loads(labels[PACKAGES_LABEL])) == len(built_base.result.packages)
    assert len(blobs) == 4 and config["rootfs"]["diff_ids"]
    entries: dict[str, tarfile.TarInfo] = {}
    for blob in blobs:
        with tarfile.open(blob, "r:gz") as archive:
            for member in archive:
                entries.setdefault(member.name, member)
    for path in (
        "boot/vmlinuz",
        "boot/initrd.img",
        "usr/lib/cosgitops/boot/efi/EFI/BOOT/BOOTX64.EFI",
        "usr/lib/cosgitops/boot/efi/EFI/BOOT/grub.cfg",
        "usr/lib/cosgitops/boot/image.cfg",
        "usr/share/initramfs-tools/scripts/cos",
        "usr/lib/cosgitops/venv/bin/cosgitops",
        "usr/bin/cosgitops",
        "usr/lib/systemd/system/cosgitops-boot-check.service",
        "etc/systemd/system/graphical.target.wants/cosgitops-boot-check.service",
        "etc/systemd/system/graphical.target.wants/cosgitops-update.service",
        "usr/lib/cosgitops/base/packages.tsv",
        "oem",
        "dev",
    ):
        assert path in entries, path
    # file capabilities survive (ping gets cap_net_raw from its postinst)
    ping = entries.get("usr/bin/ping")
    assert ping is not None and "SCHILY.xattr.security.capability" in ping.pax_headers
    assert not any(
        name.startswith("dev/") and not member.isdir() for name, member in entries.items()
    ), "no device nodes"
    assert not any(name.startswith("usr/share/man/") for name in entries), "docs trimmed"
    assert not any("/kernel/sound/" in name for name in entries), "modules trimmed"
    assert entries["etc/os-release"].isreg() and entries["etc/machine-id"].size == 0


def test_same_inputs_are_reused_and_rebuild_to_the_same_digest(built_base: BuiltBase) -> None:
    again = build_shared_base(
        built_base.repo, built_base.sources, built_base.wheelhouse, cache=built_base.cache
    )
    assert again.reused and again.digest == built_base.result.digest
    rebuilt = build_shared_base(
        built_base.repo,
        built_base.sources,
        built_base.wheelhouse,
        reuse=False,
        cache=built_base.cache,
    )
    assert not rebuilt.reused
    assert rebuilt.digest == built_base.result.digest, "the same packages give the same image"


def test_a_package_that_does_not_exist_is_named(
    tmp_path: Path, debian_sources: list[str], agent_wheelhouse: Path
) -> None:
    repo = make_base_repository(
        tmp_path / "repo", BASE_YAML.replace("[iputils-ping]", "[iputils-ping, no-such-pkg-x]")
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cosgitops",
            "base",
            "build",
            "debian",
            "-C",
            str(repo),
            "--wheelhouse",
            str(agent_wheelhouse),
            *(f"--mirror={s}" for s in debian_sources),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 1, result.stderr
    assert "no-such-pkg-x" in result.stderr and "spec.packages" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (repo / ".cosgitops" / "registry" / "bases").exists() or not any(
        (repo / ".cosgitops" / "registry" / "bases").rglob("index.json")
    )


def test_file_times_are_clamped_to_the_suite_not_the_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit that changes one package must leave the other layers as they were."""
    from cosgitops.osbase.build import file_epoch

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert file_epoch("bookworm", 1_800_000_000) == file_epoch("bookworm", 1_700_000_000)
    assert file_epoch("bookworm", 1_800_000_000) == 1686355200  # 2023-06-10
    assert file_epoch("sid", 1_800_000_000) == 1_800_000_000, "an unknown suite: the commit"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert file_epoch("bookworm", 1_700_000_000) == 1_700_000_000, "SOURCE_DATE_EPOCH wins"
