"""Phased rollout: which devices take a release, and when (pure, no I/O).

A release opens to ``startPercentage`` of the fleet at ``start`` and widens linearly
to 100% over ``durationMinutes``. Each device has a fixed *wariness* in [0, 1), derived
from its machine id, and takes the release once the open percentage passes it: the
same devices go first every time (they are the canaries), and a device never flips
back out of a rollout it has entered, because the percentage only grows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

_WARINESS_SALT = b"cosgitops-rollout-wariness\x00"


def wariness_from_machine_id(machine_id: str) -> float:
    """A stable number in [0, 1) spread uniformly over machine ids."""
    digest = hashlib.sha256(_WARINESS_SALT + machine_id.strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def parse_time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 time as an aware datetime; None for None, empty or unparsable text."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


@dataclass(frozen=True)
class RolloutPlan:
    start_percentage: float = 100.0
    duration_minutes: float = 0.0
    start: dt.datetime | None = None  # None: open since forever

    def percentage_at(self, now: dt.datetime) -> float:
        """How much of the fleet (0-100) may take the release at ``now``."""
        first = min(max(self.start_percentage, 0.0), 100.0)
        if self.start is not None and now < self.start:
            return 0.0
        if self.duration_minutes <= 0 or self.start is None:
            # No ramp, or no known start: the whole fleet is in.
            return 100.0 if self.duration_minutes <= 0 else first
        elapsed = (now - self.start).total_seconds() / 60.0
        fraction = min(elapsed / self.duration_minutes, 1.0)
        return first + (100.0 - first) * fraction

    def admits(self, wariness: float, now: dt.datetime) -> bool:
        percentage = self.percentage_at(now)
        return percentage >= 100.0 or wariness * 100.0 < percentage

    def opens_for(self, wariness: float) -> dt.datetime | None:
        """When a device of this wariness is let in (None if it already is, or never ramps)."""
        if self.start is None:
            return None
        first = min(max(self.start_percentage, 0.0), 100.0)
        needed = wariness * 100.0
        if needed < first or self.duration_minutes <= 0:
            return self.start
        fraction = (needed - first) / (100.0 - first) if first < 100.0 else 0.0
        return self.start + dt.timedelta(minutes=self.duration_minutes * fraction)

    @classmethod
    def from_json(cls, data: object, *, fallback_start: str | None = None) -> RolloutPlan:
        """From a release's ``rollout`` object; missing or malformed parts mean "open"."""
        if not isinstance(data, dict):
            return cls(start=parse_time(fallback_start))
        try:
            start_percentage = float(data.get("startPercentage", 100))
            duration = float(data.get("durationMinutes", 0))
        except (TypeError, ValueError):
            start_percentage, duration = 100.0, 0.0
        start = parse_time(data.get("start") if isinstance(data.get("start"), str) else None)
        return cls(start_percentage, duration, start or parse_time(fallback_start))
