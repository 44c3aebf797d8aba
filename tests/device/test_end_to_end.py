"""The whole device story against real servers on loopback: a docker-registry for the
images (signed in cosign's formats), a static HTTP server for the TUF index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosgitops.device.agent import DeviceAgent
from cosgitops.errors import DeviceError, VerificationError
from cosgitops.oci.store import StoreOptions
from tests.device.fleet import (
    BROKEN_MARKER,
    DERIVATIVE,
    Fleet,
    base_layer,
    overlay_layer,
    slot_files,
)
from tests.helpers.services import RegistryServer, StaticServer

pytestmark = pytest.mark.registry


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosgitops", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def fleet(tmp_path: Path, registry: RegistryServer) -> Fleet:
    return Fleet(
        tmp_path / "fleet",
        f"{registry.host}/fleet/{DERIVATIVE}",
        StoreOptions(insecure=True),
    )


def test_install_upgrade_dedupe_commit_then_automatic_rollback(
    tmp_path: Path, fleet: Fleet, static_server_factory: type[StaticServer]
) -> None:
    base = base_layer()
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    server = static_server_factory(fleet.public_dir).__enter__()
    root = tmp_path / "device"
    (root / "oem").mkdir(parents=True)
    (root / "oem" / "90_custom.yaml").write_text("name: site config\n")
    (root / "persistent").mkdir()
    (root / "persistent" / "data").write_text("user data")

    agent = DeviceAgent(root)
    installed = agent.install(fleet.setup(server.url))
    assert installed.installed is not None and installed.installed.version == "1.0.0"
    assert slot_files(agent)["etc/motd"] == b"release 1.0.0\n"

    # v2 changes one overlay file: only that layer crosses the wire
    _, v2 = fleet.release("1.1.0", [base, overlay_layer("1.1.0")])
    report = agent.upgrade()
    assert report.installed is not None and report.installed.version == "1.1.0"
    assert report.cache.downloaded == [v2.layers[1].digest]
    assert report.cache.reused == [v2.layers[0].digest]
    assert report.cache.bytes_downloaded == v2.layers[1].size
    assert report.image_bytes == v2.size > 5 * v2.layers[1].size
    # everything from the registry (manifests, config, signatures, the layer) stays small
    assert report.registry_bytes < v2.layers[1].size + 16 * 1024
    status = agent.status().to_json()
    assert status["active"]["version"] == "1.1.0" and status["passive"]["version"] == "1.0.0"
    assert status["pending"] is True
    assert agent.boot_check().outcome == "committed"
    assert agent.status().to_json()["pending"] is False

    # v3's health check fails: two failed boots roll the device back to v2
    fleet.release("1.2.0", [base, overlay_layer("1.2.0", broken=True)])
    report = agent.upgrade()
    assert report.installed is not None and report.installed.version == "1.2.0"
    assert BROKEN_MARKER in slot_files(agent)
    first = agent.boot_check()
    assert first.outcome == "retry" and first.attempts == 1
    assert not first.checks[0].passed
    second = agent.boot_check()
    assert second.outcome == "rolled-back"
    assert second.rolled_back_to is not None and second.rolled_back_to.version == "1.1.0"
    status = agent.status(verify=True).to_json()
    assert status["active"]["version"] == "1.1.0"
    assert status["passive"] is None
    assert status["pending"] is False
    assert [(r["version"], r["digest"]) for r in status["rejected"]] == [
        ("1.2.0", fleet.published[-1].digest)
    ]
    assert status["verified"] == {"active": True, "recovery": True}
    assert slot_files(agent)["etc/motd"] == b"release 1.1.0\n"
    assert (root / "oem" / "90_custom.yaml").read_text() == "name: site config\n"
    assert (root / "persistent" / "data").read_text() == "user data"

    # a restarted agent and a republished (re-signed) index: 1.2.0 is never offered again
    from cosgitops.publish.publisher import refresh

    refresh(fleet.repository, keyring=fleet.ring, force=True)
    restarted = DeviceAgent(root)
    check = restarted.check()
    assert check.choice.release is None
    verdicts = {v.version: v.reasons for v in check.choice.verdicts}
    assert "this device rolled back from it" in verdicts["1.2.0"]
    assert restarted.upgrade().action == "none"
    result = cli("device", "check", "--root", str(root), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "none"
    result = cli("device", "status", "--root", str(root), "--format", "json")
    data = json.loads(result.stdout)
    assert data["active"] == {
        "version": "1.1.0",
        "digest": status["active"]["digest"],
        "image": status["active"]["image"],
        "format": "dir",
        "path": status["active"]["path"],
        "installed": status["active"]["installed"],
    }
    assert data["rejected"][0]["version"] == "1.2.0"

    # a fixed release moves on past the rejected one
    fleet.release("1.2.1", [base, overlay_layer("1.2.1")])
    fixed = restarted.upgrade()
    assert fixed.installed is not None and fixed.installed.version == "1.2.1"
    assert restarted.boot_check().outcome == "committed"
    server.__exit__(None, None, None)


def test_a_check_with_nothing_new_costs_two_small_requests(
    tmp_path: Path, fleet: Fleet, static_server_factory: type[StaticServer]
) -> None:
    fleet.release("1.0.0", [base_layer(4096), overlay_layer("1.0.0")])
    server = static_server_factory(fleet.public_dir).__enter__()
    agent = DeviceAgent(tmp_path / "device")
    agent.install(fleet.setup(server.url), recovery=False)
    server.reset_log()
    report = agent.check()
    assert report.choice.release is None
    paths = [r.path for r in server.requests]
    # the next root version (absent) and timestamp.json; snapshot and targets are current
    assert paths == ["/metadata/2.root.json", "/metadata/timestamp.json"], paths
    assert report.index.requests == 2
    assert server.bytes_sent() == report.index.bytes < 2048


def test_elemental_hand_off_gets_exactly_the_verified_digest(
    tmp_path: Path, fleet: Fleet, static_server_factory: type[StaticServer]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "elemental-calls.txt"
    stand_in = bin_dir / "elemental"
    stand_in.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> {calls}\n'
        'if [ -n "$ELEMENTAL_FAIL" ]; then echo "disk full" >&2; exit 3; fi\n'
    )
    stand_in.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}:{os.environ['PATH']}"

    base = base_layer(4096)
    _, v1 = fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    server = static_server_factory(fleet.public_dir).__enter__()
    root = tmp_path / "device"
    agent = DeviceAgent(root)
    agent.install(fleet.setup(server.url, apply_method="elemental"), recovery=True)
    image = f"oci:{fleet.image_name}@{v1.digest}"
    assert calls.read_text().splitlines() == [
        f"upgrade --system {image}",
        f"upgrade-recovery --recovery-system.uri {image}",
    ]
    assert not (root / "agent" / "blobs").exists()  # elemental pulls; the agent only verified

    _, v2 = fleet.release("1.1.0", [base, overlay_layer("1.1.0")])
    report = agent.upgrade()
    assert (
        calls.read_text().splitlines()[-1] == f"upgrade --system oci:{fleet.image_name}@{v2.digest}"
    )
    assert report.installed is not None and report.installed.format == "elemental"
    status = agent.status().to_json()
    assert (status["active"]["version"], status["passive"]["version"]) == ("1.1.0", "1.0.0")
    assert status["pending"] is True and status["active"]["path"] is None
    assert agent.boot_check().outcome == "committed"  # checks run against the live system

    # an unsigned release never reaches elemental; a failing elemental changes nothing
    unsigned = fleet.push([base, overlay_layer("1.2.0")], sign=False)
    fleet.publish(fleet.manifest("1.2.0", unsigned))
    before = calls.read_text()
    with pytest.raises(VerificationError):
        agent.upgrade()
    assert calls.read_text() == before
    fleet.release("1.3.0", [base, overlay_layer("1.3.0")])
    os.environ["ELEMENTAL_FAIL"] = "1"
    with pytest.raises(DeviceError, match="disk full"):
        agent.upgrade()
    del os.environ["ELEMENTAL_FAIL"]
    assert agent.status().to_json()["active"]["version"] == "1.1.0"
    server.__exit__(None, None, None)
