"""The naming rule shared by the publisher and devices (cosgitops.publish.paths)."""

from __future__ import annotations

import hashlib

import pytest

from cosgitops.errors import PublishError
from cosgitops.publish import paths


def test_release_target_path_follows_the_documented_rule() -> None:
    digit = hashlib.sha256(b"edge-gateway").hexdigest()[0]
    assert paths.shard_of("edge-gateway") == digit
    assert paths.release_target_path("edge-gateway", "1.4.0") == (
        f"releases/{digit}/edge-gateway/1.4.0.json"
    )
    assert paths.role_for("edge-gateway") == "edge-gateway"
    assert paths.shard_role_for("edge-gateway") == f"shard-{digit}"


def test_shards_spread_derivatives_over_all_sixteen_digits() -> None:
    seen = {paths.shard_of(f"derivative-{n:04d}") for n in range(200)}
    assert seen == set(paths.SHARD_DIGITS)


def test_parse_release_target_path_round_trips_and_rejects_others() -> None:
    path = paths.release_target_path("kiosk", "2.0.0-rc.1+b.5")
    assert paths.parse_release_target_path(path) == ("kiosk", "2.0.0-rc.1+b.5")
    wrong_shard = path.replace(f"/{paths.shard_of('kiosk')}/", "/z/")
    for bad in (
        wrong_shard,
        "releases/kiosk/1.0.0.json",
        "other/0/kiosk/1.0.0.json",
        path[:-5],
        path.replace("2.0.0", "v2.0.0"),
    ):
        assert paths.parse_release_target_path(bad) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Edge",
        "edge_gw",
        "-edge",
        "edge-",
        "a" * 64,
        "root",
        "targets",
        "snapshot",
        "timestamp",
        "shard-0",
        "shard-f",
        "../x",
        "a/b",
    ],
)
def test_names_that_cannot_be_roles_are_refused(name: str) -> None:
    with pytest.raises(PublishError):
        paths.role_for(name)


def test_delegation_patterns_match_only_their_own_files() -> None:
    from cosgitops.publish.tufapi import DelegatedRole

    digit = paths.shard_of("kiosk")
    shard = DelegatedRole("shard", [], 1, True, paths.shard_paths(digit))
    own = DelegatedRole("kiosk", [], 1, True, paths.derivative_paths("kiosk"))
    target = paths.release_target_path("kiosk", "1.0.0")
    assert shard.is_delegated_path(target) and own.is_delegated_path(target)
    other = f"releases/{digit}/kiosk-2/1.0.0.json"
    assert shard.is_delegated_path(other) and not own.is_delegated_path(other)
    assert not own.is_delegated_path(f"releases/{digit}/kiosk/sub/1.0.0.json")


def test_consistent_file_names() -> None:
    assert paths.consistent_target_file("releases/a/x/1.0.0.json", "ff") == (
        "releases/a/x/ff.1.0.0.json"
    )
    assert paths.metadata_file("timestamp") == "timestamp.json"
    assert paths.metadata_file("kiosk", 7) == "7.kiosk.json"
    assert paths.channel_file("kiosk", "stable") == "channels/kiosk/stable.json"
    with pytest.raises(PublishError):
        paths.channel_file("kiosk", "../up")
