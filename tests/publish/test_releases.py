"""Release lifecycle helpers on the publishing side (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from cosgitops import model
from cosgitops.errors import RemoteDataError
from cosgitops.publish import releases
from tests.publish import factory


def test_prepare_sets_the_rollout_start_once() -> None:
    now = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    prepared = releases.prepare_manifest(factory.manifest("a", "1.0.0"), now)
    assert prepared.rollout_start == "2024-06-01T08:30:00Z"
    later = datetime(2024, 7, 1, tzinfo=UTC)
    assert releases.prepare_manifest(prepared, later).rollout_start == prepared.rollout_start


def test_same_release_ignores_what_the_publisher_adds() -> None:
    incoming = factory.manifest("a", "1.0.0")
    stored = releases.yanked(releases.prepare_manifest(incoming, datetime(2024, 6, 1, tzinfo=UTC)))
    assert releases.same_release(stored, incoming)
    assert not releases.same_release(stored, replace(incoming, notes="other notes"))
    assert not releases.same_release(stored, replace(incoming, channels=("beta",)))
    assert not releases.same_release(stored, factory.manifest("a", "1.0.0", build="2"))


def test_custom_carries_the_documented_fields() -> None:
    manifest = releases.prepare_manifest(
        factory.manifest(
            "edge-gateway",
            "1.4.0",
            upgrade_from=">=1.2.0",
            rollout=model.Rollout(10, 2880),
            platforms=("linux/amd64", "linux/arm64"),
        ),
        datetime(2024, 6, 1, tzinfo=UTC),
    )
    custom = releases.release_custom(manifest)
    assert list(custom) == ["cosgitops"]
    body = custom["cosgitops"]
    assert body == {
        "derivative": "edge-gateway",
        "version": "1.4.0",
        "image": manifest.image,
        "channels": ["stable"],
        "upgradeFrom": ">=1.2.0",
        "rollout": {
            "startPercentage": 10,
            "durationMinutes": 2880,
            "start": "2024-06-01T00:00:00Z",
        },
        "deadend": False,
        "created": "2024-05-01T12:00:00Z",
        "size": manifest.platforms[0].size,
    }
    info = releases.ReleaseInfo.from_custom(custom)
    assert info.rollout == model.Rollout(10, 2880) and info.upgrade_from == ">=1.2.0"
    assert info.allows_upgrade_from("1.3.0") and not info.allows_upgrade_from("1.1.0")
    yanked = releases.release_custom(
        releases.yanked(manifest), yank=releases.Yank("broken", "2024-06-02T00:00:00Z")
    )
    parsed = releases.ReleaseInfo.from_custom(yanked)
    assert parsed.deadend and parsed.yank == releases.Yank("broken", "2024-06-02T00:00:00Z")


def test_the_device_agent_reads_what_the_publisher_writes() -> None:
    choose = pytest.importorskip("cosgitops.device.choose")
    manifest = releases.prepare_manifest(
        factory.manifest("kiosk", "2.0.0", upgrade_from=">=1.0.0", rollout=model.Rollout(5, 60)),
        datetime(2024, 6, 1, tzinfo=UTC),
    )
    candidate = choose.ReleaseCandidate.from_custom(
        "releases/x/kiosk/2.0.0.json", releases.release_custom(manifest)
    )
    assert candidate.image == manifest.image and candidate.upgrade_from == ">=1.0.0"
    assert candidate.rollout.start_percentage == 5


@pytest.mark.parametrize(
    "custom",
    [
        None,
        {},
        {"cosgitops": "x"},
        {"cosgitops": {"version": "1.0.0"}},
        {
            "cosgitops": {
                "derivative": "a",
                "version": "1.0",
                "image": "r@sha256:0",
                "channels": [],
                "created": "x",
            }
        },
        {
            "cosgitops": {
                "derivative": "a",
                "version": "1.0.0",
                "image": "r:latest",
                "channels": [],
                "created": "x",
            }
        },
        {
            "cosgitops": {
                "derivative": "a",
                "version": "1.0.0",
                "image": "r@sha256:0",
                "channels": [],
                "created": "x",
                "upgradeFrom": ">=x",
            }
        },
    ],
)
def test_malformed_custom_is_remote_data_error(custom: object) -> None:
    with pytest.raises(RemoteDataError):
        releases.ReleaseInfo.from_custom(custom)


def test_channel_listing_skips_yanked_and_sorts_newest_first() -> None:
    manifests = [
        factory.manifest("a", "1.9.0"),
        factory.manifest("a", "1.10.0"),
        releases.yanked(factory.manifest("a", "1.11.0")),
        factory.manifest("a", "2.0.0", channels=("beta",)),
    ]
    assert [m.version for m in releases.channel_releases(manifests, "stable")] == [
        "1.10.0",
        "1.9.0",
    ]
    assert releases.channels_of(manifests) == ["beta", "stable"]


def test_times() -> None:
    moment = releases.parse_time("2024-05-01T14:00:00+02:00")
    assert releases.format_time(moment) == "2024-05-01T12:00:00Z"
    with pytest.raises(ValueError):
        releases.parse_time("2024-05-01T12:00:00")  # no zone
    with pytest.raises(ValueError):
        releases.format_time(datetime(2024, 1, 1))
