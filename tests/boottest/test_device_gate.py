"""The device policy `requireBootTest`: the agent refuses a release whose signed manifest
names no verified, passing boot attestation for exactly that digest, and installs a
proven one (folder backend, OCI layout, index read from its folder)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from cosgitops import model
from cosgitops.boottest.attestation import AttachedAttestation, attach_attestation
from cosgitops.device.agent import DeviceAgent
from cosgitops.errors import VerificationError
from cosgitops.signing.signers import KeySigner, key_signer
from tests.boottest.helpers import synthetic_result
from tests.device.fleet import DERIVATIVE, Fleet, PushedImage, base_layer, overlay_layer, slot_files


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path / "fleet", f"oci:{tmp_path / 'fleet' / 'registry' / DERIVATIVE}")


def _signer(fleet: Fleet, key: Path | None = None) -> KeySigner:
    return key_signer(str(key or fleet.cosign_key), password=fleet.password)


def _attest(
    fleet: Fleet, image: PushedImage, version: str, *, key: Path | None = None, **kw: object
) -> AttachedAttestation:
    result = synthetic_result(image.digest, derivative=DERIVATIVE, version=version, **kw)  # type: ignore[arg-type]
    return attach_attestation(fleet.store(), result, _signer(fleet, key))


def _named(
    manifest: model.ReleaseManifest, attached: AttachedAttestation | str
) -> model.ReleaseManifest:
    digest = attached if isinstance(attached, str) else attached.digest
    return replace(manifest, boot_test=model.BootTestRef(attestation=digest, result="passed"))


def _proven_release(
    fleet: Fleet, version: str, layers: list[list[object]]
) -> model.ReleaseManifest:
    image = fleet.push(layers)  # type: ignore[arg-type]
    manifest = _named(fleet.manifest(version, image), _attest(fleet, image, version))
    fleet.publish(manifest)
    return manifest


def _device(tmp_path: Path, fleet: Fleet) -> DeviceAgent:
    agent = DeviceAgent(tmp_path / "device")
    agent.install(fleet.setup(f"file://{fleet.public_dir}", require_boot_test=True))
    return agent


def test_a_proven_release_installs_and_an_unproven_one_is_refused(
    tmp_path: Path, fleet: Fleet
) -> None:
    base = base_layer()
    _proven_release(fleet, "1.0.0", [base, overlay_layer("1.0.0")])
    agent = _device(tmp_path, fleet)
    assert agent.status().to_json()["active"]["version"] == "1.0.0"
    config = yaml.safe_load((tmp_path / "device" / "agent" / "config.yaml").read_text())
    assert config["spec"]["trust"]["requireBootTest"] is True

    fleet.release("1.1.0", [base, overlay_layer("1.1.0")])  # signed, but never boot-tested
    with pytest.raises(VerificationError, match="names no boot attestation") as refused:
        agent.upgrade()
    assert "requireBootTest" in str(refused.value)
    assert "nothing was downloaded or applied" in (refused.value.hint or "")
    assert agent.status().to_json()["active"]["version"] == "1.0.0"
    assert not (tmp_path / "device" / "state" / "transition").exists()

    _proven_release(fleet, "1.2.0", [base, overlay_layer("1.2.0")])
    report = agent.upgrade()
    assert report.installed is not None and report.installed.version == "1.2.0"
    assert slot_files(agent)["etc/motd"] == b"release 1.2.0\n"


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("failing", "the boot test failed at step 'boot-candidate'"),
        ("stranger", "does not verify with any trusted key"),
        ("another-image", "not to this image"),
        ("missing", "is not in"),
    ],
)
def test_a_manifest_naming_a_bad_attestation_is_refused(
    tmp_path: Path, fleet: Fleet, how: str, reason: str
) -> None:
    from cosgitops.signing.keys import write_keypair

    base = base_layer()
    _proven_release(fleet, "1.0.0", [base, overlay_layer("1.0.0")])
    agent = _device(tmp_path, fleet)

    image = fleet.push([base, overlay_layer("1.1.0")])
    named: AttachedAttestation | str
    if how == "failing":
        named = _attest(fleet, image, "1.1.0", fail_at="boot-candidate")
    elif how == "stranger":
        stranger, _ = write_keypair(tmp_path / "stranger", b"")
        named = _attest(fleet, image, "1.1.0", key=stranger)
    elif how == "another-image":
        other = fleet.push([base, overlay_layer("9.9.9")])
        named = _attest(fleet, other, "9.9.9")  # a passing attestation, of another digest
    else:
        named = "sha256:" + "e" * 64
    fleet.publish(_named(fleet.manifest("1.1.0", image), named))

    with pytest.raises(VerificationError, match="its boot attestation sha256:") as refused:
        agent.upgrade()
    assert reason in str(refused.value)
    assert agent.status().to_json()["active"]["version"] == "1.0.0"


def test_a_device_without_the_policy_ignores_attestations(tmp_path: Path, fleet: Fleet) -> None:
    base = base_layer()
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    agent = DeviceAgent(tmp_path / "device")
    agent.install(fleet.setup(f"file://{fleet.public_dir}"))
    config = yaml.safe_load((tmp_path / "device" / "agent" / "config.yaml").read_text())
    assert "requireBootTest" not in config["spec"]["trust"]
    fleet.publish(
        _named(
            fleet.manifest("1.1.0", fleet.push([base, overlay_layer("1.1.0")])),
            "sha256:" + "f" * 64,
        )
    )
    assert agent.upgrade().installed is not None


def test_device_install_takes_require_boot_test(tmp_path: Path, fleet: Fleet) -> None:
    base = base_layer()
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])  # unproven
    root = tmp_path / "device"
    command = [
        sys.executable, "-m", "cosgitops", "device", "install", "--root", str(root),
        "--index", str(fleet.public_dir), "--trusted-root", str(fleet.trusted_root),
        "--derivative", DERIVATIVE, "--key", str(fleet.cosign_pub), "--platform", "linux/amd64",
        "--machine-id", "test-machine", "--require-boot-test",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "names no boot attestation" in result.stderr
    assert "Traceback" not in result.stderr
    config = yaml.safe_load((root / "agent" / "config.yaml").read_text())
    assert config["spec"]["trust"]["requireBootTest"] is True


def test_the_agent_schema_checks_the_setting(tmp_path: Path) -> None:
    from cosgitops.device.config import AgentConfig
    from cosgitops.errors import ConfigError

    data = {
        "apiVersion": "cosgitops/v1",
        "kind": "AgentConfig",
        "spec": {
            "derivative": "edge-gateway",
            "index": {"url": "https://example.test"},
            "trust": {"keys": ["cosign.pub"], "requireBootTest": True},
        },
    }
    assert AgentConfig.from_data(data).require_boot_test is True
    assert AgentConfig.from_data(data).to_json()["spec"]["trust"]["requireBootTest"] is True
    data["spec"]["trust"]["requireBootTest"] = "yes"  # type: ignore[index]
    with pytest.raises(ConfigError, match="requireBootTest"):
        AgentConfig.from_data(data)
