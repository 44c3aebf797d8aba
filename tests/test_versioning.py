"""SemVer 2.0 parsing, precedence and ranges (cosgitops.versioning)."""

from __future__ import annotations

import itertools

import pytest

from cosgitops.versioning import (
    InvalidVersionError,
    compare_versions,
    is_valid_range,
    is_valid_version,
    parse_range,
    parse_version,
    sort_versions,
    version_in_range,
)

# The precedence example from semver.org section 11, in ascending order.
SEMVER_ORG_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "2.0.0",
    "2.1.0",
    "2.1.1",
]


def test_semver_org_precedence_order() -> None:
    shuffled = list(reversed(SEMVER_ORG_ORDER))
    assert sort_versions(shuffled) == SEMVER_ORG_ORDER
    for lower, higher in itertools.pairwise(SEMVER_ORG_ORDER):
        assert parse_version(lower) < parse_version(higher)
        assert compare_versions(higher, lower) == 1


def test_numbers_compare_numerically_not_as_text() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.0")
    assert parse_version("1.0.0-rc.10") > parse_version("1.0.0-rc.9")


def test_build_metadata_is_ignored_for_precedence_but_kept_in_text() -> None:
    a, b = parse_version("1.0.0+a"), parse_version("1.0.0+b.7")
    assert a == b and compare_versions("1.0.0+a", "1.0.0+b.7") == 0
    assert str(b) == "1.0.0+b.7"
    assert str(parse_version("1.2.3-rc.1+exp.sha.5114f85")) == "1.2.3-rc.1+exp.sha.5114f85"


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.3-01",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-a..b",
        "v1.2.3",
        " 1.2.3",
        "1.2.3\n",
        "1.2.3-é",
        "١.2.3",
        "",
        "x" * 300,
    ],
)
def test_invalid_versions_are_refused(text: str) -> None:
    assert not is_valid_version(text)
    with pytest.raises(InvalidVersionError):
        parse_version(text)


def test_leading_v_gets_a_hint() -> None:
    with pytest.raises(InvalidVersionError) as caught:
        parse_version("v1.2.3")
    assert caught.value.hint is not None and "1.2.3" in caught.value.hint


@pytest.mark.parametrize(
    ("range_text", "inside", "outside"),
    [
        (">=1.2.0", ["1.2.0", "1.3.0", "2.0.0"], ["1.1.9", "1.2.0-rc.1"]),
        (">=1.2.0 <2.0.0", ["1.2.0", "1.9.9"], ["2.0.0", "1.1.0"]),
        (">=1.2.0, <2.0.0", ["1.5.0"], ["2.0.0"]),
        (">= 1.2.0 < 2.0.0", ["1.5.0"], ["2.1.0"]),
        ("1.4.0", ["1.4.0", "1.4.0+build"], ["1.4.1"]),
        ("=1.4.0", ["1.4.0"], ["1.4.1"]),
        ("==1.4.0", ["1.4.0"], ["1.3.0"]),
        ("!=1.3.0", ["1.2.0", "1.4.0"], ["1.3.0"]),
        (">1.0.0 <=1.2.0", ["1.0.1", "1.2.0"], ["1.0.0", "1.2.1"]),
        ("^1.2.3", ["1.2.3", "1.9.0"], ["2.0.0", "1.2.2"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0"]),
        ("^0.0.3", ["0.0.3"], ["0.0.4"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0"]),
        ("<1.0.0 || >=1.2.0", ["0.9.0", "1.2.0"], ["1.0.0", "1.1.5"]),
        ("*", ["0.0.1", "9.9.9-rc.1"], []),
    ],
)
def test_ranges(range_text: str, inside: list[str], outside: list[str]) -> None:
    parsed = parse_range(range_text)
    for version in inside:
        assert parsed.contains(version), (range_text, version)
        assert version in parsed
    for version in outside:
        assert not parsed.contains(version), (range_text, version)
    assert str(parsed) == range_text.strip()


@pytest.mark.parametrize(
    "range_text",
    [">=1.2", ">=1.2.0 ||", "|| <1.0.0", ">>1.0.0", "=>1.0.0", ">=v1.2.0", "1.2.x", "foo"],
)
def test_invalid_ranges_are_refused(range_text: str) -> None:
    assert not is_valid_range(range_text)
    with pytest.raises(InvalidVersionError):
        parse_range(range_text)


def test_no_range_admits_everything() -> None:
    assert version_in_range("0.0.1", None)
    assert not version_in_range("1.0.0", ">=1.2.0")


@pytest.mark.parametrize(
    ("range_text", "lower"),
    [
        (">=1.2.0", "1.2.0"),
        (">=1.2.0 <2.0.0", "1.2.0"),
        ("^1.4.0", "1.4.0"),
        (">=1.0.0 >=1.3.0", "1.3.0"),
        (">=2.0.0 || >=1.5.0 <1.8.0", "1.5.0"),
        ("<2.0.0", None),
        (">=1.0.0 || <0.5.0", None),
        ("*", None),
    ],
)
def test_lower_bound(range_text: str, lower: str | None) -> None:
    bound = parse_range(range_text).lower_bound()
    assert (str(bound) if bound else None) == lower
