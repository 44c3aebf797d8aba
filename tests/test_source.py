"""Safe YAML loading: values, positions, and every refusal with its location."""

from __future__ import annotations

import math
import os
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
