"""The agent against an OCI layout and a TUF index read straight from its folder
(file://): the offline set-up the demo uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosgitops.device.agent import DeviceAgent
from tests.device.fleet import DERIVATIVE, Fleet, base_layer, overlay_layer, slot_files


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path / "fleet", f"oci:{tmp_path / 'fleet' / 'registry' / DERIVATIVE}")


def test_install_upgrade_commit_offline(tmp_path: Path, fleet: Fleet) -> None:
    base = base_layer()
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    agent = DeviceAgent(tmp_path / "device")
    report = agent.install(fleet.setup(f"file://{fleet.public_dir}"))
    assert report.action == "install" and report.installed is not None
    status = agent.status().to_json()
    assert status["active"]["version"] == "1.0.0"
    assert status["recovery"]["version"] == "1.0.0"
    assert status["passive"] is None and status["pending"] is False
    assert slot_files(agent)["etc/motd"] == b"release 1.0.0\n"

    fleet.release("1.1.0", [base, overlay_layer("1.1.0")])
    check = agent.check()
    assert check.choice.release is not None and check.choice.release.version == "1.1.0"
    upgrade = agent.upgrade()
    assert upgrade.installed is not None and upgrade.installed.version == "1.1.0"
    assert len(upgrade.cache.downloaded) == 1 and len(upgrade.cache.reused) == 1
    status = agent.status().to_json()
    assert (status["active"]["version"], status["passive"]["version"]) == ("1.1.0", "1.0.0")
    assert status["pending"] is True
    boot = agent.boot_check()
    assert boot.outcome == "committed"
    assert agent.status().to_json()["pending"] is False
    assert (tmp_path / "device" / "state" / "active" / "etc" / "motd").read_text() == (
        "release 1.1.0\n"
    )
