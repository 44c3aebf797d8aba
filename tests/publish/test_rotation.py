"""Key rotation through root N -> N+1, followed by python-tuf's stock client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Metadata

from cosgitops import model
from cosgitops.errors import PublishError, UsageError
from cosgitops.publish import paths
from cosgitops.publish.publisher import publish_releases, rotate_key
from cosgitops.publish.rolekeys import KeyRing, tuf_public_key
from cosgitops.signing.keys import write_keypair
from tests.helpers.services import StaticServer
from tests.publish import factory

TARGET = paths.release_target_path("kiosk", "1.0.0")


def _root(public: Path, version: int) -> Metadata:  # type: ignore[type-arg]
    return Metadata.from_bytes((public / "metadata" / f"{version}.root.json").read_bytes())


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "root"])
def test_rotating_a_development_key_is_followed_by_old_clients(
    repo: model.Repository,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
    role: str,
) -> None:
    publish_releases(repo, [factory.manifest("kiosk", "1.0.0")])
    public = repo.root / "public"
    key_dir = repo.root / ".cosgitops" / "keys"
    old_pub = (key_dir / f"tuf-{role}.pub").read_bytes()
    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        client.fetch(TARGET)  # a device that trusts root 1 and the old key

        result = rotate_key(repo, role)
        assert result.root_version == 2 and result.old_keyids != result.new_keyids
        assert (key_dir / f"tuf-{role}.v1.pub").read_bytes() == old_pub
        assert (key_dir / f"tuf-{role}.pub").read_bytes() != old_pub

        root2 = _root(public, 2)
        assert root2.signed.roles[role].keyids == result.new_keyids
        # Root 1's keys vouch for root 2; a root rotation adds the new root key's.
        root1_keys = set(_root(public, 1).signed.roles["root"].keyids)
        assert root1_keys <= set(root2.signatures)
        if role == "root":
            assert set(result.new_keyids) <= set(root2.signatures)

        updater = client.refresh()  # the old device walks 1 -> 2 and keeps working
        assert updater._trusted_set.root.version == 2
        info = updater.get_targetinfo(TARGET)
        assert info is not None
        updater.download_target(info)
        fresh = factory.Client(public, server.url, tmp_path / "new-device")
        fresh.fetch(TARGET)  # and so does a device bootstrapped from 1.root.json today

        # Publishing goes on with the new key.
        publish_releases(repo, [factory.manifest("kiosk", "1.1.0")])
        client.fetch(paths.release_target_path("kiosk", "1.1.0"))


def test_root_rotations_chain_and_old_keys_stop_counting(
    repo: model.Repository,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> None:
    publish_releases(repo, [factory.manifest("kiosk", "1.0.0")])
    public = repo.root / "public"
    rotate_key(repo, "root")
    rotate_key(repo, "root")
    rotate_key(repo, "timestamp")
    assert sorted(p.name for p in (public / "metadata").glob("*.root.json")) == [
        "1.root.json",
        "2.root.json",
        "3.root.json",
        "4.root.json",
    ]
    with static_server_factory(public) as server:
        updater = factory.Client(public, server.url, tmp_path / "device").refresh()
        assert updater._trusted_set.root.version == 4
        assert updater.get_targetinfo(TARGET) is not None
        # A root 5 signed only by root 1's key (retired twice over) is refused.
        retired = KeyRing.for_repository(repo)
        retired.development = {"root": repo.root / ".cosgitops/keys/tuf-root.v1.key"}
        old_key = retired._load(
            str(repo.root / ".cosgitops/keys/tuf-root.v1.key"), role="root", password_role="root"
        )
        forged = _root(public, 4)
        forged.signed.version = 5
        forged.signatures.clear()
        forged.sign(old_key.signer())
        (public / "metadata" / "5.root.json").write_bytes(forged.to_bytes())
        with pytest.raises(exceptions.UnsignedMetadataError):
            factory.Client(public, server.url, tmp_path / "device").refresh()


def test_rotating_to_a_configured_key_file(
    tmp_path: Path, static_server_factory: type[StaticServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setenv("COSGITOPS_TUF_TIMESTAMP_PASSWORD", "s3cret")
    monkeypatch.setenv("COSGITOPS_TUF_TARGETS_PASSWORD", "t4rgets")
    key_dir = root / "keys"
    write_keypair(key_dir / "timestamp-1", b"s3cret")
    write_keypair(key_dir / "timestamp-2", b"s3cret")
    write_keypair(key_dir / "targets", b"t4rgets")
    first = factory.repository(
        root, keys={"timestamp": ["keys/timestamp-1.key"], "targets": ["keys/targets.key"]}
    )
    publish_releases(first, [factory.manifest("kiosk", "1.0.0")])
    public = root / "public"
    result = rotate_key(first, "timestamp", "keys/timestamp-2.key")
    assert result.development_keys.keys() == {"root", "snapshot"}
    # The old configuration no longer matches the index: a clear refusal, not a bad index.
    with pytest.raises(PublishError) as caught:
        publish_releases(first, [factory.manifest("kiosk", "1.1.0")])
    assert "keys rotate" in (caught.value.hint or "")
    second = factory.repository(
        root, keys={"timestamp": ["keys/timestamp-2.key"], "targets": ["keys/targets.key"]}
    )
    publish_releases(second, [factory.manifest("kiosk", "1.1.0")])
    with static_server_factory(public) as server:
        factory.Client(public, server.url, tmp_path / "device").fetch(
            paths.release_target_path("kiosk", "1.1.0")
        )
    timestamp = json.loads((public / "metadata" / "timestamp.json").read_text())
    new_keyid = result.new_keyids[0]
    assert [s["keyid"] for s in timestamp["signatures"]] == [new_keyid]
    # A configured key is never replaced implicitly.
    with pytest.raises(UsageError):
        rotate_key(second, "targets")


def test_root_threshold_needs_enough_old_and_new_keys(
    tmp_path: Path, static_server_factory: type[StaticServer]
) -> None:
    keys = factory.role_keys()
    keys["root"] = [factory.new_key(), factory.new_key()]
    repo = factory.repository(tmp_path, rootThreshold=2)
    publish_releases(repo, [factory.manifest("kiosk", "1.0.0")], keyring=factory.keyring(keys))
    root1 = _root(tmp_path / "public", 1)
    assert root1.signed.roles["root"].threshold == 2 and len(root1.signatures) == 2

    # Only one of the two old root keys at hand: the rotation is refused.
    short = dict(keys)
    short["root"] = keys["root"][:1]
    for index in range(2):
        write_keypair(tmp_path / f"new-root-{index}", b"")
    import os

    os.environ["COSGITOPS_TUF_ROOT_PASSWORD"] = ""
    new_sources = [str(tmp_path / "new-root-0.key"), str(tmp_path / "new-root-1.key")]
    with pytest.raises(PublishError):
        rotate_key(repo, "root", new_sources, keyring=factory.keyring(short))
    with pytest.raises(UsageError):  # threshold 2 needs two new keys
        rotate_key(repo, "root", new_sources[:1], keyring=factory.keyring(keys))
    result = rotate_key(repo, "root", new_sources, keyring=factory.keyring(keys))
    root2 = _root(tmp_path / "public", 2)
    assert len(root2.signatures) == 4 and root2.signed.roles["root"].threshold == 2
    assert set(result.new_keyids) == set(root2.signed.roles["root"].keyids)
    with static_server_factory(tmp_path / "public") as server:
        updater = factory.Client(tmp_path / "public", server.url, tmp_path / "device").refresh()
        assert updater._trusted_set.root.version == 2


def test_targets_rotation_moves_delegations_but_keeps_team_keys(
    tmp_path: Path, static_server_factory: type[StaticServer]
) -> None:
    keys = factory.role_keys()
    team = factory.new_key()
    ring = factory.keyring(keys, **{"edge-*": team})
    repo = factory.repository(tmp_path)
    publish_releases(
        repo,
        [factory.manifest("edge-gateway", "1.0.0"), factory.manifest("kiosk", "1.0.0")],
        keyring=ring,
    )
    write_keypair(tmp_path / "targets-2", b"")
    import os

    os.environ["COSGITOPS_TUF_TARGETS_PASSWORD"] = ""
    result = rotate_key(repo, "targets", str(tmp_path / "targets-2.key"), keyring=ring)
    assert "kiosk" in result.resigned and "edge-gateway" not in result.resigned
    public = tmp_path / "public"
    from cosgitops.publish.reader import open_index

    index = open_index(public).index
    new_id = result.new_keyids[0]
    kiosk_shard = index.role(paths.shard_role_for("kiosk")).signed.delegations
    edge_shard = index.role(paths.shard_role_for("edge-gateway")).signed.delegations
    assert kiosk_shard is not None and kiosk_shard.roles is not None
    assert edge_shard is not None and edge_shard.roles is not None
    assert kiosk_shard.roles["kiosk"].keyids == [new_id]
    assert edge_shard.roles["edge-gateway"].keyids == [tuf_public_key(team.public_key()).keyid]
    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        client.fetch(paths.release_target_path("edge-gateway", "1.0.0"))
        client.fetch(paths.release_target_path("kiosk", "1.0.0"))


def test_only_top_level_roles_rotate(repo: model.Repository) -> None:
    with pytest.raises(UsageError):
        rotate_key(repo, "kiosk")


def test_rotation_needs_an_index(repo: model.Repository) -> None:
    from cosgitops.errors import NotFoundError

    ring = factory.keyring(factory.role_keys())
    with pytest.raises(NotFoundError):
        rotate_key(repo, "timestamp", "env://NOPE_NOT_SET", keyring=ring)
