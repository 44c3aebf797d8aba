"""The agent against an OCI layout and a TUF index read straight from its folder
(file://): the offline set-up the demo uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cosgitops.device.agent import DeviceAgent
from cosgitops.errors import CosgitopsError, DownloadError
from tests.device.fleet import DERIVATIVE, Fleet, base_layer, overlay_layer, slot_files
from tests.helpers.services import require_binary


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


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosgitops", "device", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_squashfs_slots_rollback_by_hand_and_reset(tmp_path: Path, fleet: Fleet) -> None:
    require_binary("mksquashfs", "squashfs-tools")
    base = base_layer(4096)
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    root = tmp_path / "device"
    agent = DeviceAgent(root)
    agent.install(fleet.setup(str(fleet.public_dir), slot_format="squashfs"))
    assert (root / "state" / "active.squashfs").is_symlink()
    assert (root / "recovery" / "recovery.squashfs").is_symlink()
    fleet.release("1.1.0", [base, overlay_layer("1.1.0")])
    agent.upgrade()
    assert slot_files(agent)["etc/motd"] == b"release 1.1.0\n"
    assert agent.boot_check().outcome == "committed"  # checks ran in an unpacked view

    back = agent.rollback()
    assert (back.active.version, back.left.version if back.left else None) == ("1.0.0", "1.1.0")
    status = agent.status(verify=True).to_json()
    assert status["active"]["version"] == "1.0.0" and status["passive"]["version"] == "1.1.0"
    assert status["rejected"][0]["version"] == "1.1.0"
    assert all(value is True for value in status["verified"].values())
    assert agent.upgrade().action == "none"  # rolled back from 1.1.0: not offered again

    reset = agent.reset()
    assert reset.active.version == "1.0.0"
    status = agent.status(verify=True).to_json()
    assert status["passive"] is None and status["active"]["format"] == "squashfs"
    assert slot_files(agent)["etc/motd"] == b"release 1.0.0\n"


def test_recovery_upgrade_and_pins(tmp_path: Path, fleet: Fleet) -> None:
    base = base_layer(4096)
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    fleet.release("1.1.0", [base, overlay_layer("1.1.0")], channels=("beta",))
    agent = DeviceAgent(tmp_path / "device")
    first = agent.install(fleet.setup(str(fleet.public_dir)), version="1.0.0")
    assert first.installed is not None and first.installed.version == "1.0.0"
    assert agent.check().choice.release is None  # 1.1.0 is beta only
    pinned = agent.upgrade(version="1.1.0")  # a pin may cross channels
    assert pinned.installed is not None and pinned.installed.version == "1.1.0"
    assert agent.boot_check().outcome == "committed"
    recovery = agent.upgrade(recovery=True)
    assert recovery.slot == "recovery" and recovery.installed is not None
    status = agent.status().to_json()
    assert status["recovery"]["version"] == "1.1.0" and status["pending"] is False
    with pytest.raises(CosgitopsError, match="not published"):
        agent.upgrade(version="9.9.9")
    with pytest.raises(CosgitopsError, match="refused"):
        agent.upgrade(version="1.0.0")  # a downgrade needs --force
    forced = agent.upgrade(version="1.0.0", force=True)
    assert forced.action == "downgrade"


def test_pending_release_blocks_stacking_another(tmp_path: Path, fleet: Fleet) -> None:
    base = base_layer(4096)
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    agent = DeviceAgent(tmp_path / "device")
    agent.install(fleet.setup(str(fleet.public_dir)), recovery=False)
    fleet.release("1.1.0", [base, overlay_layer("1.1.0")])
    agent.upgrade()
    fleet.release("1.2.0", [base, overlay_layer("1.2.0")])
    with pytest.raises(CosgitopsError, match="boot assessment"):
        agent.upgrade()
    assert agent.boot_check().outcome == "committed"
    assert agent.upgrade().installed is not None


def test_cli_contract(tmp_path: Path, fleet: Fleet) -> None:
    base = base_layer(4096)
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    root = tmp_path / "device"
    result = run_cli(
        "install",
        "--root", str(root),
        "--index", f"file://{fleet.public_dir}",
        "--trusted-root", str(fleet.trusted_root),
        "--derivative", DERIVATIVE,
        "--key", str(fleet.cosign_pub),
        "--check", "marker=test ! -e etc/cosgitops-broken",
        "--max-attempts", "1",
        "--machine-id", "cli-test",
        "--platform", "linux/amd64",
        "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["installed"]["version"] == "1.0.0"
    assert (root / "agent" / "machine-id").read_text().strip() == "cli-test"
    config = (root / "agent" / "config.yaml").read_text()
    assert "trust/00-cosign.pub" in config  # the key was copied into the device root

    status = run_cli("status", "--root", str(root), "--format", "json")
    data = json.loads(status.stdout)
    assert set(data) >= {"active", "passive", "recovery", "pending", "rejected"}
    assert (data["active"]["version"], data["pending"], data["rejected"]) == ("1.0.0", False, [])
    assert data["recovery"]["version"] == "1.0.0"
    text = run_cli("status", "--root", str(root))
    assert "active    1.0.0" in text.stdout

    fleet.release("1.1.0", [base, overlay_layer("1.1.0", broken=True)])
    check = run_cli("check", "--root", str(root))
    assert check.returncode == 0 and "upgrade 1.0.0 -> 1.1.0" in check.stdout
    upgrade = run_cli("upgrade", "--root", str(root))
    assert upgrade.returncode == 0, upgrade.stderr
    assert "downloaded 1 layer(s)" in upgrade.stdout
    boot = run_cli("boot-check", "--root", str(root), "--format", "json")
    assert boot.returncode == 1  # the check failed, and the device rolled back
    assert json.loads(boot.stdout)["outcome"] == "rolled-back"
    again = run_cli("boot-check", "--root", str(root))
    assert again.returncode == 0 and "nothing to assess" in again.stdout

    missing = run_cli("status", "--root", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "error:" in missing.stderr
    assert "Traceback" not in missing.stderr
    usage = run_cli("install", "--root", str(tmp_path / "x"))
    assert usage.returncode == 2
    no_trust = run_cli(
        "init",
        "--root", str(tmp_path / "y"),
        "--index", str(fleet.public_dir),
        "--trusted-root", str(fleet.trusted_root),
        "--derivative", DERIVATIVE,
    )  # fmt: skip
    assert no_trust.returncode == 2 and "trust someone" in no_trust.stderr
    bad_check = run_cli("init", "--root", str(tmp_path / "z"), "--index", "/x",
                        "--trusted-root", str(fleet.trusted_root), "--derivative", DERIVATIVE,
                        "--key", str(fleet.cosign_pub), "--check", "nonsense")  # fmt: skip
    assert bad_check.returncode == 2 and "NAME=COMMAND" in bad_check.stderr


def test_unreachable_index_is_a_download_error(tmp_path: Path, fleet: Fleet) -> None:
    fleet.release("1.0.0", [base_layer(4096), overlay_layer("1.0.0")])
    agent = DeviceAgent(tmp_path / "device")
    agent.install(fleet.setup(str(fleet.public_dir)), recovery=False)
    (fleet.public_dir / "metadata" / "timestamp.json").unlink()
    with pytest.raises(DownloadError):
        agent.check()
    config = agent.config
    from dataclasses import replace

    from cosgitops.device.config import dump_agent_config

    moved = replace(config, index_url="http://127.0.0.1:9/nothing-listens-here")
    (tmp_path / "device" / "agent" / "config.yaml").write_bytes(dump_agent_config(moved))
    with pytest.raises(DownloadError):
        DeviceAgent(tmp_path / "device").check()


def test_install_with_nothing_published_on_the_channel(tmp_path: Path, fleet: Fleet) -> None:
    fleet.release("1.0.0", [base_layer(4096), overlay_layer("1.0.0")], channels=("beta",))
    agent = DeviceAgent(tmp_path / "device")
    with pytest.raises(CosgitopsError, match="nothing to install") as info:
        agent.install(fleet.setup(str(fleet.public_dir)))
    assert "device upgrade" in (info.value.hint or "")
    assert agent.status().to_json()["active"] is None
    with pytest.raises(CosgitopsError, match="already set up"):
        agent.install(fleet.setup(str(fleet.public_dir)))
    fleet.release("1.0.1", [base_layer(4096), overlay_layer("1.0.1")])
    assert agent.upgrade().action == "install"


def test_one_agent_at_a_time(tmp_path: Path, fleet: Fleet) -> None:
    import fcntl
    import os

    from cosgitops.config import Limits

    fleet.release("1.0.0", [base_layer(4096), overlay_layer("1.0.0")])
    root = tmp_path / "device"
    DeviceAgent(root).install(fleet.setup(str(fleet.public_dir)), recovery=False)
    fd = os.open(root / "agent" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another agent is busy
        impatient = DeviceAgent(root, limits=Limits(device_lock_wait_seconds=0.2))
        status = impatient.status().to_json()
        assert status["busy"] is True and status["active"]["version"] == "1.0.0"
        with pytest.raises(CosgitopsError, match="another cosgitops agent"):
            impatient.upgrade()
    finally:
        os.close(fd)
    assert DeviceAgent(root).status().to_json()["busy"] is False
