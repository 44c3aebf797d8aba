"""Attacks on a published index, each refused by python-tuf's stock client (ngclient)
reading over a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Metadata

from cosgitops import model
from cosgitops.publish import paths
from cosgitops.publish.publisher import publish_releases
from cosgitops.publish.rolekeys import KeyRing, RoleKey
from tests.helpers.services import StaticServer
from tests.publish import factory

DERIVATIVE = "edge-gateway"
TARGET = paths.release_target_path(DERIVATIVE, "1.0.0")


@dataclass
class Served:
    repo: model.Repository
    ring: KeyRing
    public: Path
    server: StaticServer
    tmp: Path

    @property
    def metadata(self) -> Path:
        return self.public / "metadata"

    def client(self, name: str = "device") -> factory.Client:
        return factory.Client(self.public, self.server.url, self.tmp / name)

    def publish(self, *versions: str, now: datetime | None = None) -> None:
        publish_releases(
            self.repo,
            [factory.manifest(DERIVATIVE, v) for v in versions],
            keyring=self.ring,
            now=now or datetime.now(UTC),
        )

    def role_file(self, role: str) -> Path:
        if role == "timestamp":
            return self.metadata / "timestamp.json"
        snapshot_version = json.loads((self.metadata / "timestamp.json").read_text())["signed"][
            "meta"
        ]["snapshot.json"]["version"]
        if role == "snapshot":
            return self.metadata / f"{snapshot_version}.snapshot.json"
        meta = json.loads((self.metadata / f"{snapshot_version}.snapshot.json").read_text())
        return self.metadata / f"{meta['signed']['meta'][f'{role}.json']['version']}.{role}.json"


@pytest.fixture
def served(
    repo: model.Repository,
    ring: KeyRing,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> Iterator[Served]:
    public = repo.root / "public"
    public.mkdir()
    with static_server_factory(public) as server:
        state = Served(repo, ring, public, server, tmp_path)
        state.publish("1.0.0")
        yield state


def _edit(path: Path, change: Any) -> None:
    """Change a metadata file's signed part without re-signing it."""
    document = json.loads(path.read_bytes())
    change(document["signed"])
    path.write_text(json.dumps(document, separators=(",", ":")))


def _resign(path: Path, key: RoleKey, change: Any = None) -> None:
    """Re-sign a metadata file with ``key`` only (an attacker's key, for instance)."""
    metadata = Metadata.from_bytes(path.read_bytes())
    if change is not None:
        change(metadata.signed)
    metadata.signatures.clear()
    metadata.sign(key.signer())
    path.write_bytes(metadata.to_bytes())


def test_baseline_the_untouched_index_verifies(served: Served) -> None:
    info, data = served.client().fetch(TARGET)
    assert info.custom["cosgitops"]["version"] == "1.0.0" and data


def test_tampered_target_is_refused(served: Served) -> None:
    info, data = served.client("honest").fetch(TARGET)
    on_disk = (
        served.public / "targets" / paths.consistent_target_file(TARGET, info.hashes["sha256"])
    )
    evil = data.replace(b"registry.example.com", b"registry.evil.example")
    on_disk.write_bytes(evil)
    updater = served.client().refresh()
    target = updater.get_targetinfo(TARGET)
    with pytest.raises(exceptions.DownloadLengthMismatchError):  # longer than signed
        updater.download_target(target)
    shorter = data.replace(b"registry.example.com", b"evil.example")
    on_disk.write_bytes(shorter)
    with pytest.raises(exceptions.LengthOrHashMismatchError):
        served.client("second").refresh().download_target(target)
    # Same length, different bytes: still refused by the hash.
    same_length = bytearray(data)
    same_length[len(same_length) // 2] ^= 0x01
    on_disk.write_bytes(bytes(same_length))
    with pytest.raises(exceptions.LengthOrHashMismatchError):
        served.client("third").refresh().download_target(target)


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "shard", DERIVATIVE])
def test_tampered_role_is_refused(served: Served, role: str) -> None:
    name = paths.shard_role_for(DERIVATIVE) if role == "shard" else role

    def bump_expiry(signed: dict[str, Any]) -> None:
        signed["expires"] = "2099-01-01T00:00:00Z"

    _edit(served.role_file(name), bump_expiry)
    with pytest.raises(exceptions.UnsignedMetadataError):
        served.client().fetch(TARGET)


def test_role_changed_to_point_at_another_image_is_refused(served: Served) -> None:
    def swap_image(signed: dict[str, Any]) -> None:
        custom = signed["targets"][TARGET]["custom"]["cosgitops"]
        custom["image"] = "registry.evil.example/x@sha256:" + "0" * 64

    _edit(served.role_file(DERIVATIVE), swap_image)
    with pytest.raises(exceptions.UnsignedMetadataError):
        served.client().fetch(TARGET)


@pytest.mark.parametrize("role", ["timestamp", "snapshot", DERIVATIVE])
def test_unsigned_role_is_refused(served: Served, role: str) -> None:
    path = served.role_file(role)
    document = json.loads(path.read_bytes())
    document["signatures"] = []
    path.write_text(json.dumps(document))
    with pytest.raises(exceptions.UnsignedMetadataError):
        served.client().fetch(TARGET)


def test_replayed_older_timestamp_is_refused(served: Served) -> None:
    old_timestamp = (served.metadata / "timestamp.json").read_bytes()
    served.publish("1.1.0")
    client = served.client()
    client.fetch(TARGET)  # the device has seen the newer timestamp
    (served.metadata / "timestamp.json").write_bytes(old_timestamp)
    with pytest.raises(exceptions.BadVersionNumberError):
        client.refresh()


def test_replayed_older_snapshot_is_refused(served: Served) -> None:
    client = served.client()
    client.fetch(TARGET)
    old_snapshot = served.role_file("snapshot").read_bytes()
    served.publish("1.1.0")
    # The new timestamp names the new snapshot; the attacker serves the old one instead.
    served.role_file("snapshot").write_bytes(old_snapshot)
    with pytest.raises(exceptions.BadVersionNumberError):
        client.refresh()
    with pytest.raises(exceptions.BadVersionNumberError):
        served.client("new-device").refresh()


def test_expired_metadata_freeze_is_refused(
    repo: model.Repository,
    ring: KeyRing,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> None:
    # An attacker (or a dead publisher) keeps serving metadata signed two days ago: the
    # timestamp, valid for one day, has expired, so devices refuse to act on it.
    publish_releases(
        repo,
        [factory.manifest(DERIVATIVE, "1.0.0")],
        keyring=ring,
        now=datetime.now(UTC) - timedelta(days=2),
    )
    public = repo.root / "public"
    with (
        static_server_factory(public) as server,
        pytest.raises(exceptions.ExpiredMetadataError),
    ):
        factory.Client(public, server.url, tmp_path / "device").refresh()


def test_mix_and_match_role_from_an_older_snapshot_is_refused(served: Served) -> None:
    old_role = served.role_file(DERIVATIVE).read_bytes()  # version 1, validly signed
    served.publish("1.1.0")
    new_role = served.role_file(DERIVATIVE)
    assert new_role.name.startswith("2.")
    # The attacker serves the current timestamp and snapshot with yesterday's role,
    # hiding 1.1.0 (e.g. to keep devices on a vulnerable release).
    new_role.write_bytes(old_role)
    with pytest.raises(exceptions.BadVersionNumberError):
        served.client().fetch(paths.release_target_path(DERIVATIVE, "1.1.0"))


def test_snapshot_rolling_a_role_back_is_refused(served: Served) -> None:
    served.publish("1.1.0")
    client = served.client()
    client.fetch(TARGET)  # the device trusts the derivative role at version 2
    served.publish("1.2.0")

    def older_role(signed: Any) -> None:
        signed.meta[f"{DERIVATIVE}.json"].version = 1

    # Even signed with the real snapshot key, a snapshot may not roll a role back to a
    # version older than one the device has seen.
    _resign(served.role_file("snapshot"), served.ring.keys("snapshot")[0], older_role)
    with pytest.raises(exceptions.BadVersionNumberError, match=f"{DERIVATIVE}.json"):
        client.refresh()


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", DERIVATIVE])
def test_signature_by_a_key_not_in_root_is_refused(served: Served, role: str) -> None:
    attacker = RoleKey.from_private(factory.new_key(), "attacker")

    def bump(signed: Any) -> None:
        signed.expires = datetime(2099, 1, 1, tzinfo=UTC)

    _resign(served.role_file(role), attacker, bump)
    with pytest.raises(exceptions.UnsignedMetadataError):
        served.client().fetch(TARGET)


def test_root_not_signed_by_the_previous_root_is_refused(served: Served) -> None:
    attacker = RoleKey.from_private(factory.new_key(), "attacker")
    current = Metadata.from_bytes((served.metadata / "1.root.json").read_bytes())
    forged = current.signed
    forged.version = 2
    for keyid in list(forged.roles["root"].keyids):
        forged.revoke_key(keyid, "root")
    forged.add_key(attacker.public, "root")
    for keyid in list(forged.roles["timestamp"].keyids):
        forged.revoke_key(keyid, "timestamp")
    forged.add_key(attacker.public, "timestamp")
    current.signatures.clear()
    current.sign(attacker.signer())
    (served.metadata / "2.root.json").write_bytes(current.to_bytes())
    with pytest.raises(exceptions.UnsignedMetadataError):
        served.client().refresh()
