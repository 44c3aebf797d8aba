"""Publishing releases, read back through python-tuf's stock client over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cosgitops import model
from cosgitops.errors import NotFoundError, PublishError
from cosgitops.publish import paths, releases
from cosgitops.publish.publisher import open_index, publish_releases, refresh, yank
from cosgitops.publish.rolekeys import KeyRing
from tests.helpers.services import StaticServer
from tests.publish import factory

NOW = datetime(2030, 1, 1, tzinfo=UTC)  # far enough ahead that nothing has expired


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_stock_client_finds_and_downloads_every_release(
    repo: model.Repository,
    ring: KeyRing,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> None:
    published = [
        factory.manifest("edge-gateway", "1.0.0"),
        factory.manifest("edge-gateway", "1.1.0", channels=("stable", "beta")),
        factory.manifest("edge-gateway", "2.0.0-rc.1", channels=("beta",), upgrade_from=">=1.1.0"),
        factory.manifest("kiosk", "0.3.0", platforms=("linux/amd64", "linux/arm64")),
        factory.manifest("lab-node", "5.0.0+build.7", channels=("edge",)),
    ]
    result = publish_releases(repo, published, keyring=ring, now=_now())
    assert result.initialized and result.changed
    assert [ref.version for ref in result.added] == [m.version for m in published]
    public = repo.root / "public"
    assert (public / "metadata" / "1.root.json").is_file()

    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        for manifest in published:
            target_path = paths.release_target_path(manifest.derivative, manifest.version)
            info, data = client.fetch(target_path)
            served = model.ReleaseManifest.from_json(json.loads(data))
            assert served.image == manifest.image
            assert served.platforms == manifest.platforms
            assert served.rollout_start == releases.format_time(result_time(result, served))
            custom = info.custom["cosgitops"]
            assert custom["derivative"] == manifest.derivative
            assert custom["version"] == manifest.version
            assert custom["image"] == manifest.image
            assert custom["channels"] == list(manifest.channels)
            assert custom["upgradeFrom"] == manifest.upgrade_from
            assert custom["deadend"] is False
            assert custom["size"] == max(p.size for p in manifest.platforms)
            assert custom["rollout"]["start"] == served.rollout_start
            # What a device parses from custom is the same release.
            parsed = releases.ReleaseInfo.from_custom(info.custom)
            assert parsed.image == served.image and parsed.channels == served.channels
        # Files are where docs/formats.md says.
        hexdigest = info.hashes["sha256"]
        expected = public / "targets" / paths.consistent_target_file(info.path, hexdigest)
        assert expected.is_file()
        assert info.path.startswith(f"releases/{paths.shard_of('lab-node')}/lab-node/")
        # An unknown release is simply absent.
        assert client.refresh().get_targetinfo("releases/0/nope/1.0.0.json") is None


def result_time(result: object, served: model.ReleaseManifest) -> datetime:
    assert served.rollout_start is not None
    return releases.parse_time(served.rollout_start)


def test_layout_and_compact_metadata(repo: model.Repository, ring: KeyRing) -> None:
    publish_releases(repo, [factory.manifest("edge-gateway", "1.0.0")], keyring=ring, now=_now())
    metadata = repo.root / "public" / "metadata"
    names = sorted(p.name for p in metadata.iterdir())
    assert "timestamp.json" in names and "1.snapshot.json" in names
    assert "1.targets.json" in names and "1.edge-gateway.json" in names
    # the first publish writes each role once, delegation included
    assert [f"1.shard-{digit}.json" in names for digit in paths.SHARD_DIGITS] == [True] * 16
    # compact JSON: no indentation, no spaces after separators
    raw = (metadata / "1.snapshot.json").read_text()
    assert "\n" not in raw and '": ' not in raw
    targets = json.loads((metadata / "1.targets.json").read_text())
    roles = targets["signed"]["delegations"]["roles"]
    assert [r["name"] for r in roles] == [f"shard-{d}" for d in paths.SHARD_DIGITS]
    assert roles[0]["paths"] == ["releases/0/*/*"] and roles[0]["terminating"] is True
    shard = json.loads((metadata / f"1.shard-{paths.shard_of('edge-gateway')}.json").read_text())[
        "signed"
    ]["delegations"]["roles"]
    assert shard[0]["name"] == "edge-gateway"
    assert shard[0]["paths"] == [f"releases/{paths.shard_of('edge-gateway')}/edge-gateway/*"]
    snapshot = json.loads(raw)["signed"]["meta"]
    assert snapshot["edge-gateway.json"] == {"version": 1}  # versions only, no hashes


def test_republishing_the_same_release_is_a_noop(repo: model.Repository, ring: KeyRing) -> None:
    release = factory.manifest("edge-gateway", "1.0.0")
    first = publish_releases(repo, [release], keyring=ring, now=_now())
    files_before = sorted(p.name for p in (repo.root / "public" / "metadata").iterdir())
    again = publish_releases(
        repo, [release, release], keyring=ring, now=_now() + timedelta(hours=1)
    )
    assert not again.changed and not again.added
    assert [ref.version for ref in again.unchanged] == ["1.0.0"]
    assert again.timestamp_version == first.timestamp_version
    assert sorted(p.name for p in (repo.root / "public" / "metadata").iterdir()) == files_before


def test_a_different_release_under_a_published_version_is_refused(
    repo: model.Repository, ring: KeyRing
) -> None:
    publish_releases(repo, [factory.manifest("edge-gateway", "1.0.0")], keyring=ring, now=_now())
    timestamp = (repo.root / "public" / "metadata" / "timestamp.json").read_bytes()
    rebuilt = factory.manifest("edge-gateway", "1.0.0", build="rebuilt")
    newcomer = factory.manifest("kiosk", "1.0.0")
    with pytest.raises(PublishError) as caught:
        publish_releases(repo, [newcomer, rebuilt], keyring=ring, now=_now())
    assert "immutable" in str(caught.value) and caught.value.hint
    # All or nothing: the valid release in the same batch was not published either.
    assert (repo.root / "public" / "metadata" / "timestamp.json").read_bytes() == timestamp
    assert open_index(repo.root / "public").derivatives() == ["edge-gateway"]


def test_two_different_releases_of_one_version_in_a_batch_are_refused(
    repo: model.Repository, ring: KeyRing
) -> None:
    with pytest.raises(PublishError):
        publish_releases(
            repo,
            [factory.manifest("a", "1.0.0"), factory.manifest("a", "1.0.0", build="x")],
            keyring=ring,
        )
    assert not (repo.root / "public" / "metadata" / "timestamp.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": "registry.example.com/fleet/a:1.0.0"}, "not pinned"),
        ({"channels": ("nightly",)}, "not declared"),
        ({"channels": ()}, "no channel"),
        ({"upgrade_from": ">=1.2"}, "upgradeFrom"),
        ({"rollout": model.Rollout(start_percentage=120)}, "rollout"),
        ({"derivative": "Not_A_Label"}, "DNS label"),
        ({"derivative": "targets"}, "reserved"),
        ({"derivative": "shard-3"}, "reserved"),
        ({"version": "v1.0.0"}, "SemVer"),
        ({"created": "yesterday"}, "RFC 3339"),
        ({"platforms": ()}, "platform"),
    ],
)
def test_bad_releases_are_refused_before_anything_is_written(
    repo: model.Repository, ring: KeyRing, change: dict[str, object], message: str
) -> None:
    from dataclasses import replace

    bad = replace(factory.manifest("a", "1.0.0"), **change)  # type: ignore[arg-type]
    with pytest.raises(PublishError) as caught:
        publish_releases(repo, [bad], keyring=ring)
    assert message in str(caught.value) + str(caught.value.hint)
    assert not (repo.root / "public" / "metadata").exists()


def test_yank_marks_a_dead_end_that_the_client_sees(
    repo: model.Repository,
    ring: KeyRing,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> None:
    publish_releases(
        repo,
        [factory.manifest("edge-gateway", "1.0.0"), factory.manifest("edge-gateway", "1.1.0")],
        keyring=ring,
        now=_now(),
    )
    public = repo.root / "public"
    target_path = paths.release_target_path("edge-gateway", "1.1.0")
    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        before, _ = client.fetch(target_path)
        assert before.custom["cosgitops"]["deadend"] is False

        result = yank(
            repo, "edge-gateway", "1.1.0", reason="boot loop on rev B boards", keyring=ring
        )
        assert result.changed and not result.already_yanked

        after, data = client.fetch(target_path)
        custom = after.custom["cosgitops"]
        assert custom["deadend"] is True
        assert custom["yanked"]["reason"] == "boot loop on rev B boards"
        assert model.ReleaseManifest.from_json(json.loads(data)).deadend is True
        # Not rewritten history: the old manifest file is still there, and 1.0.0 untouched.
        assert (
            public / "targets" / paths.consistent_target_file(before.path, before.hashes["sha256"])
        ).is_file()
        other, _ = client.fetch(paths.release_target_path("edge-gateway", "1.0.0"))
        assert other.custom["cosgitops"]["deadend"] is False
    channel = json.loads((public / "channels" / "edge-gateway" / "stable.json").read_text())
    assert [entry["spec"]["version"] for entry in channel] == ["v1.0.0"]

    again = yank(repo, "edge-gateway", "1.1.0", reason="again", keyring=ring)
    assert again.already_yanked and not again.changed
    # Publishing the same build again does not un-yank it.
    republished = publish_releases(repo, [factory.manifest("edge-gateway", "1.1.0")], keyring=ring)
    assert not republished.changed
    with pytest.raises(NotFoundError):
        yank(repo, "edge-gateway", "9.9.9", reason="x", keyring=ring)


def test_refresh_resigns_timestamp_and_what_nears_expiry(
    repo: model.Repository,
    ring: KeyRing,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> None:
    start = _now()
    publish_releases(repo, [factory.manifest("edge-gateway", "1.0.0")], keyring=ring, now=start)
    # A day later only the timestamp is re-signed; the device downloads just that.
    result = refresh(repo, keyring=ring, now=start + timedelta(hours=20))
    assert result.resigned == ["timestamp"]
    # Five days in, the snapshot (7 days) has less than half its life left.
    result = refresh(repo, keyring=ring, now=start + timedelta(days=4))
    assert result.resigned == ["snapshot", "timestamp"]
    # 50 days in, every targets role (90 days) is re-signed too.
    later = start + timedelta(days=50)
    result = refresh(repo, keyring=ring, now=later)
    assert {"targets", "shard-0", "edge-gateway", "snapshot", "timestamp"} <= set(result.resigned)
    index = open_index(repo.root / "public")
    role = index.index.role("edge-gateway")
    assert role.signed.expires == later + timedelta(days=90)
    # 200 days in, root (365 days) is re-signed as version 2.
    result = refresh(repo, keyring=ring, now=start + timedelta(days=200))
    assert "root" in result.resigned and result.root_version == 2
    assert (repo.root / "public" / "metadata" / "2.root.json").is_file()


def test_refresh_keeps_an_expiring_index_alive_for_devices(
    repo: model.Repository,
    ring: KeyRing,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> None:
    from tuf.api.exceptions import ExpiredMetadataError

    start = _now() - timedelta(days=2)  # the index was published two days ago...
    publish_releases(repo, [factory.manifest("edge-gateway", "1.0.0")], keyring=ring, now=start)
    public = repo.root / "public"
    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        with pytest.raises(ExpiredMetadataError):  # ...so its timestamp has expired
            client.refresh()
        refresh(repo, keyring=ring)
        info, _ = client.fetch(paths.release_target_path("edge-gateway", "1.0.0"))
        assert info.custom["cosgitops"]["version"] == "1.0.0"


def test_development_keys_are_created_once_and_announced(repo: model.Repository) -> None:
    first = publish_releases(repo, [factory.manifest("a", "1.0.0")])
    key_dir = repo.root / ".cosgitops" / "keys"
    assert sorted(p.name for p in first.created_keys) == [
        "tuf-root.key",
        "tuf-snapshot.key",
        "tuf-targets.key",
        "tuf-timestamp.key",
    ]
    assert (
        (key_dir / "tuf-root.key")
        .read_text()
        .startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY")
    )
    assert (key_dir / "tuf-root.key").stat().st_mode & 0o077 == 0
    [note] = first.development_notes()
    assert note.startswith("DEVELOPMENT KEY") and "root/snapshot/targets/timestamp" in note
    second = publish_releases(repo, [factory.manifest("a", "1.1.0")])
    assert second.created_keys == [] and set(second.development_keys) == set(factory.ROLES)
    # Losing the development keys must not silently create a new, untrusted set.
    for path in key_dir.iterdir():
        path.unlink()
    with pytest.raises(PublishError) as caught:
        publish_releases(repo, [factory.manifest("a", "1.2.0")])
    assert "does not exist" in str(caught.value)


def test_keys_not_in_root_are_refused_by_the_publisher(
    repo: model.Repository, ring: KeyRing
) -> None:
    publish_releases(repo, [factory.manifest("a", "1.0.0")], keyring=ring)
    strangers = factory.keyring(factory.role_keys())
    with pytest.raises(PublishError) as caught:
        publish_releases(repo, [factory.manifest("a", "1.1.0")], keyring=strangers)
    assert "not the ones the index trusts" in str(caught.value)


def test_team_keys_sign_their_own_derivatives(
    repo: model.Repository,
    keys: dict[str, list[object]],
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> None:
    team = factory.new_key()
    ring = factory.keyring(keys, **{"edge-*": team})  # type: ignore[arg-type]
    publish_releases(
        repo,
        [factory.manifest("edge-gateway", "1.0.0"), factory.manifest("kiosk", "1.0.0")],
        keyring=ring,
    )
    index = open_index(repo.root / "public")
    shard = index.index.role(paths.shard_role_for("edge-gateway")).signed
    assert shard.delegations is not None and shard.delegations.roles is not None
    delegated = shard.delegations.roles["edge-gateway"]
    from cosgitops.publish.rolekeys import tuf_public_key

    assert delegated.keyids == [tuf_public_key(team.public_key()).keyid]
    role = index.index.role("edge-gateway")
    assert list(role.signatures) == delegated.keyids
    kiosk_role = index.index.role("kiosk")
    targets_keyid = tuf_public_key(keys["targets"][0].public_key()).keyid  # type: ignore[attr-defined]
    assert list(kiosk_role.signatures) == [targets_keyid]
    public = repo.root / "public"
    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        client.fetch(paths.release_target_path("edge-gateway", "1.0.0"))
        client.fetch(paths.release_target_path("kiosk", "1.0.0"))


def test_publish_warns_when_no_published_version_can_upgrade(
    repo: model.Repository, ring: KeyRing
) -> None:
    result = publish_releases(
        repo,
        [factory.manifest("a", "1.0.0"), factory.manifest("a", "2.0.0", upgrade_from=">=1.5.0")],
        keyring=ring,
    )
    assert len(result.warnings) == 1 and "2.0.0" in result.warnings[0]
    result = publish_releases(
        repo,
        [factory.manifest("a", "1.5.0"), factory.manifest("a", "3.0.0", upgrade_from=">=2.0.0")],
        keyring=ring,
    )
    assert result.warnings == []


def test_open_index_reads_releases_back(repo: model.Repository, ring: KeyRing) -> None:
    published = [
        factory.manifest("a", "1.0.0"),
        factory.manifest("a", "1.2.0"),
        factory.manifest("b", "0.1.0"),
    ]
    publish_releases(repo, published, keyring=ring, now=NOW - timedelta(days=1))
    index = open_index(repo.root / "public")
    assert index.derivatives() == ["a", "b"]
    assert [info.version for info in index.releases("a")] == ["1.2.0", "1.0.0"]
    manifest = index.manifest("a", "1.2.0")
    assert manifest.image == published[1].image
    assert index.releases("missing") == []
    with pytest.raises(NotFoundError):
        index.manifest("a", "9.0.0")
