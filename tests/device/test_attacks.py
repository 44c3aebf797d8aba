"""Attacks on a device, each refused with nothing applied and the active slot untouched:
tampered layers and manifests at the registry, missing and foreign signatures, replayed
and expired index metadata, and hostile tarballs inside properly signed releases."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cosgitops.device.agent import DeviceAgent
from cosgitops.device.extract import UnsafeLayerError
from cosgitops.errors import CosgitopsError, IntegrityError, RemoteDataError, VerificationError
from cosgitops.oci.store import StoreOptions
from cosgitops.signing.keys import write_keypair
from tests.device.fleet import DERIVATIVE, Fleet, base_layer, overlay_layer
from tests.device.tarbuild import Entry, file, hardlink, symlink
from tests.helpers.services import RegistryServer, StaticServer

pytestmark = pytest.mark.registry


@dataclass
class Device:
    fleet: Fleet
    registry: RegistryServer
    server: StaticServer
    agent: DeviceAgent
    root: Path
    base: list[Entry]

    def fingerprint(self) -> tuple[str, str, str, bytes]:
        """What must not change: state file, active link, the active tree's digest."""
        from cosgitops.device.slots import tree_digest

        state = self.agent.journal.load()
        assert state.active is not None
        link = self.root / "state" / "active"
        return (
            state.active.version,
            str(link.resolve()),
            tree_digest(link.resolve()),
            (self.root / "state" / "state.json").read_bytes(),
        )

    def blob_file(self, digest: str) -> Path:
        hex_digest = digest.split(":", 1)[1]
        return (
            self.registry.folder
            / "storage/docker/registry/v2/blobs/sha256"
            / hex_digest[:2]
            / hex_digest
            / "data"
        )


@pytest.fixture
def device(
    tmp_path: Path, registry: RegistryServer, static_server_factory: type[StaticServer]
) -> Iterator[Device]:
    fleet = Fleet(
        tmp_path / "fleet", f"{registry.host}/fleet/{DERIVATIVE}", StoreOptions(insecure=True)
    )
    base = base_layer(8192)
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    server = static_server_factory(fleet.public_dir).__enter__()
    agent = DeviceAgent(tmp_path / "device")
    agent.install(fleet.setup(server.url), recovery=False)
    yield Device(fleet, registry, server, agent, tmp_path / "device", base)


def refused(
    device: Device, error: type[CosgitopsError], match: str | None = None
) -> CosgitopsError:
    before = device.fingerprint()
    with pytest.raises(error, match=match) as info:
        DeviceAgent(device.root).upgrade()
    after = DeviceAgent(device.root).status(verify=True).to_json()
    assert after["active"]["version"] == "1.0.0" and after["passive"] is None
    assert after["pending"] is False and after["interrupted"] is None
    assert after["verified"] == {"active": True}
    assert device.fingerprint()[:3] == before[:3]
    assert not (device.root / "state" / "transition").exists()
    assert len(list((device.root / "state" / "slots").iterdir())) == 1
    return info.value


def test_tampered_layer_at_the_registry(device: Device) -> None:
    _, image = device.fleet.release("1.1.0", [device.base, overlay_layer("1.1.0")])
    blob = device.blob_file(image.layers[1].digest)
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0xFF
    blob.write_bytes(bytes(data))
    refused(device, IntegrityError, "does not match")
    # the corrupt bytes never entered the cache
    cached = device.root / "agent/blobs/sha256" / image.layers[1].digest.split(":")[1]
    assert not cached.exists()


def test_tampered_manifest_at_the_registry(device: Device) -> None:
    _, image = device.fleet.release("1.1.0", [device.base, overlay_layer("1.1.0")])
    manifest = device.blob_file(image.digest)
    data = manifest.read_bytes()
    tampered = data.replace(b'"schemaVersion": 2', b'"schemaVersion": 2 ')
    assert tampered != data
    manifest.write_bytes(tampered)
    refused(device, RemoteDataError, "does not match")


def test_tampered_cached_layer_is_caught_while_unpacking(device: Device) -> None:
    image = device.fleet.push([device.base, overlay_layer("1.1.0")])
    # the new release shares the base layer with the installed one; alter the cached copy
    cached = device.root / "agent/blobs/sha256" / image.layers[0].digest.split(":")[1]
    data = bytearray(cached.read_bytes())
    data[100] ^= 0x01
    cached.write_bytes(bytes(data))
    device.fleet.publish(device.fleet.manifest("1.1.0", image))
    refused(device, IntegrityError)
    assert not cached.exists()  # dropped, so the next attempt downloads it again
    report = DeviceAgent(device.root).upgrade()
    assert report.installed is not None and report.installed.version == "1.1.0"


def test_unsigned_release(device: Device) -> None:
    image = device.fleet.push([device.base, overlay_layer("1.1.0")], sign=False)
    device.fleet.publish(device.fleet.manifest("1.1.0", image))
    error = refused(device, VerificationError, "no signatures")
    assert "nothing was downloaded" in (error.hint or "")


def test_foreign_signature(device: Device, tmp_path: Path) -> None:
    image = device.fleet.push([device.base, overlay_layer("1.1.0")], sign=False)
    foreign_key, _ = write_keypair(tmp_path / "mallory", b"")
    device.fleet.sign(image.digest, key=foreign_key)
    device.fleet.publish(device.fleet.manifest("1.1.0", image))
    refused(device, VerificationError, "no signature .* is trusted")


def test_signature_of_another_image_does_not_count(device: Device) -> None:
    signed = device.fleet.push([device.base, overlay_layer("1.1.0")])
    unsigned = device.fleet.push([device.base, overlay_layer("1.1.0-evil")], sign=False)
    manifest = device.fleet.manifest("1.1.0", unsigned)
    device.fleet.publish(manifest)
    assert signed.digest != unsigned.digest
    refused(device, VerificationError)


def test_replayed_older_index(device: Device, tmp_path: Path) -> None:
    stale = tmp_path / "stale-public"
    shutil.copytree(device.fleet.public_dir, stale)  # the index as it was at 1.0.0
    device.fleet.release("1.1.0", [device.base, overlay_layer("1.1.0")])
    assert DeviceAgent(device.root).check().choice.release is not None  # the device saw 1.1.0
    # a mirror (or an attacker in the middle) now serves the old, validly signed index
    shutil.rmtree(device.fleet.public_dir)
    shutil.copytree(stale, device.fleet.public_dir)
    error = refused(device, RemoteDataError, "BadVersionNumberError")
    assert "replay" in (error.hint or "")


def test_expired_index(device: Device) -> None:
    image = device.fleet.push([device.base, overlay_layer("1.1.0")])
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    # signed correctly, but its timestamp (1 day) ran out two days ago: a freeze attack
    device.fleet.publish(device.fleet.manifest("1.1.0", image), now=long_ago)
    error = refused(device, RemoteDataError, "ExpiredMetadataError")
    assert "expired" in (error.hint or "")


@pytest.mark.parametrize("what", ["timestamp", "derivative-role", "release-manifest"])
def test_tampered_index(device: Device, what: str) -> None:
    device.fleet.release("1.1.0", [device.base, overlay_layer("1.1.0")])
    metadata = device.fleet.public_dir / "metadata"
    if what == "timestamp":
        target = metadata / "timestamp.json"
        old, new = b'"snapshot.json":{"version":', b'"snapshot.json":{"version":1'
    elif what == "derivative-role":
        target = metadata / f"2.{DERIVATIVE}.json"
        old, new = b'"deadend":false', b'"deadend":true'
    else:
        (target,) = (device.fleet.public_dir / "targets").rglob("*.1.1.0.json")
        old, new = b'"notes": ""', b'"notes": "evil"'
    data = target.read_bytes()
    assert old in data
    target.write_bytes(data.replace(old, new, 1))
    refused(device, RemoteDataError)


HOSTILE_LAYERS = {
    "dotdot": [file("../../outside", "pwned")],
    "absolute": [file("/etc/pwned", "pwned")],
    "symlink-parent": [symlink("etc2", "/etc"), file("etc2/pwned", "pwned")],
    "symlink-relative-escape": [symlink("up", "../../.."), file("up/pwned", "pwned")],
    "hardlink-out": [hardlink("passwd", "../../../../etc/passwd")],
    "hardlink-absolute": [hardlink("passwd", "/etc/passwd")],
    "char-device": [Entry("dev/kmem", "chr")],
    "block-device": [Entry("dev/sda", "blk")],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_LAYERS))
def test_hostile_tarball_in_a_signed_release(device: Device, tmp_path: Path, kind: str) -> None:
    device.fleet.release(
        "1.1.0", [device.base, overlay_layer("1.1.0"), [file("ok", "fine"), *HOSTILE_LAYERS[kind]]]
    )
    refused(device, UnsafeLayerError)
    assert not Path("/etc/pwned").exists()
    assert not (device.root.parent / "outside").exists()
    assert not (device.root / "outside").exists()
