"""The release lifecycle on the publishing side, as pure functions: checks, what a
target's ``custom`` says, when two releases are the same, channels and yank.

Phased rollout data is published here (``rollout.start`` is set to the publish time);
turning it into a yes/no per device, and ``upgradeFrom`` into stepping stones, is the
device's job (``cosgitops.device.rollout`` and ``cosgitops.device.choose``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cosgitops import model
from cosgitops.errors import PublishError, RemoteDataError
from cosgitops.publish import paths
from cosgitops.versioning import InvalidVersionError, Version, parse_range, parse_version

CUSTOM_KEY = "cosgitops"


# ---------------------------------------------------------------- time


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, whole seconds: ``2024-05-01T12:00:00Z``."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass an aware datetime (UTC)")
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse RFC 3339 (``Z`` or an offset); ValueError if it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a time")
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return value.astimezone(UTC)


# ---------------------------------------------------------------- checks


def check_manifest(manifest: model.ReleaseManifest, repository: model.Repository) -> None:
    """Refuse a release the index must not hold (bad names, unpinned image, bad ranges)."""
    where = f"{manifest.derivative} {manifest.version}"
    paths.check_derivative_name(manifest.derivative)
    paths.check_version(manifest.version)
    name, at, digest = manifest.image.rpartition("@")
    if not at or not name or not digest.startswith("sha256:") or len(digest) != 71:
        raise PublishError(
            f"{where}: image {manifest.image!r} is not pinned by a sha256 digest",
            hint="publish the NAME@sha256:<64 hex> that was built and signed",
        )
    if not manifest.channels:
        raise PublishError(f"{where}: the release is in no channel", hint="set release.channels")
    for channel in manifest.channels:
        paths.check_channel_name(channel)
        if repository.channels and channel not in repository.channels:
            raise PublishError(
                f"{where}: channel {channel!r} is not declared in cosgitops.yaml",
                hint=f"declare it under spec.channels (known: {', '.join(repository.channels)})",
            )
    if manifest.upgrade_from is not None:
        try:
            parse_range(manifest.upgrade_from)
        except InvalidVersionError as exc:
            raise PublishError(f"{where}: upgradeFrom: {exc.message}", hint=exc.hint) from exc
    rollout = manifest.rollout
    if not 0 <= rollout.start_percentage <= 100 or rollout.duration_minutes < 0:
        raise PublishError(
            f"{where}: rollout {rollout.to_json()} is out of range",
            hint="startPercentage is 0..100 and durationMinutes is 0 or more",
        )
    try:
        parse_time(manifest.created)
        if manifest.rollout_start is not None:
            parse_time(manifest.rollout_start)
    except ValueError as exc:
        raise PublishError(
            f"{where}: {exc}", hint="times are RFC 3339, e.g. 2024-05-01T12:00:00Z"
        ) from exc
    if not manifest.platforms:
        raise PublishError(f"{where}: the release lists no platform image")


def prepare_manifest(manifest: model.ReleaseManifest, now: datetime) -> model.ReleaseManifest:
    """The manifest as published: the rollout starts now unless it already has a start."""
    if manifest.rollout_start is not None:
        return manifest
    return replace(manifest, rollout_start=format_time(now))


def same_release(stored: model.ReleaseManifest, incoming: model.ReleaseManifest) -> bool:
    """True if publishing ``incoming`` again changes nothing.

    The publisher fills in the rollout start and ``yank`` sets ``deadend``; neither
    makes a re-publication of the same build a different release.
    """
    comparable = replace(
        incoming,
        rollout_start=incoming.rollout_start or stored.rollout_start,
        deadend=stored.deadend,
    )
    return comparable.to_json() == stored.to_json()


def manifest_bytes(manifest: model.ReleaseManifest) -> bytes:
    import json

    return (json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")


# ---------------------------------------------------------------- target custom


@dataclass(frozen=True)
class Yank:
    reason: str
    at: str  # RFC 3339

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "at": self.at}


def release_size(manifest: model.ReleaseManifest) -> int:
    """Bytes a device downloads at most: the largest platform image."""
    return max((image.size for image in manifest.platforms), default=0)


def release_custom(manifest: model.ReleaseManifest, *, yank: Yank | None = None) -> dict[str, Any]:
    """The target's ``custom``: what a device needs to choose without the manifest."""
    body: dict[str, Any] = {
        "derivative": manifest.derivative,
        "version": manifest.version,
        "image": manifest.image,
        "channels": list(manifest.channels),
        "upgradeFrom": manifest.upgrade_from,
        "rollout": {**manifest.rollout.to_json(), "start": manifest.rollout_start},
        "deadend": manifest.deadend,
        "created": manifest.created,
        "size": release_size(manifest),
    }
    if yank is not None:
        body["yanked"] = yank.to_json()
    return {CUSTOM_KEY: body}


@dataclass(frozen=True)
class ReleaseInfo:
    """One release as a target's ``custom`` describes it (parsed from untrusted data)."""

    derivative: str
    version: str
    image: str
    channels: tuple[str, ...]
    upgrade_from: str | None
    rollout: model.Rollout
    rollout_start: str | None
    deadend: bool
    created: str
    size: int
    yank: Yank | None = None
    parsed_version: Version = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed_version", parse_version(self.version))

    @property
    def digest(self) -> str:
        return self.image.rsplit("@", 1)[1]

    def allows_upgrade_from(self, current: str | Version) -> bool:
        """Does ``upgradeFrom`` let a device on ``current`` step to this release?"""
        if self.upgrade_from is None:
            return True
        return parse_range(self.upgrade_from).contains(current)

    @classmethod
    def from_custom(cls, custom: Any) -> ReleaseInfo:
        try:
            body = custom[CUSTOM_KEY]
            rollout = body.get("rollout") or {}
            yank = body.get("yanked")
            info = cls(
                derivative=str(body["derivative"]),
                version=str(body["version"]),
                image=str(body["image"]),
                channels=tuple(str(c) for c in body["channels"]),
                upgrade_from=None if body.get("upgradeFrom") is None else str(body["upgradeFrom"]),
                rollout=model.Rollout(
                    start_percentage=int(rollout.get("startPercentage", 100)),
                    duration_minutes=int(rollout.get("durationMinutes", 0)),
                ),
                rollout_start=None if rollout.get("start") is None else str(rollout["start"]),
                deadend=bool(body.get("deadend", False)),
                created=str(body["created"]),
                size=int(body.get("size", 0)),
                yank=None if yank is None else Yank(str(yank["reason"]), str(yank["at"])),
            )
            if info.upgrade_from is not None:
                parse_range(info.upgrade_from)
        except (KeyError, TypeError, ValueError, AttributeError, InvalidVersionError) as exc:
            raise RemoteDataError(f"malformed release metadata in the index: {exc!r}") from exc
        if "@sha256:" not in info.image:
            raise RemoteDataError(f"release image {info.image!r} is not pinned by digest")
        return info


# ---------------------------------------------------------------- channels, yank


def yanked(manifest: model.ReleaseManifest) -> model.ReleaseManifest:
    return replace(manifest, deadend=True)


def channel_releases(
    manifests: Iterable[model.ReleaseManifest], channel: str
) -> list[model.ReleaseManifest]:
    """Releases offered on ``channel``: not yanked, newest first."""
    offered = [m for m in manifests if channel in m.channels and not m.deadend]
    return sorted(offered, key=lambda m: parse_version(m.version), reverse=True)


def channels_of(manifests: Iterable[model.ReleaseManifest]) -> list[str]:
    """Every channel any of the releases was ever published to (yanked ones included,
    so a channel whose last release is yanked is exported as an empty list)."""
    return sorted({channel for m in manifests for channel in m.channels})
