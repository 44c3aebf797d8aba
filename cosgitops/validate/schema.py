"""JSON Schema validation for cosgitops' schemas, with diagnostics people can act on.

The verdict comes from ``jsonschema_rs``, a maintained implementation that passes the
official JSON Schema test suite (draft 2020-12, optional tests included): references to
anchors and to nested resources, ``$defs`` nobody references (the schema itself is
checked against its metaschema) and ``pattern`` with ECMA-262 semantics (``$`` matches
only at the very end, so ``"0.1.0\\n"`` is not a version), as check-jsonschema judges.

What this module adds is the diagnostics layer: every error becomes a
:class:`SchemaIssue` with the instance path (the engine turns it into ``line:column``),
a message written for people, and the rule id and hint of the subschema that failed,
read from two annotation keywords: ``x-cosgitops-rule`` and ``x-cosgitops-hint``. Where
a subschema's ``type`` does not fit, only that is reported (its other keywords say
nothing useful about a value of the wrong kind); for ``anyOf``/``oneOf`` the branch whose
type fits explains the problem when there is exactly one.

Schemas are never fetched: a ``$ref`` outside the schema document is refused when the
schema is compiled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urljoin

from cosgitops.errors import CosgitopsError

if TYPE_CHECKING:  # jsonschema_rs is imported where a schema is compiled
    import jsonschema_rs


class SchemaIssue(NamedTuple):
    path: tuple[str | int, ...]
    message: str
    keyword: str
    rule: str = "schema"
    hint: str | None = None
    at_key: bool = False  # point at the key (an unknown key) rather than the value
    expected: tuple[str, ...] = ()  # for ``type`` problems: the types that were wanted


class SchemaCompileError(CosgitopsError):
    """A schema is not a valid JSON Schema, or refers to a document outside itself."""

    exit_code = 3


def pointer_of(path: Iterable[str | int]) -> str:
    """RFC 6901 JSON pointer."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    type(None): "null",
    int: "integer",
    float: "number",
}


def json_type(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _canonical(value: Any) -> Any:
    """A hashable form in which equal JSON values are equal (True is not 1)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", float(value) if isinstance(value, float) else value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z",)
    if isinstance(value, list):
        return ("a", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("o", tuple(sorted((k, _canonical(v)) for k, v in value.items())))
    return ("?", repr(value))


def describe(value: Any, limit: int = 60) -> str:
    """A short rendering of a value for a message."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, dict):
        text = "a mapping"
    elif isinstance(value, list):
        text = "a list"
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _article(name: str) -> str:
    return {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "boolean": "a boolean",
        "null": "null",
        "integer": "an integer",
        "number": "a number",
    }.get(name, name)


@cache
def _articles(names: tuple[str, ...]) -> str:
    return " or ".join(map(_article, names))


def _did_you_mean(word: str, candidates: list[str]) -> str | None:
    if not candidates:
        return None
    import difflib

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known keys: {', '.join(candidates)}"


def did_you_mean(word: str, candidates: list[str]) -> str | None:
    """A "did you mean" hint for a misspelt name, or the list of known names."""
    return _did_you_mean(word, sorted(candidates))


# ------------------------------------------------------------------ values outside JSON

# YAML has infinities and NaN; JSON has neither, and jsonschema_rs would read them as
# null. For the verdict they stand in as numbers that are not integers, beyond every
# finite bound (+inf above, -inf below, NaN as +inf: what Python's jsonschema, and so
# check-jsonschema, makes of infinity); the messages show the real value.
_HUGE = "1" + "0" * 400 + ".5"


def _finite(value: Any) -> bool:
    """Whether no float anywhere in ``value`` is infinite or NaN (one cheap pass)."""
    stack = [value]
    pop, extend, isfinite = stack.pop, stack.extend, math.isfinite
    while stack:
        node = pop()
        kind = type(node)
        if kind is dict:
            extend(node.values())
        elif kind is list:
            extend(node)
        elif kind is float and not isfinite(node):
            return False
    return True


def _json_stand_in(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, dict):
        return {key: _json_stand_in(member) for key, member in value.items()}
    if isinstance(value, list):
        return [_json_stand_in(member) for member in value]
    if isinstance(value, float) and not math.isfinite(value):
        return Decimal(("-" if value < 0 else "") + _HUGE)
    return value


# ------------------------------------------------------------------ the schema


_ANONYMOUS_BASE = "https://cosgitops.invalid/anonymous.schema.json"
_BOUND_WORDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "more than",
    "exclusiveMaximum": "less than",
}


def _refuse_retrieval(uri: str) -> Any:
    raise LookupError(f"{uri} is outside the schema document, and schemas are never fetched")


def _value_at(value: Any, path: Iterable[str | int]) -> Any:
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


class _WrongTypes:
    """The subschemas whose ``type`` failed, by evaluation path, with the values."""

    __slots__ = ("at", "lengths")

    def __init__(self, errors: list[jsonschema_rs.ValidationError]) -> None:
        self.at: dict[tuple[Any, ...], set[tuple[Any, ...]]] = {}
        for error in errors:
            if error.kind.name == "type":
                subschema = tuple(error.evaluation_path[:-1])
                self.at.setdefault(subschema, set()).add(tuple(error.instance_path))
        self.lengths = sorted({len(subschema) for subschema in self.at})

    def hide(self, evaluation: tuple[Any, ...], instance: tuple[Any, ...], is_type: bool) -> bool:
        """Whether an error evaluated at ``evaluation`` for the value at ``instance``
        comes from under a subschema whose type failed for that value or one containing
        it (the type error itself excepted)."""
        for length in self.lengths:
            if length > len(evaluation):
                break
            values = self.at.get(evaluation[:length])
            if values is None:
                continue
            itself = is_type and length == len(evaluation) - 1
            for depth in range(len(instance) + 1):
                if instance[:depth] in values and not (itself and depth == len(instance)):
                    return True
        return False


class _Add:
    """Appends issues found by one keyword: its path, rule and hint unless told otherwise."""

    __slots__ = ("hint", "keyword", "out", "path", "rule")

    def __init__(
        self,
        out: list[SchemaIssue],
        path: tuple[str | int, ...],
        keyword: str,
        rule: str,
        hint: str | None,
    ) -> None:
        self.out, self.path, self.keyword, self.rule, self.hint = out, path, keyword, rule, hint

    def __call__(
        self, message: str, where: tuple[str | int, ...] | None = None, **extra: Any
    ) -> None:
        extra.setdefault("hint", self.hint)
        path = self.path if where is None else where
        self.out.append(SchemaIssue(path, message, self.keyword, self.rule, **extra))


class CompiledSchema:
    """A compiled schema: ``validate(value)`` returns the problems (empty when valid).

    ``schema`` is the raw schema; :meth:`subschema` resolves a reference in it."""

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        import jsonschema_rs

        self.schema = schema
        raw: dict[str, Any] | bool = dict(schema) if isinstance(schema, Mapping) else schema
        declared = raw.get("$id") if isinstance(raw, dict) else None
        self._base = urljoin(_ANONYMOUS_BASE, declared) if isinstance(declared, str) else ""
        self._base = self._base or _ANONYMOUS_BASE
        try:
            self._validator = jsonschema_rs.validator_for(
                raw,
                base_uri=_ANONYMOUS_BASE,
                retriever=_refuse_retrieval,
                validate_formats=True,
            )
            self._registry = jsonschema_rs.Registry(
                [(self._base, raw)], retriever=_refuse_retrieval
            )
        except (ValueError, TypeError) as exc:
            first = str(exc).strip().split("\n", 1)[0]
            raise SchemaCompileError(
                f"not a usable JSON Schema: {first}",
                hint="check the schema with check-jsonschema --check-metaschema",
            ) from exc
        self._resolvers: dict[str, jsonschema_rs.Resolver] = {}
        self._found: dict[tuple[str, str], Any] = {}
        self._owners: dict[str, tuple[Any, str]] = {}

    # ---------------------------------------------------------------- references

    def _lookup(self, base: str, reference: str) -> Any:
        """The subschema ``reference`` names, read relative to the resource ``base``."""
        import jsonschema_rs

        key = (base, reference)
        if key not in self._found:
            resolver = self._resolvers.get(base)
            if resolver is None:
                resolver = self._resolvers[base] = self._registry.resolver(base)
            try:
                self._found[key] = resolver.lookup(reference).contents
            except (ValueError, jsonschema_rs.ReferencingError) as exc:
                raise SchemaCompileError(f"cannot resolve {reference!r}: {exc}") from exc
        return self._found[key]

    def subschema(self, reference: str) -> Any:
        """The raw subschema a reference names, such as ``#/$defs/step`` or ``#anchor``
        (relative to the schema's own ``$id``). A JSON pointer into this document gives
        the node of :attr:`schema` itself; do not modify what it returns."""
        if reference == "#" or reference.startswith("#/"):
            from urllib.parse import unquote

            node: Any = self.schema
            try:
                for escaped in reference[2:].split("/") if reference != "#" else ():
                    token = unquote(escaped).replace("~1", "/").replace("~0", "~")
                    node = node[int(token)] if isinstance(node, list) else node[token]
            except (KeyError, IndexError, ValueError, TypeError):
                pass  # the library's resolver says what is wrong with it
            else:
                return node
        return self._lookup(self._base, reference)

    def _owner(self, location: str | None) -> tuple[Any, str]:
        """The subschema holding the keyword at ``location`` (an absolute keyword
        location, ``URI#/pointer/keyword``) and the URI of its resource."""
        if location is None:
            return {}, self._base
        found = self._owners.get(location)
        if found is None:
            base, _, fragment = location.partition("#")
            parent = fragment.rsplit("/", 1)[0] if "/" in fragment else ""
            found = self._owners[location] = (self._lookup(base, f"{base}#{parent}"), base)
        return found

    def _label(self, schema: Any, base: str) -> str:
        if isinstance(schema, Mapping):
            if "$ref" in schema and len(schema) == 1:
                schema = self._lookup(base, schema["$ref"])
            if isinstance(schema, Mapping):
                for key in ("title", "description"):
                    if key in schema:
                        return str(schema[key]).split(". ")[0].rstrip(".")
                if "const" in schema:
                    return describe(schema["const"])
                if "type" in schema:
                    types = schema["type"]
                    return " or ".join(
                        _article(t) for t in ([types] if isinstance(types, str) else types)
                    )
        return "another form"

    # ---------------------------------------------------------------- validation

    def validate(self, value: Any) -> list[SchemaIssue]:
        checked = value if _finite(value) else _json_stand_in(value)
        errors = list(self._validator.iter_errors(checked))
        if not errors:
            return []
        out: list[SchemaIssue] = []
        self._issues(errors, value, out)
        return out

    def _issues(
        self, errors: list[jsonschema_rs.ValidationError], root: Any, out: list[SchemaIssue]
    ) -> None:
        # A subschema whose type does not fit says only that: the errors of its other
        # keywords (evaluated under it, at or below the same value) are dropped. Indexed
        # by the subschema's evaluation path, so that thousands of wrong items cost
        # thousands of lookups, not their square.
        wrong_types = _WrongTypes(errors)
        for error in errors:
            instance = tuple(error.instance_path)
            if wrong_types.at and wrong_types.hide(
                tuple(error.evaluation_path), instance, error.kind.name == "type"
            ):
                continue
            self._issue(error, root, out, path=instance)

    def _issue(
        self,
        error: jsonschema_rs.ValidationError,
        root: Any,
        out: list[SchemaIssue],
        *,
        path: tuple[str | int, ...] | None = None,
        key: tuple[tuple[str | int, ...], str] | None = None,
    ) -> None:
        """Append the issues one error stands for (``path``: its instance path, when the
        caller has it). ``key``: the error is about a mapping key (``propertyNames``):
        the path to it, and the key."""
        import jsonschema_rs

        kinds = jsonschema_rs.ValidationErrorKind
        kind = error.kind
        keyword = kind.name
        if key is not None:
            path, value = key
        else:
            if path is None:
                path = tuple(error.instance_path)
            value = _value_at(root, path)
        if isinstance(kind, kinds.FalseSchema):
            out.append(SchemaIssue(path, "no value is allowed here", "false"))
            return
        owner, base = self._owner(error.absolute_keyword_location)
        if not isinstance(owner, Mapping):
            owner = {}
        add = _Add(
            out,
            path,
            keyword,
            str(owner.get("x-cosgitops-rule", "schema")),
            owner.get("x-cosgitops-hint"),
        )

        if isinstance(kind, kinds.Type):
            declared = owner.get("type", kind.types)
            wanted = (declared,) if isinstance(declared, str) else tuple(declared)
            shown = "" if isinstance(value, (dict, list)) else f" ({describe(value)})"
            add(
                f"expected {_articles(wanted)}, found {_article(json_type(value))}{shown}",
                expected=wanted,
            )
        elif isinstance(kind, kinds.Enum):
            options = owner.get("enum", kind.options)
            add(f"{describe(value)} is not one of: {', '.join(describe(o) for o in options)}")
        elif isinstance(kind, kinds.Constant):
            add(f"{describe(value)} must be {describe(owner.get('const', kind.expected_value))}")
        elif isinstance(kind, (kinds.AdditionalProperties, kinds.UnevaluatedProperties)):
            known = sorted(owner.get("properties") or {})
            unexpected = set(kind.unexpected)
            names = (
                [name for name in value if name in unexpected]
                if isinstance(value, dict)
                else list(kind.unexpected)
            )
            for name in names:
                add(
                    f"unknown key {name!r}",
                    (*path, name),
                    at_key=True,
                    hint=_did_you_mean(name, known) or add.hint,
                )
        elif isinstance(kind, kinds.Required):
            # The path names the missing key; locating it falls back to the parent,
            # which is where the key has to be added.
            add(f"missing required key {kind.property!r}", (*path, kind.property))
        elif isinstance(kind, kinds.PropertyNames):
            inner = kind.error
            written = str(inner.instance)  # the key that does not fit
            found: list[SchemaIssue] = []
            self._issue(inner, root, found, key=((*path, written), written))
            out.extend(
                issue._replace(message=f"key {issue.message}", at_key=True) for issue in found
            )
        elif isinstance(kind, kinds.MinProperties):
            add(f"needs at least {kind.limit} entries")
        elif isinstance(kind, kinds.MaxProperties):
            add(f"allows at most {kind.limit} entries")
        elif isinstance(kind, kinds.MinItems):
            add(f"needs at least {kind.limit} {'item' if kind.limit == 1 else 'items'}")
        elif isinstance(kind, kinds.MaxItems):
            add(f"allows at most {kind.limit} items")
        elif isinstance(kind, kinds.UniqueItems):
            seen: set[Any] = set()
            before = len(out)
            items: list[Any] = value if isinstance(value, list) else []
            for index, item in enumerate(items):
                canonical = _canonical(item)
                if canonical in seen:
                    add(f"{describe(item)} is listed twice", (*path, index))
                seen.add(canonical)
            if len(out) == before:
                add("lists the same value twice")
        elif isinstance(kind, kinds.MinLength):
            limit = kind.limit
            add("must not be empty" if limit == 1 else f"must be at least {limit} characters long")
        elif isinstance(kind, kinds.MaxLength):
            add(f"{describe(value)} is longer than {kind.limit} characters")
        elif isinstance(kind, kinds.Pattern):
            what = owner.get("title") or f"the pattern {kind.pattern}"
            add(f"{describe(value)} is not {what}")
        elif isinstance(
            kind, (kinds.Minimum, kinds.Maximum, kinds.ExclusiveMinimum, kinds.ExclusiveMaximum)
        ):
            bound = owner.get(keyword, kind.limit)
            add(f"{value!r} must be {_BOUND_WORDS[keyword]} {bound}")
        elif isinstance(kind, kinds.MultipleOf):
            add(f"{value!r} must be a multiple of {owner.get(keyword, kind.multiple_of)}")
        elif isinstance(kind, kinds.Not):
            add(f"{describe(value)} is not allowed here")
        elif isinstance(kind, kinds.Format):
            add(f"{describe(value)} is not a valid {kind.format}")
        elif isinstance(kind, (kinds.AnyOf, kinds.OneOfNotValid)):
            self._alternatives(
                kind.context, root, out, owner=owner, base=base, issue=add, value=value
            )
        elif isinstance(kind, kinds.OneOfMultipleValid):
            labels = [self._label(sub, base) for sub in owner.get(keyword) or ()]
            add(f"matches more than one of: {', '.join(labels)}")
        else:  # keywords our schemas do not use yet: the library's own words
            add(error.message)

    def _alternatives(
        self,
        context: list[list[jsonschema_rs.ValidationError]],
        root: Any,
        out: list[SchemaIssue],
        *,
        owner: Mapping[str, Any],
        base: str,
        issue: _Add,
        value: Any,
    ) -> None:
        """``anyOf``/``oneOf`` that no branch passes: ``context`` holds each branch's
        errors; ``issue`` reports at the value, with the owner's rule and hint."""
        subschemas = list(owner.get(issue.keyword) or ())
        if subschemas and all(
            isinstance(sub, Mapping) and set(sub) <= {"required", "description"}
            for sub in subschemas
        ):
            names = [name for sub in subschemas for name in sub.get("required") or ()]
            issue(f"needs one of the keys {', '.join(map(repr, names))}")
            return
        results = []
        for branch in context:
            found: list[SchemaIssue] = []
            self._issues(branch, root, found)
            results.append(found)
        # Branches whose type fits: their complaints are the useful ones.
        fitting = [
            found
            for found in results
            if not any(p.keyword == "type" and p.path == issue.path for p in found)
        ]
        if len(fitting) == 1:
            out.extend(fitting[0])
            return
        labels = [self._label(sub, base) for sub in subschemas]
        issue(f"{describe(value)} is none of: {'; '.join(labels)}")


@cache
def load_schema(path: Path) -> CompiledSchema:
    with open(path, encoding="utf-8") as handle:
        return CompiledSchema(json.load(handle))


@cache
def schema_for(kind: str) -> CompiledSchema:
    """The compiled ``schemas/<kind>.schema.json`` shipped with cosgitops."""
    from cosgitops.resources import schema_path

    return load_schema(schema_path(kind))
