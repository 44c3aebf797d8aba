from __future__ import annotations

import datetime as dt

import pytest

from cosgitops.device.choose import (
    ChoiceRequest,
    InstalledRelease,
    ReleaseCandidate,
    choose_release,
)
from cosgitops.device.rollout import RolloutPlan
from cosgitops.errors import RemoteDataError

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def digest(version: str) -> str:
    return "sha256:" + (version.replace(".", "").replace("-", "") * 64)[:64].translate(
        str.maketrans("rcbet", "abcde")
    ).ljust(64, "0")


def release(version: str, **kw: object) -> ReleaseCandidate:
    values: dict[str, object] = {
        "derivative": "edge",
        "version": version,
        "image": f"registry.example/edge@{digest(version)}",
        "channels": ("stable",),
    }
    values.update(kw)
    return ReleaseCandidate(**values)  # type: ignore[arg-type]


def request(current: str | None = "1.0.0", **kw: object) -> ChoiceRequest:
    values: dict[str, object] = {
        "current": InstalledRelease(current, digest(current)) if current else None,
        "channel": "stable",
        "wariness": 0.5,
        "now": NOW,
    }
    values.update(kw)
    return ChoiceRequest(**values)  # type: ignore[arg-type]


def test_picks_highest_newer_release_on_channel() -> None:
    releases = [
        release("1.0.0"),
        release("1.1.0"),
        release("1.2.0"),
        release("2.0.0", channels=("beta",)),
    ]
    choice = choose_release(releases, request())
    assert choice.release is not None and choice.release.version == "1.2.0"
    assert choice.action == "upgrade"
    reasons = {v.version: v.reasons for v in choice.verdicts}
    assert reasons["2.0.0"] == ("not in channel 'stable'",)
    assert reasons["1.0.0"] == ("installed",)
    assert reasons["1.1.0"] == ("superseded by 1.2.0",)
    beta = choose_release(releases, request(channel="beta"))
    assert beta.release is not None and beta.release.version == "2.0.0"


def test_semver_precedence_not_text_order() -> None:
    releases = [release("1.9.0"), release("1.10.0"), release("1.10.0-rc.1")]
    choice = choose_release(releases, request())
    assert choice.release is not None and choice.release.version == "1.10.0"


def test_up_to_date_and_first_install() -> None:
    assert choose_release([release("1.0.0")], request()).release is None
    assert choose_release([release("1.0.0")], request()).summary == "up to date at 1.0.0"
    first = choose_release([release("1.0.0"), release("0.9.0")], request(current=None))
    assert first.release is not None and first.release.version == "1.0.0"
    nothing = choose_release([], request(current=None))
    assert nothing.release is None and "no release" in nothing.summary


def test_never_yanked_never_rejected() -> None:
    releases = [release("1.1.0"), release("1.2.0", deadend=True), release("1.3.0")]
    rejected = (InstalledRelease("1.3.0", digest("1.3.0")),)
    choice = choose_release(releases, request(rejected=rejected))
    assert choice.release is not None and choice.release.version == "1.1.0"
    reasons = {v.version: v.reasons for v in choice.verdicts}
    assert "yanked (dead end)" in reasons["1.2.0"]
    assert "this device rolled back from it" in reasons["1.3.0"]
    # a republished 1.3.0 (new digest, same version) is still refused, and so is the old
    # digest under a new version number
    again = [release("1.3.0", image=f"other/edge@{digest('9.9.9')}")]
    assert choose_release(again, request(rejected=rejected)).release is None
    renamed = [release("1.4.0", image=f"registry.example/edge@{digest('1.3.0')}")]
    assert choose_release(renamed, request(rejected=rejected)).release is None


def test_no_downgrade_unless_forced() -> None:
    releases = [release("0.9.0"), release("1.0.0", deadend=True)]
    assert choose_release(releases, request()).release is None
    forced = choose_release(releases, request(force=True))
    assert forced.release is not None and forced.release.version == "0.9.0"
    assert forced.action == "downgrade"


def test_upgrade_from_steps_through_an_intermediate_release() -> None:
    releases = [
        release("1.5.0", upgrade_from=">=1.0.0"),
        release("2.0.0", upgrade_from=">=1.5.0"),
        release("2.1.0", upgrade_from=">=2.0.0"),
    ]
    choice = choose_release(releases, request())
    assert choice.release is not None and choice.release.version == "1.5.0"
    assert choice.goal is not None and choice.goal.version == "2.1.0"
    assert [step.version for step in choice.path] == ["1.5.0", "2.0.0", "2.1.0"]
    assert "through" in choice.summary
    reasons = {v.version: v.reasons for v in choice.verdicts}
    assert reasons["2.1.0"] == ("upgradeFrom '>=2.0.0' excludes 1.0.0",)


def test_upgrade_from_without_a_stepping_stone() -> None:
    releases = [release("2.0.0", upgrade_from=">=1.5.0")]
    choice = choose_release(releases, request())
    assert choice.release is None
    assert "excludes 1.0.0" in choice.summary
    partial = choose_release(
        [release("1.2.0"), release("3.0.0", upgrade_from=">=2.0.0")], request()
    )
    assert partial.release is not None and partial.release.version == "1.2.0"
    assert "not reachable" in partial.summary


def test_phased_rollout_uses_wariness() -> None:
    start = NOW - dt.timedelta(minutes=30)
    ramping = release("1.1.0", rollout=RolloutPlan(10, 60, start))  # 55% open now
    assert choose_release([ramping], request(wariness=0.2)).release is not None
    late = choose_release([ramping], request(wariness=0.9))
    assert late.release is None
    (verdict,) = late.verdicts
    assert "phased rollout at 55.0%" in verdict.reasons[0]
    assert "reaches this device at" in verdict.reasons[0]
    later = request(wariness=0.9, now=NOW + dt.timedelta(minutes=30))
    assert choose_release([ramping], later).release is not None


def test_pinned_version() -> None:
    releases = [
        release("0.9.0"),
        release("1.1.0", channels=("beta",)),
        release("1.2.0", deadend=True),
        release("1.3.0", upgrade_from=">=1.1.0"),
    ]
    beta = choose_release(releases, request(pin="1.1.0"))
    assert beta.release is not None and beta.release.version == "1.1.0"
    for version, why in (
        ("1.2.0", "yanked"),
        ("0.9.0", "not newer"),
        ("1.3.0", "upgradeFrom"),
    ):
        refused = choose_release(releases, request(pin=version))
        assert refused.release is None and refused.refused and why in refused.summary
        forced = choose_release(releases, request(pin=version, force=True))
        assert forced.release is not None and forced.release.version == version
    missing = choose_release(releases, request(pin="7.0.0"))
    assert missing.release is None and not missing.refused and missing.goal is None
    installed = choose_release([release("1.0.0")], request(pin="1.0.0"))
    assert installed.release is None and "already installed" in installed.summary


def test_rejected_pin_needs_force() -> None:
    rejected = (InstalledRelease("1.1.0", digest("1.1.0")),)
    choice = choose_release([release("1.1.0")], request(pin="1.1.0", rejected=rejected))
    assert choice.refused and "rolled back" in choice.summary


def test_from_custom_validates_index_data() -> None:
    good = {
        "cosgitops": {
            "derivative": "edge",
            "version": "1.4.0",
            "image": f"reg.example/edge@{digest('1.4.0')}",
            "channels": ["stable", "beta"],
            "upgradeFrom": ">=1.2.0",
            "rollout": {"startPercentage": 10, "durationMinutes": 60, "start": None},
            "deadend": False,
            "created": "2026-01-01T00:00:00Z",
            "size": 1234,
        }
    }
    candidate = ReleaseCandidate.from_custom("releases/x/edge/1.4.0.json", good)
    assert candidate.channels == ("stable", "beta")
    assert candidate.rollout.start == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for change in (
        {"image": "reg.example/edge:latest"},
        {"version": "v1"},
        {"upgradeFrom": ">=banana"},
        {"channels": "stable"},
        {"size": "big"},
    ):
        bad = {"cosgitops": {**good["cosgitops"], **change}}
        with pytest.raises(RemoteDataError):
            ReleaseCandidate.from_custom("releases/x/edge/1.4.0.json", bad)
    with pytest.raises(RemoteDataError):
        ReleaseCandidate.from_custom("p", {})


def test_bad_versions_in_the_index_are_skipped_not_fatal() -> None:
    odd = ReleaseCandidate("edge", "not-a-version", f"r/e@{digest('1')}")
    choice = choose_release([odd, release("1.1.0")], request())
    assert choice.release is not None and choice.release.version == "1.1.0"
    assert choice.verdicts[0].reasons == ("bad version",)


def test_platform_filter() -> None:
    releases = [release("1.1.0", platforms=("linux/arm64",)), release("1.0.5")]
    choice = choose_release(releases, request(platform="linux/amd64"))
    assert choice.release is not None and choice.release.version == "1.0.5"
    assert "no image for linux/amd64" in choice.verdicts[0].reasons
