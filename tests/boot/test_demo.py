"""`cosgitops demo --boot`: the whole loop on a real OS, asserted from inside the guest
(its serial console) and from the disk afterwards (read without booting it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosgitops.bootdisk.read import DiskImage, read_grubenv
from cosgitops.demoboot import run_boot_demo
from tests.helpers.bootbase import BuiltBase

pytestmark = [pytest.mark.boot, pytest.mark.timeout(3600)]


def test_demo_boot_upgrades_commits_and_falls_back(tmp_path: Path, built_base: BuiltBase) -> None:
    lines: list[str] = []
    result = run_boot_demo(
        tmp_path / "demo",
        narrate=lines.append,
        mirrors=built_base.sources,
        wheelhouse=built_base.wheelhouse,
        cache_dir=built_base.cache,
    )
    assert result.base_reused, "the session's base is reused, not built again"
    assert [boot.outcome for boot in result.boots] == ["reboot", "reboot", "reboot", "poweroff"]
    booted = [boot.last("booted") or {} for boot in result.boots]
    assert [(b.get("version"), b.get("slot")) for b in booted] == [
        ("1.0.0", "active"),
        ("1.1.0", "active"),
        ("1.2.0", "active"),
        ("1.1.0", "passive"),  # GRUB fell back by itself
    ]
    for event in booted:
        assert event["root"] == "ro"
        mounts = event["mounts"]
        assert mounts["/etc"].startswith("overlay") and mounts["/var"].startswith("overlay")
        assert mounts["/oem"] == "ext4 rw" and mounts["/usr/local"] == "ext4 rw"
    checks = [(boot.last("boot-check") or {}).get("outcome") for boot in result.boots]
    assert checks == ["committed", "committed", "retry", "fell-back"]
    # only the changed layers travel: the motd's overlay layer and the os-release layer
    assert 0 < result.upgrade_bytes < result.image_bytes / 1000
    upgrade = result.boots[0].last("upgrade") or {}
    assert upgrade["outcome"] == "applied" and upgrade["layersDownloaded"] == 2
    assert upgrade["layersReused"] >= 4
    # /etc forgets, /oem and /usr/local remember; the cloud-config ran at every boot
    probes = [boot.last("probe") or {} for boot in result.boots]
    assert [p.get("etcLines") for p in probes] == [1, 1, 1, 1]
    assert [p.get("oemLines") for p in probes] == [1, 2, 3, 4]
    assert [p.get("localLines") for p in probes] == [1, 2, 3, 4]
    for probe in probes:
        assert (probe["user"], probe["key"], probe["unit"]) == ("present", "present", "enabled")
        assert probe["file"] == "written by the boot stage"
    assert len({p["hostname"] for p in probes}) == 1, "one machine id across boots"
    stages = {
        e.get("stage"): e.get("ok") for e in result.boots[1].events if e.get("event") == "stage"
    }
    assert stages.get("boot") is True and stages.get("initramfs") is True
    # 1.2.0 is never offered again
    last = result.boots[-1].last("upgrade") or {}
    assert last.get("outcome") == "none" and "1.1.0" in last.get("summary", "")
    # the disk afterwards
    state = result.state
    assert state["slots"]["active"]["version"] == "1.1.0"
    assert state["slots"]["passive"] is None and state["boot"]["pending"] is False
    assert [item["version"] for item in result.rejected] == ["1.2.0"]
    env = read_grubenv(result.disk)
    assert env["cos_active"] == state["slots"]["active"]["storage"].removeprefix("state")
    assert env["cos_tentative"] == "" and env["cos_passive"] == ""
    disk = DiskImage(result.disk)
    slots = disk.listdir("COS_STATE", "/slots")
    assert len(slots) == 1, f"the failed image was removed: {slots}"
    # the release manifest carries the base's package list
    import json

    manifest = next((tmp_path / "demo" / "public" / "targets").rglob("*.1.1.0.json"))
    packages = {p["name"]: p["version"] for p in json.loads(manifest.read_text())["packages"]}
    assert "linux-image-amd64" in packages and "systemd" in packages
    # what a person reads
    text = "\n".join(lines)
    assert "GRUB fell back to 1.1.0" in text and "up to date at 1.1.0" in text
    assert sorted(p.name for p in (tmp_path / "demo" / "serial").iterdir()) == [
        "01-boot.log",
        "02-boot.log",
        "03-boot.log",
        "04-boot.log",
    ]
