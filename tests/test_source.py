"""Safe YAML loading: values, positions, and every refusal with its location."""

from __future__ import annotations

import datetime
import math
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cosgitops import source
from cosgitops.config import Limits
from cosgitops.errors import SourceError
from cosgitops.source import (
    ParseResult,
    Position,
    load_yaml,
    load_yaml_bytes,
    parse_yaml,
    read_source,
    resolve_plain,
)


def problems(text: str | bytes, **limits: int) -> list[tuple[str, int, int]]:
    data = text.encode() if isinstance(text, str) else text
    result = parse_yaml(data, limits=Limits(**limits) if limits else Limits())
    return [(p.rule, p.line, p.column) for p in result.problems]


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(
    "scalar",
    [
        "yes",
        "No",
        "ON",
        "off",
        "true",
        "False",
        "~",
        "null",
        "",
        "0",
        "12",
        "-3",
        "+4",
        "0x1F",
        "0b101",
        "0755",
        "1_000",
        "1:30",
        "190:20:30",
        "1.10",
        "1.0",
        "-.5",
        ".inf",
        "-.Inf",
        "1.5e+3",
        "6.8523015e+5",
        "plain",
        "1.2.3",
        "08",
        "0.1.0",
        "v1",
        "y",
        "n",
        "NO",
        "1e3",
        "2002-12-14",
        "0o17x",
    ],
)
def test_plain_scalars_resolve_like_pyyaml_safe_loader(scalar: str) -> None:
    expected = yaml.safe_load(f"k: {scalar}")["k"] if scalar else None
    if hasattr(expected, "isoformat"):  # timestamps stay strings: values are JSON
        expected = scalar
    got = resolve_plain(scalar)
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected and type(got) is type(expected)


def test_yaml12_octal_is_an_integer() -> None:
    assert resolve_plain("0o755") == 0o755
    assert resolve_plain("-0o1_7") == -15
    assert resolve_plain("0o8") == "0o8"


# ---------------------------------------------------------------- resolution vs PyYAML

# Pieces that make up the plain scalars YAML 1.1 can read as something else: digits,
# signs, points, exponents, bases, sexagesimal colons, underscores, the words of
# booleans, nulls and the special floats, and a little of everything else.
_PIECES = [
    *"0123456789", "0", "1", "00", "07", "19", ".", ".", "_", "_", "+", "-", ":", ":",
    "e", "E", "e+", "e-", "E+1", "x", "0x", "0b", "0o", "o", "b", "f", "A", "a", "Z", " ",
    "inf", "Inf", "INF", "nan", "NaN", "NAN", ".inf", ".nan", "true", "True", "TRUE",
    "false", "yes", "Yes", "no", "NO", "on", "On", "off", "OFF", "y", "n", "null", "Null",
    "NULL", "~", "59", "60", "2002-12-14", "t", "T", "Z", "=", "<<", "!", "&", "*",
]  # fmt: skip


_OCTAL_12 = re.compile(r"[-+]?0o[0-7_]+")


_NUMERIC = "0123456789" + "0011" + "..__+-::eE" + "xob"


def _generated_scalars(count: int, seed: int) -> list[str]:
    """Distinct scalars: mostly short runs of number characters, the rest pieces."""
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        if rng.random() < 0.6:
            text = "".join(rng.choice(_NUMERIC) for _ in range(rng.randint(1, 7)))
        else:
            text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 4))).strip()
        if text:
            found.add(text)
    return sorted(found)


def _as_plain_value(text: str) -> tuple[bool, Any]:
    """Whether ``v: TEXT`` holds ``text`` as one plain scalar, and what safe_load gives
    it (timestamps as their text, as cosgitops keeps them)."""
    try:
        node = yaml.compose(f"v: {text}\n", Loader=yaml.SafeLoader)
        loaded = yaml.safe_load(f"v: {text}\n")
    except (yaml.YAMLError, ValueError):  # not YAML here, or not constructible
        return False, None
    if node is None or not isinstance(node, yaml.MappingNode) or len(node.value) != 1:
        return False, None
    value_node = node.value[0][1]
    if not isinstance(value_node, yaml.ScalarNode) or value_node.style or value_node.value != text:
        return False, None
    value = loaded["v"]
    if isinstance(value, (datetime.date, datetime.datetime)):
        value = text
    return True, value


def _same_value(got: Any, expected: Any) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(got, float) and math.isnan(got)
    return type(got) is type(expected) and got == expected


def test_plain_scalars_resolve_as_pyyaml_resolves_them() -> None:
    """Differential: 20,000 generated scalars, cosgitops against yaml.safe_load (the
    hand copy this replaced read 12 of these differently, '._1' among them)."""
    compared = 0
    kinds: set[str] = set()
    mismatches = []
    for text in _generated_scalars(20_000, seed=1011):
        plain, expected = _as_plain_value(text)
        if not plain or _OCTAL_12.fullmatch(text):  # deliberately an int (see above)
            continue
        compared += 1
        kinds.add(type(expected).__name__)
        got = resolve_plain(text)
        if not _same_value(got, expected):
            mismatches.append((text, got, expected))
    assert mismatches == []
    assert compared > 15_000
    assert kinds == {"str", "int", "float", "bool", "NoneType"}


def test_a_point_before_an_underscore_is_a_string() -> None:
    assert yaml.safe_load("v: ._1")["v"] == "._1"
    assert load_yaml_bytes(b"v: ._1\nw: [._1]\n").value == {"v": "._1", "w": ["._1"]}
    assert resolve_plain("._1") == "._1"
    assert resolve_plain(".1_") == 0.1


def test_whole_documents_resolve_as_pyyaml_on_both_paths() -> None:
    """The composers' inline resolution (in sequences and mappings) and the event
    path's: the same generated scalars in a list and as mapping values."""
    scalars = [text for text in _generated_scalars(3000, seed=7) if _as_plain_value(text)[0]]
    scalars = [text for text in scalars if not _OCTAL_12.fullmatch(text)]
    data = (
        "list:\n"
        + "".join(f"  - {text}\n" for text in scalars)
        + "map:\n"
        + "".join(f"  k{index}: {text}\n" for index, text in enumerate(scalars))
    ).encode()
    expected = yaml.safe_load(data)
    for path in ("list", "map"):
        items = expected[path] if path == "list" else list(expected[path].values())
        expected[path] = [
            text if isinstance(value, (datetime.date, datetime.datetime)) else value
            for text, value in zip(scalars, items, strict=True)
        ]
    for composer in (source._NodeComposer, source._Composer):
        document = source._finish(composer(data, "x", Limits(yaml_max_nodes=100_000)), data)
        assert document.document is not None, document.problems
        value = document.document.value
        got = {"list": value["list"], "map": list(value["map"].values())}
        for path in ("list", "map"):
            for text, mine, theirs in zip(scalars, got[path], expected[path], strict=True):
                assert _same_value(mine, theirs), (composer.__name__, text, mine, theirs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!!float 1", 1.0),
        ("!!float '1e3'", 1000.0),
        ("!!int '0x1F'", 31),
        ("!!int '1__0'", 10),
        ("!!bool 'tRuE'", True),
        ("!!null 'anything'", None),
        ("!!str 12", "12"),
    ],
)
def test_explicit_tags_construct_as_pyyaml_does(text: str, expected: Any) -> None:
    assert yaml.safe_load(f"v: {text}")["v"] == expected
    result = parse_yaml(f"v: {text}\n".encode())
    assert result.problems == []
    assert result.document is not None and _same_value(result.document.value["v"], expected)


def test_document_values_and_types() -> None:
    document = load_yaml_bytes(
        b"a: 1\nb: [x, 'y', \"z\"]\nc: {d: ~, e: !!str 5, f: !!int '7'}\ng: |\n  text\n"
    )
    assert document.value == {
        "a": 1,
        "b": ["x", "y", "z"],
        "c": {"d": None, "e": "5", "f": 7},
        "g": "text\n",
    }


def test_keys_keep_their_text() -> None:
    document = load_yaml_bytes(b"on: push\n1: one\nyes: y\n")
    assert list(document.value) == ["on", "1", "yes"]


def test_merge_keys_merge_and_explicit_keys_win() -> None:
    document = load_yaml_bytes(
        b"base: &b {x: 1, y: 2}\nmore: &m {z: 3}\nout:\n  y: 20\n  <<: [*b, *m]\n"
    )
    assert document.value["out"] == {"y": 20, "x": 1, "z": 3}
    # a merged value is located where it was written
    assert document.locate(("out", "x")) == Position(1, 14)


# ---------------------------------------------------------------- positions


def test_locate_values_keys_and_missing_keys() -> None:
    text = (
        b"# comment\nmetadata:\n  name: edge\nspec:\n  version: 1.10\n"
        b"  list:\n    - a\n    - {k: v}\n"
    )
    document = load_yaml_bytes(text)
    assert document.locate(("metadata", "name")) == Position(3, 9)
    assert document.locate(("metadata", "name"), key=True) == Position(3, 3)
    assert document.locate(("spec", "list", 1, "k")) == Position(8, 11)
    # a missing key points at the key of its parent, where it has to be added
    assert document.locate(("spec", "missing")) == Position(4, 1)
    assert document.locate(("nowhere",)) == Position(2, 1)
    assert document.plain_text(("spec", "version")) == "1.10"
    assert document.plain_text(("metadata", "name")) is None


def test_columns_count_characters_not_bytes() -> None:
    document = load_yaml_bytes("ä: ö\nkey: [é, x]\n".encode())
    assert document.locate(("key", 1)) == Position(2, 10)


def test_cloud_init_header_is_recognised() -> None:
    assert load_yaml_bytes(b"#cloud-config\nhostname: x\n").is_cloud_init
    assert load_yaml_bytes(b"# comment\n#cloud-config  \nhostname: x\n").is_cloud_init
    assert not load_yaml_bytes(b"# cloud-config\nhostname: x\n").is_cloud_init


# ---------------------------------------------------------------- refusals


def test_duplicate_keys_are_refused_at_the_second_one() -> None:
    assert problems("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n") == [
        ("yaml-duplicate-key", 4, 3),
        ("yaml-duplicate-key", 5, 1),
    ]


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 9)}]")
    result = parse_yaml("\n".join(lines).encode())
    assert result.document is None
    assert [p.rule for p in result.problems] == ["yaml-alias-budget"]


def test_many_aliases_are_refused() -> None:
    text = "a: &a x\nb: [" + ", ".join(["*a"] * 50) + "]\n"
    assert problems(text, yaml_max_alias_expansions=10)[0][0] == "yaml-alias-budget"
    assert problems(text) == []


def test_alias_cycles_and_undefined_aliases() -> None:
    assert problems("a: &a [1, *a]\n") == [("yaml-alias-budget", 1, 11)]
    assert problems("a: *nope\n") == [("yaml-syntax", 1, 4)]


def test_depth_limit() -> None:
    deep = "[" * 70 + "]" * 70
    assert problems(deep)[0][:1] == ("yaml-depth",)
    assert problems("[" * 10 + "]" * 10) == []
    assert problems("[" * 10 + "]" * 10, yaml_max_depth=5)[0][0] == "yaml-depth"


def test_very_deep_nesting_is_refused_without_recursion() -> None:
    for text in ("[" * 10_000 + "]" * 10_000, "- " * 10_000 + "x\n"):
        result = parse_yaml(text.encode())
        assert result.document is None
        assert [p.rule for p in result.problems] == ["yaml-depth"]


def test_node_limit() -> None:
    text = "[" + ",".join(["1"] * 500) + "]"
    assert problems(text, yaml_max_nodes=100)[0][0] == "yaml-too-large"


def test_size_limit() -> None:
    assert problems(b"a: " + b"x" * 200, yaml_max_bytes=100) == [("yaml-too-large", 1, 1)]


def test_encodings() -> None:
    assert problems(b"a: b\nc: \xff\n") == [("yaml-encoding", 2, 4)]
    assert problems("a: b\n".encode("utf-16")) == [("yaml-encoding", 1, 1)]
    assert problems(b"\xef\xbb\xbfa: b\n") == []  # a UTF-8 BOM is fine
    assert problems(b"a: b\n\x00\x01\x02") == [("yaml-binary", 2, 1)]
    assert problems(b"a: \x07\n") == [("yaml-syntax", 1, 4)]


def test_document_count() -> None:
    assert problems("") == [("yaml-empty", 1, 1)]
    assert problems("# only a comment\n") == [("yaml-empty", 1, 1)]
    assert problems("---\na: 1\n...\n") == []
    assert problems("a: 1\n---\nb: 2\n") == [("yaml-multiple-documents", 2, 1)]


def test_tags() -> None:
    assert problems("a: !!python/name:os.system x\n") == [("yaml-tag", 1, 4)]
    assert problems("a: !custom x\n") == [("yaml-tag", 1, 4)]
    assert problems("a: !!int nope\n") == [("yaml-tag", 1, 4)]
    assert problems("a: !!binary aGVsbG8=\n") == [("yaml-tag", 1, 4)]
    assert problems("a: !!set {x, y}\n") == [("yaml-tag", 1, 4)]
    assert problems("a: !!str 1\nb: !!map {}\nc: !!seq []\nd: !!bool yes\n") == []


def test_complex_keys() -> None:
    assert problems("? [a, b]\n: c\n") == [("yaml-complex-key", 1, 3)]


def test_syntax_errors_are_located() -> None:
    assert problems("a:\n  b: c\n d: e\n") == [("yaml-syntax", 3, 2)]
    assert problems('a: "open\n') == [("yaml-syntax", 2, 1)]
    assert problems("a:\n\tb: c\n") == [("yaml-syntax", 2, 1)]


def test_load_yaml_raises_a_located_source_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\na: 2\n")
    with pytest.raises(SourceError) as info:
        load_yaml(path)
    assert str(info.value).startswith(f"{path}:2:1: duplicate key")
    assert info.value.hint


# ---------------------------------------------------------------- reading files


def test_read_source_refuses_non_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    data, problem = read_source(fifo)  # must not block
    assert data is None and problem is not None and problem.rule == "file-unreadable"
    data, problem = read_source(tmp_path)
    assert data is None and problem is not None and problem.rule == "file-unreadable"
    data, problem = read_source(tmp_path / "missing.yaml")
    assert data is None and problem is not None and problem.rule == "file-unreadable"


def test_read_source_refuses_large_files_without_reading_them(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MB that cost nothing to make
    data, problem = read_source(big)
    assert data is None and problem is not None and problem.rule == "yaml-too-large"


# ---------------------------------------------------------------- the two composers


def _pointers(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, member in value.items():
            found.extend(_pointers(member, (*prefix, key)))
    elif isinstance(value, list):
        for index, member in enumerate(value):
            found.extend(_pointers(member, (*prefix, index)))
    return found


def _typed(value: Any) -> Any:
    """A comparable form that tells 1 from True and 1.0 from 1."""
    if isinstance(value, dict):
        return {key: _typed(member) for key, member in value.items()}
    if isinstance(value, list):
        return [_typed(member) for member in value]
    return (type(value).__name__, repr(value))


def _both(data: bytes) -> tuple[ParseResult | None, ParseResult, bytes]:
    """The fast path's result (None when it hands the file to the event path, as it
    does for refusals and redefined anchors) and the event path's."""
    try:
        fast: ParseResult | None = source._finish(source._NodeComposer(data, "x", Limits()), data)
    except source._UseEvents:
        fast = None
    slow = source._finish(source._Composer(data, "x", Limits()), data)
    return fast, slow, data


SAMPLES = [
    b"a: 1\nb: [1, 2.5, yes, ~, '', \"q\"]\nc: {d: e}\n",
    b"a: &x {k: v}\nb: *x\nc: [*x, *x]\nd:\n  <<: *x\n  k: own\n",
    b"a: &s scalar\nb: *s\nc: [*s]\n",
    b"a: 1\na: 2\nb: {c: 1, c: 2}\n",
    b"? [a]\n: b\nc: d\n",
    b"a: !!str 1\nb: !!int '2'\nc: !!float 3\nd: !foo x\ne: !!binary aGk=\nf: ! 12\n",
    b"a: !!set {x, y}\nb: !!omap [a: 1]\n",
    b"- - - x\n  - y\n- z\n",
    b"a: 1\n---\nb: 2\n",
    b"<<: {a: 1}\nb: 2\n",
    b"a:\n  <<: [{x: 1}, {x: 2, y: 3}]\n",
    b"a:\n  <<: 5\n",
    b"a: &r\n  - *r\n",
    b"a: &x 1\nb: &x 2\nc: *x\n",
    b"a: *undefined\n",
    b"'quoted key': 1\n\"double\": 2\nplain: 3\n1: one\ntrue: yes\n~: null\n",
    b"text: |\n  line\n  line\nfolded: >\n  a\n  b\n",
    b"[1, [2, [3, [4]]]]\n",
    b"just a scalar\n",
    b"",
    b"# comment only\n",
]


@pytest.mark.parametrize("data", SAMPLES)
def test_fast_and_event_composers_agree(data: bytes) -> None:
    _assert_same(*_both(data))


def test_fast_and_event_composers_agree_on_real_files(interop: Path) -> None:
    data_dir = Path(__file__).resolve().parent / "data"
    paths = sorted(data_dir.rglob("*.yaml")) + sorted((interop / "yip").rglob("*.yaml"))
    assert len(paths) > 100
    for path in paths:
        _assert_same(*_both(path.read_bytes()))


def _assert_same(fast: ParseResult | None, slow: ParseResult, data: bytes) -> None:
    if fast is None:  # handed over: only aliases and refusals take the event path
        assert b"*" in data or slow.document is None
        return
    assert fast.problems == slow.problems
    assert (fast.document is None) == (slow.document is None)
    if fast.document is None or slow.document is None:
        return
    assert _typed(fast.document.value) == _typed(slow.document.value)
    for pointer in _pointers(slow.document.value):
        assert fast.document.locate(pointer) == slow.document.locate(pointer), pointer
        assert fast.document.locate(pointer, key=True) == slow.document.locate(pointer, key=True)
        assert fast.document.plain_text(pointer) == slow.document.plain_text(pointer)


def test_large_files_take_the_budgeted_event_path() -> None:
    # Over the fast path's size, a node bomb is stopped at the budget, not composed.
    data = b"a: [" + b",".join([b"1"] * 40_000) + b"]\n"
    assert len(data) > source.FAST_PATH_MAX_BYTES
    result = parse_yaml(data, limits=Limits(yaml_max_nodes=1000))
    assert [p.rule for p in result.problems] == ["yaml-too-large"]
