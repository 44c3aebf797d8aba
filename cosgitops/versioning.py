"""SemVer 2.0 versions and version ranges (pure, no I/O).

Versions follow https://semver.org/spec/v2.0.0.html exactly: ``MAJOR.MINOR.PATCH``,
an optional ``-prerelease`` and an optional ``+build``. Precedence ignores build
metadata, so ``1.0.0+a`` and ``1.0.0+b`` compare equal (``str()`` keeps the text).

A range is one or more comparator sets joined by ``||``; a set is comparators joined
by spaces or commas, all of which must hold::

    ">=1.2.0"            ">=1.2.0 <2.0.0"          ">=1.2.0, <2.0.0"
    "1.4.0" / "=1.4.0"   "!=1.3.0"                 "^1.2.0"  "~1.2.0"
    "<1.0.0 || >=1.2.0"  "*"

``^X.Y.Z`` allows changes that keep the left-most non-zero part (``^1.2.3`` is
``>=1.2.3 <2.0.0``, ``^0.2.3`` is ``>=0.2.3 <0.3.0``); ``~X.Y.Z`` allows patch changes
(``>=X.Y.Z <X.(Y+1).0``). Matching is plain SemVer precedence: unlike npm, a
prerelease is not excluded from a range that does not name one, because a fleet's
``upgradeFrom`` is about which releases a device may step from, whatever they are.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cosgitops.errors import CosgitopsError

_NUMBER = r"0|[1-9]\d*"
_IDENT = r"[0-9A-Za-z-]+"
_PRERELEASE_IDENT = rf"(?:{_NUMBER}|\d*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    rf"^(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<prerelease>{_PRERELEASE_IDENT}(?:\.{_PRERELEASE_IDENT})*))?"
    rf"(?:\+(?P<build>{_IDENT}(?:\.{_IDENT})*))?\Z",
    re.ASCII,
)
_COMPARATOR_RE = re.compile(r"(?P<op>>=|<=|==|!=|>|<|=|\^|~)?(?P<version>\S+)")
MAX_VERSION_LENGTH = 256  # far above any real version; bounds work on hostile input


class InvalidVersionError(CosgitopsError):
    """A version or version range is not valid SemVer 2.0 syntax."""


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()
    build: str = ""

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def _precedence(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release sorts after all of its prereleases; numeric identifiers sort
        # before alphanumeric ones and compare as numbers.
        identifiers = tuple(
            (0, part, "") if isinstance(part, int) else (1, 0, part) for part in self.prerelease
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, identifiers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence() == other._precedence()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence() < other._precedence()

    def __hash__(self) -> int:
        return hash(self._precedence())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(part) for part in self.prerelease)
        if self.build:
            text += "+" + self.build
        return text

    def next_major(self) -> Version:
        return Version(self.major + 1, 0, 0)

    def next_minor(self) -> Version:
        return Version(self.major, self.minor + 1, 0)

    def next_patch(self) -> Version:
        return Version(self.major, self.minor, self.patch + 1)


def parse_version(text: str) -> Version:
    """Parse a SemVer 2.0 version; :class:`InvalidVersionError` if it is not one."""
    if not isinstance(text, str) or len(text) > MAX_VERSION_LENGTH:
        raise InvalidVersionError(
            f"{str(text)[:40]!r} is not a version", hint="write MAJOR.MINOR.PATCH, e.g. 1.4.0"
        )
    match = _SEMVER_RE.match(text)
    if match is None:
        hint = "write MAJOR.MINOR.PATCH, e.g. 1.4.0 (SemVer 2.0)"
        if text.startswith(("v", "V")) and _SEMVER_RE.match(text[1:]):
            hint = f"drop the leading 'v': {text[1:]}"
        raise InvalidVersionError(f"{text!r} is not a SemVer 2.0 version", hint=hint)
    prerelease: tuple[int | str, ...] = ()
    if match["prerelease"]:
        prerelease = tuple(
            int(part) if part.isdigit() else part for part in match["prerelease"].split(".")
        )
    return Version(
        int(match["major"]),
        int(match["minor"]),
        int(match["patch"]),
        prerelease,
        match["build"] or "",
    )


def is_valid_version(text: str) -> bool:
    try:
        parse_version(text)
    except InvalidVersionError:
        return False
    return True


def compare_versions(left: str, right: str) -> int:
    """-1, 0 or 1 as ``left`` has lower, equal or higher precedence than ``right``."""
    a, b = parse_version(left), parse_version(right)
    return (a > b) - (a < b)


def sort_versions(versions: Iterable[str], *, reverse: bool = False) -> list[str]:
    """Version strings ordered by precedence (ties keep their input order)."""
    return sorted(versions, key=parse_version, reverse=reverse)


@dataclass(frozen=True)
class Comparator:
    operator: str  # one of = != > >= < <=
    version: Version

    def matches(self, version: Version) -> bool:
        if self.operator == "=":
            return version == self.version
        if self.operator == "!=":
            return version != self.version
        if self.operator == ">":
            return version > self.version
        if self.operator == ">=":
            return version >= self.version
        if self.operator == "<":
            return version < self.version
        return version <= self.version

    def __str__(self) -> str:
        return f"{self.operator}{self.version}"


@dataclass(frozen=True)
class VersionRange:
    """A union (``||``) of intersections of comparators. No alternatives = any version."""

    text: str
    alternatives: tuple[tuple[Comparator, ...], ...]

    def contains(self, version: Version | str) -> bool:
        if isinstance(version, str):
            version = parse_version(version)
        if not self.alternatives:
            return True
        return any(
            all(comparator.matches(version) for comparator in comparators)
            for comparators in self.alternatives
        )

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, Version | str):
            return False
        return self.contains(version)

    def lower_bound(self) -> Version | None:
        """The lowest version any alternative admits by a ``>=``/``>``/``=`` bound, or
        None if some alternative is unbounded below (Elemental's ``minVersion``)."""
        lowest: Version | None = None
        for comparators in self.alternatives or ((),):
            bounds = [c.version for c in comparators if c.operator in (">=", ">", "=")]
            if not bounds:
                return None
            candidate = max(bounds)
            if lowest is None or candidate < lowest:
                lowest = candidate
        return lowest

    def __str__(self) -> str:
        return self.text


def _expand(operator: str, version: Version) -> tuple[Comparator, ...]:
    if operator == "^":
        if version.major > 0:
            upper = version.next_major()
        elif version.minor > 0:
            upper = version.next_minor()
        else:
            upper = version.next_patch()
        return (Comparator(">=", version), Comparator("<", upper))
    if operator == "~":
        return (Comparator(">=", version), Comparator("<", version.next_minor()))
    return (Comparator("=" if operator == "==" else operator, version),)


def parse_range(text: str) -> VersionRange:
    """Parse a version range such as ``">=1.2.0 <2.0.0"``."""
    if not isinstance(text, str) or len(text) > 4 * MAX_VERSION_LENGTH:
        raise InvalidVersionError(f"{str(text)[:40]!r} is not a version range")
    stripped = text.strip()
    if stripped in ("", "*"):
        return VersionRange(stripped or "*", ())
    alternatives: list[tuple[Comparator, ...]] = []
    for alternative in stripped.split("||"):
        # "<= 1.2.0" (operator, space, version) is common enough to accept.
        tokens = re.sub(r"(>=|<=|==|!=|>|<|=|\^|~)\s+", r"\1", alternative).replace(",", " ")
        parts = tokens.split()
        if not parts:
            raise InvalidVersionError(
                f"version range {text!r} has an empty alternative around '||'",
                hint="write e.g. '<1.0.0 || >=1.2.0'",
            )
        comparators: list[Comparator] = []
        for part in parts:
            match = _COMPARATOR_RE.fullmatch(part)
            if match is None:
                raise InvalidVersionError(f"{part!r} in range {text!r} is not a comparator")
            try:
                version = parse_version(match["version"])
            except InvalidVersionError as exc:
                raise InvalidVersionError(
                    f"version range {text!r}: {exc.message}",
                    hint="a range is comparators like '>=1.2.0 <2.0.0' (full X.Y.Z versions)",
                ) from exc
            comparators.extend(_expand(match["op"] or "=", version))
        alternatives.append(tuple(comparators))
    return VersionRange(stripped, tuple(alternatives))


def is_valid_range(text: str) -> bool:
    try:
        parse_range(text)
    except InvalidVersionError:
        return False
    return True


def version_in_range(version: str, range_text: str | None) -> bool:
    """True if ``version`` satisfies ``range_text``; no range (None) admits everything."""
    if range_text is None:
        return True
    return parse_range(range_text).contains(version)
