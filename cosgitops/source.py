"""Safe YAML loading that remembers where every value came from.

PyYAML's loaders keep the last of two duplicate keys, expand aliases without a budget
and forget positions once a value is built. This module builds plain Python values
(dict, list, str, int, float, bool, None) from libyaml's output itself, while it:

* refuses files over a size limit, binary content and anything that is not UTF-8,
* refuses duplicate keys, unknown tags, complex keys and several documents,
* bounds nesting depth, node count and alias expansion (billion laughs),
* records the line and column of every key and value, so a diagnostic can point at
  ``file:line:col`` for any JSON pointer (:meth:`SourceDocument.locate`), and keeps the
  source text of plain scalars that YAML 1.1 turned into something other than a string
  (``1.10`` -> 1.1, ``no`` -> False) so a message can say how to quote them.

Scalars resolve as YAML 1.1 with PyYAML's own resolvers and constructors (what
``yaml.safe_load`` gives), plus YAML 1.2's ``0o`` octal; timestamps stay strings so
every value is JSON-compatible.

Two ways in, with the same results (a test compares them on every fixture): small files
go through libyaml's C composer and a conversion of its nodes (the fast path); large
files, and any file with an alias or a problem that stops reading, go through an event
loop that applies every budget as it reads and locates aliases exactly.

Bad input never raises from :func:`parse_yaml`; it returns located
:class:`SourceProblem` s. :func:`load_yaml` is the convenience that raises
:class:`~cosgitops.errors.SourceError` instead.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import SourceError

try:
    _Parser: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Parser = yaml.SafeLoader

_ScalarEvent = yaml.ScalarEvent
_MappingStartEvent = yaml.MappingStartEvent
_MappingEndEvent = yaml.MappingEndEvent
_SequenceStartEvent = yaml.SequenceStartEvent
_SequenceEndEvent = yaml.SequenceEndEvent
_AliasEvent = yaml.AliasEvent
_DocumentStartEvent = yaml.DocumentStartEvent
_DocumentEndEvent = yaml.DocumentEndEvent
_StreamEndEvent = yaml.StreamEndEvent

Pointer = Sequence[str | int]

# ------------------------------------------------------------------ results


class Position(NamedTuple):
    """1-based line and column (columns count characters)."""

    line: int
    column: int


class SourceProblem(NamedTuple):
    """Something wrong with a YAML file, with where it is and what to do about it."""

    rule: str
    message: str
    line: int
    column: int
    hint: str | None = None
    severity: str = "error"


# A slot records where one key/value pair (or list item) was written:
# (key line, key column, value line, value column, source text of a plain scalar that
# did not resolve to a string, else None). Lines and columns are 0-based here.
_Slot = tuple[int, int, int, int, str | None]


class SourceDocument:
    """One parsed YAML document: its value and the positions of everything in it."""

    def __init__(
        self,
        name: str,
        value: Any,
        slots: dict[int, dict[Any, _Slot] | list[_Slot]],
        root: _Slot,
        head: bytes,
    ) -> None:
        self.name = name
        self.value = value
        self._slots = slots
        self._root = root
        self._head = head[:4096]

    @property
    def header(self) -> str:
        """The leading comment lines (where ``#cloud-config`` lives)."""
        return _header(self._head)

    @property
    def is_cloud_init(self) -> bool:
        """True for a classic cloud-init file (yip reads it with its cloud-init loader)."""
        return "#cloud-config" in self.header.split("\n")

    def _walk(self, pointer: Pointer) -> tuple[_Slot, int]:
        """The slot of the deepest existing element of ``pointer`` and how deep it is."""
        slot = self._root
        container = self.value
        depth = 0
        for part in pointer:
            slots = self._slots.get(id(container))
            if slots is None:
                break
            if isinstance(slots, dict):
                if part not in slots:
                    break
                slot = slots[part]
            else:
                if not isinstance(part, int) or not 0 <= part < len(slots):
                    break
                slot = slots[part]
            container = container[part]
            depth += 1
        return slot, depth

    def locate(self, pointer: Pointer, *, key: bool = False) -> Position:
        """Where the value at ``pointer`` was written (its key with ``key=True``).

        For a pointer that does not exist (a missing key), the deepest existing parent:
        the key that opens it, which is where a user adds the missing entry.
        """
        slot, depth = self._walk(pointer)
        if key or depth < len(pointer):
            return Position(slot[0] + 1, slot[1] + 1)
        return Position(slot[2] + 1, slot[3] + 1)

    def exists(self, pointer: Pointer) -> bool:
        return self._walk(pointer)[1] == len(pointer)

    def plain_text(self, pointer: Pointer) -> str | None:
        """The source text of a plain scalar that YAML resolved to a non-string."""
        slot, depth = self._walk(pointer)
        if depth < len(pointer):
            return None
        return slot[4]


class ParseResult(NamedTuple):
    """``document`` is None when the file could not be read at all."""

    document: SourceDocument | None
    problems: list[SourceProblem]

    @property
    def ok(self) -> bool:
        return self.document is not None and not any(p.severity == "error" for p in self.problems)


# ------------------------------------------------------------------ reading bytes


def read_source(
    path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS
) -> tuple[bytes | None, SourceProblem | None]:
    """Read a YAML file, refusing anything that is not a regular file of bounded size.

    The file is opened non-blocking and checked with ``fstat`` before reading, so a
    FIFO or device swapped in for a file can never hang the reader.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return None, SourceProblem(
            "file-unreadable",
            f"cannot read the file: {exc.strerror or exc}",
            1,
            1,
            "check that the file exists and is readable",
        )
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, SourceProblem(
                "file-unreadable",
                "not a regular file",
                1,
                1,
                "a YAML source must be a plain file, not a folder, device or pipe",
            )
        if info.st_size > limits.yaml_max_bytes:
            return None, SourceProblem(
                "yaml-too-large", _too_large_message(info.st_size, limits), 1, 1, _TOO_LARGE_HINT
            )
        chunks = []
        remaining = limits.yaml_max_bytes + 1
        # Ask for the size fstat reported (plus one byte, to notice growth): one read
        # for the usual small file, and no megabyte buffer allocated for it.
        want = min(remaining, info.st_size + 1)
        while remaining > 0:
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
            if len(chunk) < want:
                break  # a short read of a regular file: the end
            want = min(remaining, 1 << 20)
    except OSError as exc:
        return None, SourceProblem(
            "file-unreadable", f"cannot read the file: {exc.strerror or exc}", 1, 1, None
        )
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limits.yaml_max_bytes:  # it grew while we read it
        return None, SourceProblem(
            "yaml-too-large", _too_large_message(len(data), limits), 1, 1, _TOO_LARGE_HINT
        )
    return data, None


def read_source_bytes(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """:func:`read_source` that raises :class:`SourceError` instead."""
    data, problem = read_source(path, limits=limits)
    if data is None:
        assert problem is not None
        raise SourceError(problem.message, hint=problem.hint, location=f"{path}:1:1")
    return data


_TOO_LARGE_HINT = "split the file; cosgitops refuses oversized YAML to bound memory and time"


def _too_large_message(size: int, limits: Limits) -> str:
    return f"file is {size} bytes, over the limit of {limits.yaml_max_bytes} bytes"


# ------------------------------------------------------------------ scalar resolution

# Plain scalars resolve exactly as PyYAML's SafeLoader resolves them: the implicit
# resolvers (first character -> (tag, regex) in order) and the constructors are PyYAML's
# own, read from ``yaml.resolver.Resolver`` and ``yaml.constructor.SafeConstructor``.
# Two deliberate differences keep every value JSON-compatible and read what yip reads:
# timestamps (and the tags SafeLoader cannot construct: merge, value, yaml) stay strings,
# and YAML 1.2's ``0o`` octal is an integer too.
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_NULL_TAG = "tag:yaml.org,2002:null"
_VALUE_TAGS = frozenset((_BOOL_TAG, _INT_TAG, _FLOAT_TAG, _NULL_TAG))
_OCTAL_12 = (_INT_TAG, re.compile(r"[-+]?0o[0-7_]+\Z"))
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_CONSTRUCTORS: dict[str, Any] = {
    tag: yaml.constructor.SafeConstructor.yaml_constructors[tag] for tag in _VALUE_TAGS
}
# How a constructor refuses text that is not its kind: int("0x", 16), "".lower()[0],
# bool_values["maybe"], and ints past Python's digit limit are all ValueErrors or these.
_REFUSALS = (ValueError, IndexError, KeyError)


def _implicit_resolvers() -> dict[str, tuple[tuple[str, re.Pattern[str]], ...]]:
    """PyYAML's implicit resolvers by first character ('' for the empty scalar), in
    PyYAML's order, for the characters that can start something other than a string."""
    table: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {}
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items():
        if first is None:  # PyYAML has none; one added by other code is not SafeLoader's
            continue
        chain = [*resolvers, _OCTAL_12] if first in ("+", "-", "0") else list(resolvers)
        if any(tag in _VALUE_TAGS for tag, _ in chain):
            table[first] = tuple(chain)
    return table


_RESOLVERS = _implicit_resolvers()
# First characters a plain scalar needs to be anything but a string: the composers'
# inline fast path skips resolution for every other scalar.
_MAYBE_SPECIAL = frozenset(first for first in _RESOLVERS if first)
_RESOLVED: dict[str, Any] = {}  # short plain text -> value: numbers and words repeat
_RESOLVED_MAX = 4096
_RESOLVED_MAX_LENGTH = 64


def _construct(tag: str, text: str) -> Any:
    """PyYAML's SafeConstructor for ``tag`` (bool, int, float, null) applied to ``text``;
    raises one of :data:`_REFUSALS` when the text is not of that kind."""
    return _CONSTRUCTORS[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, text))


def resolve_plain(text: str) -> Any:
    """The value PyYAML's SafeLoader gives a plain (unquoted) scalar, except that a
    timestamp stays a string and ``0o17`` is an integer (see above)."""
    found = _RESOLVED.get(text, _RESOLVED)
    if found is not _RESOLVED:
        return found
    value: Any = text
    for tag, regexp in _RESOLVERS.get(text[:1], ()):
        if regexp.match(text):
            if tag in _VALUE_TAGS:
                try:
                    value = _construct(tag, text)
                except _REFUSALS:
                    value = text
            break
    if len(_RESOLVED) < _RESOLVED_MAX and len(text) <= _RESOLVED_MAX_LENGTH:
        _RESOLVED[text] = value
    return value


_STANDARD_PREFIX = "tag:yaml.org,2002:"
_STR_TAGS = frozenset(("tag:yaml.org,2002:str", "!"))
_COLLECTION_TAGS = frozenset(("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "!"))


# ------------------------------------------------------------------ composing


class _Fatal(Exception):
    """Stops composing: the file cannot be read further."""

    def __init__(self, problem: SourceProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


_NO_KEY = object()
_DROP = object()  # a key we refused (complex key); its value is read and discarded
_MERGE = object()  # the YAML 1.1 merge key "<<"


class _Frame:
    __slots__ = (
        "anchor",
        "explicit",
        "is_map",
        "key",
        "key_at",
        "merges",
        "size",
        "slots",
        "start",
        "value",
    )

    def __init__(
        self, value: Any, is_map: bool, anchor: str | None, start: tuple[int, int]
    ) -> None:
        self.value = value
        self.is_map = is_map
        self.anchor = anchor
        self.start = start  # where the collection begins
        self.key: Any = _NO_KEY
        self.key_at: tuple[int, int] = (0, 0)  # where the pending key was written
        self.slots: Any = {} if is_map else []
        self.merges: list[tuple[Any, tuple[int, int]]] = []
        self.explicit: dict[Any, int] = {}
        self.size = 1


def _position_of(data: bytes, offset: int) -> tuple[int, int]:
    """0-based line and character column of byte ``offset``."""
    offset = max(0, min(offset, len(data)))
    line = data.count(b"\n", 0, offset)
    start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[start:offset].decode("utf-8", errors="replace"))
    return line, column


def _check_bytes(data: bytes, limits: Limits) -> tuple[bytes, list[SourceProblem]]:
    if len(data) > limits.yaml_max_bytes:
        return data, [
            SourceProblem(
                "yaml-too-large", _too_large_message(len(data), limits), 1, 1, _TOO_LARGE_HINT
            )
        ]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data, [
            SourceProblem(
                "yaml-encoding",
                "file is UTF-16 (or UTF-32) encoded, not UTF-8",
                1,
                1,
                "save the file as UTF-8",
            )
        ]
    nul = data.find(b"\x00")
    if nul >= 0:
        line, column = _position_of(data, nul)
        return data, [
            SourceProblem(
                "yaml-binary",
                "file holds binary data (a NUL byte), not YAML text",
                line + 1,
                column + 1,
                "only text files can be YAML sources; remove the binary content",
            )
        ]
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position_of(data, exc.start)
        return data, [
            SourceProblem(
                "yaml-encoding",
                f"invalid UTF-8 (byte 0x{data[exc.start]:02x})",
                line + 1,
                column + 1,
                "save the file as UTF-8",
            )
        ]
    return data, []


def _header(data: bytes) -> str:
    """The first lines that are comments, where ``#cloud-config`` lives (yip looks at
    the first lines of a file for it)."""
    lines = []
    for raw in data[:4096].split(b"\n")[:10]:
        text = raw.decode("utf-8", errors="replace").rstrip()
        if text.startswith("#"):
            lines.append(text)
    return "\n".join(lines)


def parse_yaml(
    data: bytes, *, name: str = "<input>", limits: Limits = DEFAULT_LIMITS
) -> ParseResult:
    """Parse exactly one YAML document from ``data``. Never raises for bad input."""
    data, problems = _check_bytes(data, limits)
    if problems:
        return ParseResult(None, problems)
    composer: _Composer | _NodeComposer
    if len(data) <= FAST_PATH_MAX_BYTES:
        composer = _NodeComposer(data, name, limits)
        try:
            return _finish(composer, data)
        except _UseEvents:
            # An anchor defined twice (legal YAML that libyaml's composer refuses) or a
            # refusal: the event path reads the former and locates the latter exactly.
            pass
    composer = _Composer(data, name, limits)
    return _finish(composer, data)


class _UseEvents(Exception):
    """The fast path hands a file over to the event path."""


def _finish(composer: _Composer | _NodeComposer, data: bytes) -> ParseResult:
    try:
        document = composer.compose()
    except _Fatal as fatal:
        if isinstance(composer, _NodeComposer):
            raise _UseEvents from fatal
        composer.problems.append(fatal.problem)
        return ParseResult(None, composer.problems)
    except yaml.MarkedYAMLError as exc:
        if isinstance(exc, yaml.composer.ComposerError) and isinstance(composer, _NodeComposer):
            raise _UseEvents from exc
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line, mark.column) if mark is not None else (0, 0)
        message = exc.problem or "invalid YAML"
        if exc.context:
            message = f"{message} ({exc.context}"
            context_mark = exc.context_mark
            if context_mark is not None and context_mark is not mark:
                message += f" at line {context_mark.line + 1}"
            message += ")"
        if "nesting depth" in message:  # libyaml's own limit, met while scanning ahead
            composer.problems.append(
                SourceProblem(
                    "yaml-depth", "nesting too deep", line + 1, column + 1, "flatten the structure"
                )
            )
        else:
            composer.problems.append(
                SourceProblem("yaml-syntax", message, line + 1, column + 1, _SYNTAX_HINT)
            )
        return ParseResult(None, composer.problems)
    except RecursionError:  # only PyYAML's pure-Python composer recurses this deep
        composer.problems.append(
            SourceProblem("yaml-depth", "nesting too deep", 1, 1, "flatten the structure")
        )
        return ParseResult(None, composer.problems)
    except yaml.reader.ReaderError as exc:
        line, column = _position_of(data, exc.position)
        composer.problems.append(
            SourceProblem(
                "yaml-syntax",
                f"character {exc.character!r} is not allowed in YAML: {exc.reason}",
                line + 1,
                column + 1,
                "remove the control character",
            )
        )
        return ParseResult(None, composer.problems)
    except yaml.YAMLError as exc:
        composer.problems.append(SourceProblem("yaml-syntax", str(exc), 1, 1, _SYNTAX_HINT))
        return ParseResult(None, composer.problems)
    finally:
        composer.close()
    return ParseResult(document, composer.problems)


_SYNTAX_HINT = "fix the YAML syntax (indent with spaces, close quotes and brackets)"


class _Composer:
    """Composes values from libyaml's events, enforcing every budget as it goes."""

    def __init__(self, data: bytes, name: str, limits: Limits, parser: Any = None) -> None:
        self.data = data
        self.name = name
        self.limits = limits
        self.problems: list[SourceProblem] = []
        self.parser = parser if parser is not None else _Parser(data)
        self.anchors: dict[str, tuple[Any, int, tuple[int, int]]] = {}
        self.open_anchors: set[str] = set()
        self.container_slots: dict[int, Any] = {}
        self.nodes = 0
        self.aliases = 0
        self.alias_nodes = 0

    def close(self) -> None:
        self.parser.dispose()

    def compose(self) -> SourceDocument | None:
        get = self.parser.get_event
        get()  # StreamStart
        event = get()
        if type(event) is _StreamEndEvent:
            raise _Fatal(
                SourceProblem(
                    "yaml-empty",
                    "file holds no YAML document",
                    1,
                    1,
                    "write the document, or delete the file",
                )
            )
        value, root = self._document(get)
        event = get()  # DocumentEnd is consumed inside; this is the next one
        if type(event) is _DocumentStartEvent:
            mark: Any = event.start_mark
            self.problems.append(
                SourceProblem(
                    "yaml-multiple-documents",
                    "file holds more than one YAML document; only one is expected",
                    mark.line + 1,
                    mark.column + 1,
                    "remove the '---' separator and everything after it, or split the file",
                )
            )
        return SourceDocument(self.name, value, self.container_slots, root, self.data)

    def _fatal(self, rule: str, message: str, mark: Any, hint: str) -> _Fatal:
        return _Fatal(SourceProblem(rule, message, mark.line + 1, mark.column + 1, hint))

    def _count(self, amount: int, mark: Any, via_alias: bool) -> None:
        self.nodes += amount
        if self.nodes > self.limits.yaml_max_nodes:
            if via_alias or self.alias_nodes:
                raise self._fatal(
                    "yaml-alias-budget",
                    f"aliases expand to more than {self.limits.yaml_max_nodes} nodes "
                    "(a 'billion laughs' YAML bomb?)",
                    mark,
                    "do not nest aliases of aliases; write the values out",
                )
            raise self._fatal(
                "yaml-too-large",
                f"document has more than {self.limits.yaml_max_nodes} nodes",
                mark,
                _TOO_LARGE_HINT,
            )

    def _document(self, get: Any) -> tuple[Any, _Slot]:
        limits = self.limits
        max_depth = limits.yaml_max_depth
        stack: list[_Frame] = []
        root_value: Any = None
        root_slot: _Slot = (0, 0, 0, 0, None)
        have_root = False
        problems = self.problems
        while True:
            event = get()
            kind = type(event)
            mark = event.start_mark
            line = mark.line
            column = mark.column
            raw: str | None = None
            size = 1
            if kind is _ScalarEvent:
                text = event.value
                tag = event.tag
                if tag is None or tag == "!":
                    if event.implicit[0]:
                        value = resolve_plain(text)
                        if type(value) is not str:
                            raw = text
                    else:
                        value = text
                else:
                    value = self._tagged_scalar(tag, text, mark)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, 1, (line, column))
                self._count(1, mark, False)
            elif kind is _MappingStartEvent or kind is _SequenceStartEvent:
                if len(stack) >= max_depth:
                    raise self._fatal(
                        "yaml-depth",
                        f"nesting deeper than {max_depth} levels",
                        mark,
                        "flatten the structure",
                    )
                tag = event.tag
                if tag is not None and tag not in _COLLECTION_TAGS:
                    problems.append(self._tag_problem(tag, mark))
                is_map = kind is _MappingStartEvent
                frame = _Frame({} if is_map else [], is_map, event.anchor, (line, column))
                self.container_slots[id(frame.value)] = frame.slots
                if event.anchor is not None:
                    self.open_anchors.add(event.anchor)
                self._count(1, mark, False)
                stack.append(frame)
                continue
            elif kind is _MappingEndEvent or kind is _SequenceEndEvent:
                frame = stack.pop()
                if frame.is_map and frame.merges:
                    self._apply_merges(frame)
                value = frame.value
                size = frame.size
                line, column = frame.start
                if frame.anchor is not None:
                    self.open_anchors.discard(frame.anchor)
                    self.anchors[frame.anchor] = (value, size, (line, column))
            elif kind is _AliasEvent:
                name = event.anchor
                target = self.anchors.get(name)
                if target is None:
                    if name in self.open_anchors:
                        raise self._fatal(
                            "yaml-alias-budget",
                            f"alias *{name} refers to a collection that contains it (a cycle)",
                            mark,
                            "an alias must refer to a finished value",
                        )
                    raise self._fatal(
                        "yaml-syntax",
                        f"alias *{name} refers to an anchor &{name} that is not defined before it",
                        mark,
                        "define the anchor (&name) before using the alias (*name)",
                    )
                value, size, _ = target
                self.aliases += 1
                self.alias_nodes += size
                if self.aliases > limits.yaml_max_alias_expansions:
                    raise self._fatal(
                        "yaml-alias-budget",
                        f"more than {limits.yaml_max_alias_expansions} aliases",
                        mark,
                        "write the values out instead of aliasing them so often",
                    )
                self._count(size, mark, True)
            elif kind is _DocumentStartEvent:
                continue
            elif kind is _DocumentEndEvent:
                return root_value, root_slot
            else:  # pragma: no cover - libyaml emits nothing else inside a document
                raise self._fatal("yaml-syntax", f"unexpected {kind.__name__}", mark, _SYNTAX_HINT)

            # attach ``value`` to its parent
            if not stack:
                if have_root:  # pragma: no cover - the parser forbids a second root
                    continue
                root_value = value
                root_slot = (line, column, line, column, raw)
                have_root = True
                continue
            parent = stack[-1]
            parent.size += size
            if parent.is_map:
                if parent.key is _NO_KEY:
                    parent.key = self._key(value, event, kind, (line, column))
                    parent.key_at = (line, column)
                    continue
                key = parent.key
                parent.key = _NO_KEY
                key_line, key_column = parent.key_at
                if key is _DROP:
                    continue
                if key is _MERGE:
                    parent.merges.append((value, (key_line, key_column)))
                    continue
                first = parent.explicit.get(key)
                if first is not None:
                    problems.append(
                        SourceProblem(
                            "yaml-duplicate-key",
                            f"duplicate key {key!r} (first defined on line {first + 1})",
                            key_line + 1,
                            key_column + 1,
                            "remove one of them: YAML readers disagree on which one wins",
                        )
                    )
                    continue
                parent.explicit[key] = key_line
                parent.value[key] = value
                parent.slots[key] = (key_line, key_column, line, column, raw)
            else:
                parent.value.append(value)
                parent.slots.append((line, column, line, column, raw))

    def _key(self, value: Any, event: Any, kind: Any, at: tuple[int, int]) -> Any:
        if kind is _ScalarEvent:
            if event.tag in (None, "!") and event.implicit[0]:
                if event.value == "<<":
                    return _MERGE
                return event.value  # a key is a name: keep its text as written
            return value if isinstance(value, str) else event.value
        if kind is _AliasEvent and not isinstance(value, (dict, list)):
            return value if isinstance(value, str) else str(value)
        self.problems.append(
            SourceProblem(
                "yaml-complex-key",
                "a mapping key must be a plain value, not a collection",
                at[0] + 1,
                at[1] + 1,
                "use a string key",
            )
        )
        return _DROP

    def _apply_merges(self, frame: _Frame) -> None:
        for merged, (line, column) in frame.merges:
            sources = merged if isinstance(merged, list) else [merged]
            for source in sources:
                if not isinstance(source, dict):
                    self.problems.append(
                        SourceProblem(
                            "yaml-syntax",
                            "the merge key '<<' takes a mapping or a list of mappings",
                            line + 1,
                            column + 1,
                            "merge an alias of a mapping: <<: *defaults",
                        )
                    )
                    continue
                source_slots = self.container_slots.get(id(source), {})
                for key, value in source.items():
                    if key in frame.value:
                        continue
                    frame.value[key] = value
                    frame.slots[key] = source_slots.get(key, (line, column, line, column, None))

    def _tag_problem(self, tag: str, mark: Any) -> SourceProblem:
        if tag.startswith(_STANDARD_PREFIX):
            tag = "!!" + tag[len(_STANDARD_PREFIX) :]
        return SourceProblem(
            "yaml-tag",
            f"tag {tag} is not supported",
            mark.line + 1,
            mark.column + 1,
            "remove the tag; only plain YAML values (strings, numbers, booleans, "
            "lists, mappings) are read",
        )

    def _tagged_scalar(self, tag: str, text: str, mark: Any) -> Any:
        """An explicitly tagged scalar, constructed as PyYAML's SafeLoader does."""
        if tag in _STR_TAGS:
            return text
        if tag not in _VALUE_TAGS:
            self.problems.append(self._tag_problem(tag, mark))
            return text
        try:
            return _construct(tag, text)
        except _REFUSALS:
            pass
        self.problems.append(
            SourceProblem(
                "yaml-tag",
                f"{text!r} is not a valid !!{tag.rsplit(':', 1)[-1]}",
                mark.line + 1,
                mark.column + 1,
                "remove the tag or fix the value",
            )
        )
        return text


# ------------------------------------------------------------------ the fast path

# Files up to this size are composed by libyaml's C composer and then converted, which
# is about twice as fast as the event loop above. The composer builds every node before
# the budgets can be checked, so it is only used where that costs little memory anyway;
# larger files take the event loop, which stops at the first node over a budget.
FAST_PATH_MAX_BYTES = 64 * 1024

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_ScalarNode = yaml.ScalarNode
_MappingNode = yaml.MappingNode


class _FastLoader(_Parser):  # type: ignore[misc]
    """libyaml's parser and composer, with tag resolution left to :func:`resolve_plain`.

    The composer calls these three hooks for every node. Builtins cost a fraction of a
    Python call: ``resolve`` returns a ``slice`` (an untagged node: the converter
    recognises it and looks at the scalar's style), and the path-resolver hooks of
    PyYAML's ``Resolver`` become no-ops.
    """

    resolve = slice
    descend_resolver = slice
    ascend_resolver = tuple


class _NodeComposer(_Composer):
    """Converts libyaml's composed nodes. Used only where no budget can be exceeded (see
    :func:`parse_yaml`); anything it cannot reproduce exactly (aliases, refusals) is
    handed to the event path with :class:`_UseEvents`."""

    def __init__(self, data: bytes, name: str, limits: Limits) -> None:
        super().__init__(data, name, limits, _FastLoader(data))
        # An alias needs a '*': without one no node can be reached twice.
        self.track = b"*" in data
        self.seen: set[int] = set()

    def compose(self) -> SourceDocument | None:
        loader = self.parser
        if not loader.check_node():
            raise _Fatal(
                SourceProblem(
                    "yaml-empty",
                    "file holds no YAML document",
                    1,
                    1,
                    "write the document, or delete the file",
                )
            )
        node = loader.get_node()
        following = loader.peek_event()
        if type(following) is _DocumentStartEvent:
            mark: Any = following.start_mark
            self.problems.append(
                SourceProblem(
                    "yaml-multiple-documents",
                    "file holds more than one YAML document; only one is expected",
                    mark.line + 1,
                    mark.column + 1,
                    "remove the '---' separator and everything after it, or split the file",
                )
            )
        value, raw = self._value(node, 1)
        nodes = 1 + sum(
            2 * len(slots) if isinstance(slots, dict) else len(slots)
            for slots in self.container_slots.values()
        )
        if nodes > self.limits.yaml_max_nodes:
            raise _UseEvents  # the event path stops at the node over the budget
        mark = node.start_mark
        root: _Slot = (mark.line, mark.column, mark.line, mark.column, raw)
        return SourceDocument(self.name, value, self.container_slots, root, self.data)

    def _visit(self, node: Any) -> None:
        key = id(node)
        if key in self.seen:
            # Reaching a node twice means an alias. libyaml's composer shares the node
            # and forgets where the alias was written; the event path remembers, and
            # applies the alias budgets as it goes. Aliases are rare: hand over.
            raise _UseEvents
        self.seen.add(key)

    def _value(self, node: Any, depth: int) -> tuple[Any, str | None]:
        """The value of ``node`` and, for a plain scalar that is not a string, its text."""
        if self.track:
            self._visit(node)
        if type(node) is _ScalarNode:
            tag: Any = node.tag
            if type(tag) is slice:  # untagged (see _FastLoader)
                if node.style:  # quoted or block: a string
                    return node.value, None
                text = node.value
                value = resolve_plain(text)
                return value, (None if type(value) is str else text)
            if tag == _STR_TAG:
                return node.value, None
            return self._tagged_scalar(tag, node.value, node.start_mark), None
        if depth > self.limits.yaml_max_depth:
            raise self._fatal(
                "yaml-depth",
                f"nesting deeper than {self.limits.yaml_max_depth} levels",
                node.start_mark,
                "flatten the structure",
            )
        if type(node.tag) is not slice and node.tag not in (_MAP_TAG, _SEQ_TAG):
            self.problems.append(self._tag_problem(node.tag, node.start_mark))
        if type(node) is _MappingNode:
            return self._mapping(node, depth), None
        return self._sequence(node, depth), None

    # _sequence and _mapping convert plain scalars inline: they are most of a document,
    # and a call per scalar is a good part of the fast path's cost.

    def _sequence(self, node: Any, depth: int) -> list[Any]:
        items: list[Any] = []
        slots: list[_Slot] = []
        self.container_slots[id(items)] = slots
        track = self.track
        for child in node.value:
            mark = child.start_mark
            tag: Any = child.tag
            if type(child) is _ScalarNode and type(tag) is slice and not track:
                text = child.value
                if child.style or (text and text[0] not in _MAYBE_SPECIAL):
                    value, raw = text, None
                else:
                    value = resolve_plain(text)
                    raw = None if type(value) is str else text
            else:
                value, raw = self._value(child, depth + 1)
            items.append(value)
            slots.append((mark.line, mark.column, mark.line, mark.column, raw))
        return items

    def _mapping(self, node: Any, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        slots: dict[Any, _Slot] = {}
        self.container_slots[id(result)] = slots
        merges: list[tuple[Any, tuple[int, int]]] = []
        track = self.track
        for key_node, value_node in node.value:
            key_mark = key_node.start_mark
            if type(key_node) is not _ScalarNode:
                self._value(key_node, depth + 1)
                self.problems.append(
                    SourceProblem(
                        "yaml-complex-key",
                        "a mapping key must be a plain value, not a collection",
                        key_mark.line + 1,
                        key_mark.column + 1,
                        "use a string key",
                    )
                )
                self._value(value_node, depth + 1)
                continue
            if track:
                self._visit(key_node)
            key = key_node.value  # a key is a name: keep its text as written
            key_tag: Any = key_node.tag
            untagged = type(key_tag) is slice
            if not untagged and key_tag != _STR_TAG:
                self._tagged_scalar(key_tag, key, key_mark)  # reports the tag
            tag: Any = value_node.tag
            if type(value_node) is _ScalarNode and type(tag) is slice and not track:
                text = value_node.value
                if value_node.style or (text and text[0] not in _MAYBE_SPECIAL):
                    value, raw = text, None
                else:
                    value = resolve_plain(text)
                    raw = None if type(value) is str else text
            else:
                value, raw = self._value(value_node, depth + 1)
            if key == "<<" and untagged and not key_node.style:
                merges.append((value, (key_mark.line, key_mark.column)))
                continue
            if key in result:
                self.problems.append(
                    SourceProblem(
                        "yaml-duplicate-key",
                        f"duplicate key {key!r} (first defined on line {slots[key][0] + 1})",
                        key_mark.line + 1,
                        key_mark.column + 1,
                        "remove one of them: YAML readers disagree on which one wins",
                    )
                )
                continue
            value_mark = value_node.start_mark
            result[key] = value
            slots[key] = (key_mark.line, key_mark.column, value_mark.line, value_mark.column, raw)
        if merges:
            frame = _Frame(result, True, None, (0, 0))
            frame.slots = slots
            frame.merges = merges
            self._apply_merges(frame)
        return result


# ------------------------------------------------------------------ convenience


def load_yaml_bytes(
    data: bytes, *, name: str = "<input>", limits: Limits = DEFAULT_LIMITS
) -> SourceDocument:
    """Parse ``data`` or raise :class:`SourceError` naming the first problem's location."""
    result = parse_yaml(data, name=name, limits=limits)
    errors = [p for p in result.problems if p.severity == "error"]
    if errors or result.document is None:
        first = errors[0]
        error = SourceError(
            f"{first.message} [{first.rule}]",
            hint=first.hint,
            location=f"{name}:{first.line}:{first.column}",
        )
        error.problems = errors  # type: ignore[attr-defined]
        raise error
    return result.document


def load_yaml(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> SourceDocument:
    """Read and parse one YAML file safely; :class:`SourceError` on any problem."""
    data = read_source_bytes(path, limits=limits)
    return load_yaml_bytes(data, name=str(path), limits=limits)
