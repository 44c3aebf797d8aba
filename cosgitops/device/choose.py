"""Which release a device should move to, and why (pure, no I/O).

The input is what the signed index says about each release (the ``custom`` metadata of
its TUF target) and what the device knows about itself; the output names the release
to apply next, the goal it leads to (``upgradeFrom`` may force a stepping stone first)
and a verdict for every release, so ``device check`` can explain itself.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cosgitops.device.rollout import RolloutPlan
from cosgitops.errors import RemoteDataError
from cosgitops.oci.digest import DIGEST_RE
from cosgitops.versioning import InvalidVersionError, Version, parse_range, parse_version


@dataclass(frozen=True)
class ReleaseCandidate:
    """One published release as the index describes it."""

    derivative: str
    version: str
    image: str  # NAME@sha256:...: the signed digest a device applies
    channels: tuple[str, ...] = ("stable",)
    upgrade_from: str | None = None
    rollout: RolloutPlan = field(default_factory=RolloutPlan)
    deadend: bool = False
    created: str = ""
    size: int = 0
    target_path: str = ""  # the TUF target holding the full release manifest
    platforms: tuple[str, ...] = ()  # empty: the index does not say

    @property
    def digest(self) -> str:
        return self.image.rsplit("@", 1)[1]

    @property
    def parsed_version(self) -> Version:
        return parse_version(self.version)

    def ident(self) -> dict[str, str]:
        return {"version": self.version, "digest": self.digest}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "digest": self.digest,
            "image": self.image,
            "channels": list(self.channels),
            "upgradeFrom": self.upgrade_from,
            "deadend": self.deadend,
            "created": self.created,
            "size": self.size,
        }

    @classmethod
    def from_custom(cls, target_path: str, custom: Mapping[str, Any]) -> ReleaseCandidate:
        """From a TUF target's ``custom["cosgitops"]``; bad shapes are :class:`RemoteDataError`."""
        data = custom.get("cosgitops") if isinstance(custom, Mapping) else None
        if not isinstance(data, Mapping):
            raise RemoteDataError(f"index target {target_path} carries no cosgitops metadata")
        try:
            image = str(data["image"])
            name, at, digest = image.rpartition("@")
            if not at or not name or not DIGEST_RE.match(digest):
                raise RemoteDataError(
                    f"index target {target_path}: image {image!r} is not pinned by digest"
                )
            version = str(data["version"])
            parse_version(version)
            upgrade_from = data.get("upgradeFrom")
            if upgrade_from is not None:
                upgrade_from = str(upgrade_from)
                parse_range(upgrade_from)
            channels = data.get("channels") or ()
            if isinstance(channels, str) or not isinstance(channels, Sequence):
                raise RemoteDataError(f"index target {target_path}: channels is not a list")
            created = data.get("created") or ""
            platforms = data.get("platforms") or ()
            if isinstance(platforms, str) or not isinstance(platforms, Sequence):
                raise RemoteDataError(f"index target {target_path}: platforms is not a list")
            return cls(
                derivative=str(data.get("derivative", "")),
                version=version,
                image=image,
                channels=tuple(str(channel) for channel in channels),
                upgrade_from=upgrade_from,
                rollout=RolloutPlan.from_json(data.get("rollout"), fallback_start=str(created)),
                deadend=bool(data.get("deadend", False)),
                created=str(created),
                size=int(data.get("size") or 0),
                target_path=target_path,
                platforms=tuple(str(platform) for platform in platforms),
            )
        except InvalidVersionError as exc:
            raise RemoteDataError(f"index target {target_path}: {exc.message}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteDataError(f"index target {target_path} is malformed: {exc!r}") from exc


@dataclass(frozen=True)
class InstalledRelease:
    version: str
    digest: str


@dataclass(frozen=True)
class ChoiceRequest:
    current: InstalledRelease | None
    channel: str
    wariness: float
    now: dt.datetime
    rejected: tuple[InstalledRelease, ...] = ()
    pin: str | None = None  # --version V
    force: bool = False  # allow downgrades; with a pin also yanked, rejected, upgradeFrom
    platform: str | None = None  # skip releases the index says have no image for it


@dataclass(frozen=True)
class Verdict:
    version: str
    digest: str
    eligible: bool
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "digest": self.digest,
            "eligible": self.eligible,
            "reasons": list(self.reasons),
        }


class ChoiceReason(enum.Enum):
    """Why a choice came out as it did: what callers decide on (``summary`` is prose)."""

    INSTALL = "install"  # nothing installed; the goal is the first release
    UPGRADE = "upgrade"  # straight to the goal
    STEP = "step"  # the goal needs a stepping stone first (upgradeFrom)
    PARTIAL = "partial"  # the goal is out of reach; as far as upgradeFrom allows
    FORCED = "forced"  # --force: the best release is not newer
    PINNED = "pinned"  # --version V
    UP_TO_DATE = "up-to-date"
    NONE_AVAILABLE = "none-available"  # nothing on the channel for a fresh device
    UNREACHABLE = "unreachable"  # upgradeFrom excludes the installed version everywhere
    INSTALLED = "installed"  # the pinned version is what is installed
    NOT_PUBLISHED = "not-published"  # the pinned version is not in the index
    REFUSED = "refused"  # the pinned version exists but the rules refuse it


@dataclass(frozen=True)
class Choice:
    release: ReleaseCandidate | None  # apply this next; None = nothing to do
    goal: ReleaseCandidate | None  # where the device is headed
    path: tuple[ReleaseCandidate, ...]  # the steps from the current version to the goal
    summary: str
    verdicts: tuple[Verdict, ...] = ()
    downgrade: bool = False
    reason: ChoiceReason = ChoiceReason.UP_TO_DATE

    @property
    def refused(self) -> bool:
        """A pinned version exists but the rules refuse it."""
        return self.reason is ChoiceReason.REFUSED

    @property
    def action(self) -> str:
        if self.release is None:
            return "none"
        return "downgrade" if self.downgrade else "upgrade"

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "release": self.release.to_json() if self.release else None,
            "goal": self.goal.to_json() if self.goal else None,
            "path": [step.version for step in self.path],
            "summary": self.summary,
            "reason": self.reason.value,
            "refused": self.refused,
            "releases": [verdict.to_json() for verdict in self.verdicts],
        }


def _is_rejected(release: ReleaseCandidate, rejected: Iterable[InstalledRelease]) -> bool:
    return any(
        item.digest == release.digest or _same_version(item.version, release.version)
        for item in rejected
    )


def _same_version(left: str, right: str) -> bool:
    try:
        return parse_version(left) == parse_version(right)
    except InvalidVersionError:
        return left == right


def _admits(release: ReleaseCandidate, version: Version) -> bool:
    if release.upgrade_from is None:
        return True
    return parse_range(release.upgrade_from).contains(version)


def _choose_pinned(
    releases: Sequence[ReleaseCandidate], request: ChoiceRequest, pin: Version
) -> Choice:
    matches = [r for r in releases if r.parsed_version == pin]
    if not matches:
        return Choice(
            None,
            None,
            (),
            f"version {request.pin} is not published",
            reason=ChoiceReason.NOT_PUBLISHED,
        )
    # Should a publisher ever list one version twice, prefer the copy that is not yanked.
    release = sorted(matches, key=lambda r: r.deadend)[0]
    blockers: list[str] = []
    current = request.current
    if release.deadend:
        blockers.append("yanked (dead end)")
    if _is_rejected(release, request.rejected):
        blockers.append("this device rolled back from it")
    downgrade = False
    if current is not None:
        current_version = parse_version(current.version)
        if pin == current_version and release.digest == current.digest:
            return Choice(
                None,
                release,
                (),
                f"{release.version} is already installed",
                reason=ChoiceReason.INSTALLED,
            )
        if pin <= current_version:
            downgrade = True
            blockers.append(f"not newer than the installed {current.version}")
        elif not _admits(release, current_version):
            blockers.append(f"upgradeFrom {release.upgrade_from!r} excludes {current.version}")
    verdict = Verdict(release.version, release.digest, not blockers, tuple(blockers))
    if blockers and not request.force:
        return Choice(
            None,
            release,
            (),
            f"{release.version} is refused: {'; '.join(blockers)} (--force overrides)",
            (verdict,),
            reason=ChoiceReason.REFUSED,
        )
    forced = f" (forced past: {'; '.join(blockers)})" if blockers else ""
    return Choice(
        release,
        release,
        (release,),
        f"pinned to {release.version}{forced}",
        (verdict,),
        downgrade=downgrade,
        reason=ChoiceReason.PINNED,
    )


def choose_release(releases: Sequence[ReleaseCandidate], request: ChoiceRequest) -> Choice:
    """The release to apply next under the channel, rollout, upgradeFrom and safety rules."""
    usable: list[ReleaseCandidate] = []
    verdicts: dict[int, Verdict] = {}
    for index, release in enumerate(releases):
        try:
            release.parsed_version  # noqa: B018 - parses, raising on a bad version
        except InvalidVersionError:
            verdicts[index] = Verdict(release.version, release.digest, False, ("bad version",))
            continue
        usable.append(release)
    if request.pin is not None:
        return _choose_pinned(usable, request, parse_version(request.pin))

    current = request.current
    current_version = parse_version(current.version) if current else None
    current_text = current.version if current else ""
    eligible: list[ReleaseCandidate] = []
    reasons_by_release: dict[int, list[str]] = {}
    for release in usable:
        reasons: list[str] = []
        if request.channel not in release.channels:
            reasons.append(f"not in channel {request.channel!r}")
        if release.deadend:
            reasons.append("yanked (dead end)")
        if _is_rejected(release, request.rejected):
            reasons.append("this device rolled back from it")
        if request.platform and release.platforms and request.platform not in release.platforms:
            reasons.append(f"no image for {request.platform}")
        if current is not None and current_version is not None:
            version = release.parsed_version
            if version == current_version and release.digest == current.digest:
                reasons.append("installed")
            elif version <= current_version and not request.force:
                reasons.append(f"not newer than the installed {current.version}")
        if not release.rollout.admits(request.wariness, request.now):
            percentage = release.rollout.percentage_at(request.now)
            opens = release.rollout.opens_for(request.wariness)
            when = f", reaches this device at {opens.isoformat()}" if opens else ""
            reasons.append(
                f"phased rollout at {percentage:.1f}% (this device's wariness is "
                f"{request.wariness * 100:.1f}%{when})"
            )
        reasons_by_release[id(release)] = reasons
        if not reasons:
            eligible.append(release)

    goal = max(eligible, key=lambda r: r.parsed_version, default=None)
    path: list[ReleaseCandidate] = []
    downgrade = False
    summary: str
    reason: ChoiceReason
    if goal is None:
        if current is not None:
            summary, reason = f"up to date at {current_text}", ChoiceReason.UP_TO_DATE
        else:
            summary = f"no release is available on channel {request.channel!r}"
            reason = ChoiceReason.NONE_AVAILABLE
    elif current_version is None:
        path = [goal]
        summary, reason = f"install {goal.version}", ChoiceReason.INSTALL
    elif goal.parsed_version <= current_version:
        # Only reachable with --force: the best the index offers is not newer.
        path, downgrade = [goal], True
        summary = f"forced move from {current_text} to {goal.version}"
        reason = ChoiceReason.FORCED
    else:
        step_version = current_version
        while step_version < goal.parsed_version and len(path) <= len(eligible):
            admitting = [
                r for r in eligible if r.parsed_version > step_version and _admits(r, step_version)
            ]
            if not admitting:
                break
            step = max(admitting, key=lambda r: r.parsed_version)
            path.append(step)
            step_version = step.parsed_version
        if not path:
            summary = (
                f"{goal.version} is available but its upgradeFrom {goal.upgrade_from!r} "
                f"excludes {current_text} and no published release leads there"
            )
            reason = ChoiceReason.UNREACHABLE
        elif path[-1] is not goal:
            summary = (
                f"{goal.version} is not reachable from {current_text}; "
                f"moving to {path[0].version} as far as upgradeFrom allows"
            )
            reason = ChoiceReason.PARTIAL
        elif len(path) > 1:
            summary = (
                f"upgrade to {goal.version} through "
                f"{' -> '.join(step.version for step in path)}; {path[0].version} first"
            )
            reason = ChoiceReason.STEP
        else:
            summary, reason = f"upgrade {current_text} -> {goal.version}", ChoiceReason.UPGRADE

    for index, release in enumerate(releases):
        if index in verdicts:
            continue
        reasons = reasons_by_release.get(id(release), [])
        extra: list[str] = []
        if not reasons and current_version is not None and path and release is not path[0]:
            if not _admits(release, current_version):
                extra.append(f"upgradeFrom {release.upgrade_from!r} excludes {current_text}")
            elif release.parsed_version < path[0].parsed_version:
                extra.append(f"superseded by {path[0].version}")
        verdicts[index] = Verdict(release.version, release.digest, not reasons, (*reasons, *extra))
    ordered = tuple(verdicts[index] for index in range(len(releases)))
    return Choice(path[0] if path else None, goal, tuple(path), summary, ordered, downgrade, reason)
