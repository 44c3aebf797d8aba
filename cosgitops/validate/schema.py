"""A small, fast JSON Schema (draft 2020-12) validator for cosgitops' own schemas.

The ``jsonschema`` package is correct but slow to import and to run for a pre-commit
hook that checks hundreds of files; this module compiles a schema once into nested
closures and reports every problem with its JSON pointer, so the caller can map it to
a line and column. It supports exactly the keywords cosgitops' schemas use and refuses
(at compile time) any other, so a schema can never silently ask for a check that does
not happen. The test suite checks it against ``jsonschema`` on every fixture.

Two annotation keywords carry cosgitops' diagnostics: ``x-cosgitops-rule`` (the rule id
for problems found by that subschema) and ``x-cosgitops-hint`` (how to fix them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from cosgitops.errors import CosgitopsError

# (parent link, key): a cheap linked path, turned into a tuple only for a problem.
PathLink = tuple[Any, Any] | None


class SchemaIssue(NamedTuple):
    path: tuple[str | int, ...]
    message: str
    keyword: str
    rule: str = "schema"
    hint: str | None = None
    at_key: bool = False  # point at the key (an unknown key) rather than the value
    expected: tuple[str, ...] = ()  # for ``type`` problems: the types that were wanted


Check = Callable[[Any, PathLink, list[SchemaIssue]], None]


class SchemaCompileError(CosgitopsError):
    """A schema uses a keyword or a form this validator does not implement."""

    exit_code = 3


def path_tuple(link: PathLink) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    while link is not None:
        link, key = link
        parts.append(key)
    parts.reverse()
    return tuple(parts)


def pointer_of(path: tuple[str | int, ...]) -> str:
    """RFC 6901 JSON pointer."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


_ANNOTATIONS = frozenset(
    (
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
        "markdownDescription",
        "x-cosgitops-rule",
        "x-cosgitops-hint",
        "x-cosgitops-unknown-keys",
        "$defs",
    )
)
_SUPPORTED = _ANNOTATIONS | frozenset(
    (
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "$ref",
    )
)

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


def _is_type(value: Any, name: str) -> bool:
    kind = type(value)
    if name == "string":
        return kind is str
    if name == "object":
        return kind is dict
    if name == "array":
        return kind is list
    if name == "boolean":
        return kind is bool
    if name == "null":
        return value is None
    if name == "integer":
        return kind is int or (kind is float and math.isfinite(value) and value.is_integer())
    if name == "number":
        return kind is int or kind is float
    raise SchemaCompileError(f"unknown JSON Schema type {name!r}")


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


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def resolve_pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise SchemaCompileError(f"only local $ref is supported, not {ref!r}")
        node: Any = self.root
        for escaped in ref[1:].split("/")[1:] if ref != "#" else []:
            node = node[escaped.replace("~1", "/").replace("~0", "~")]
        return node

    def ref(self, ref: str) -> Check:
        compiled = self.refs.get(ref)
        if compiled is not None:
            return compiled
        holder: list[Check] = []

        def indirect(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
            holder[0](value, path, out)

        self.refs[ref] = indirect
        holder.append(self.compile(self.resolve_pointer(ref)))
        return indirect

    def compile(self, schema: Any) -> Check:
        if schema is True or schema == {}:
            return _accept
        if schema is False:
            return _reject
        if not isinstance(schema, Mapping):
            raise SchemaCompileError(f"a schema must be an object or boolean, not {schema!r}")
        unknown = set(schema) - _SUPPORTED
        if unknown:
            raise SchemaCompileError(f"unsupported schema keywords: {sorted(unknown)}")
        rule = str(schema.get("x-cosgitops-rule", "schema"))
        hint = schema.get("x-cosgitops-hint")

        def issue(path: PathLink, message: str, keyword: str, **extra: Any) -> SchemaIssue:
            extra.setdefault("hint", hint)
            return SchemaIssue(path_tuple(path), message, keyword, rule, **extra)

        checks: list[Check] = []
        object_checks: list[Check] = []
        array_checks: list[Check] = []
        string_checks: list[Check] = []
        number_checks: list[Check] = []

        types = schema.get("type")
        type_names: tuple[str, ...] = ()
        if types is not None:
            type_names = (types,) if isinstance(types, str) else tuple(types)
            for name in type_names:
                _is_type(None, name)  # validates the name

        if "$ref" in schema:
            checks.append(self.ref(schema["$ref"]))
        if "enum" in schema:
            options = schema["enum"]
            allowed = {_canonical(option) for option in options}
            shown = ", ".join(describe(option) for option in options)

            def check_enum(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
                if _canonical(value) not in allowed:
                    out.append(issue(path, f"{describe(value)} is not one of: {shown}", "enum"))

            checks.append(check_enum)
        if "const" in schema:
            expected_value = schema["const"]
            expected_key = _canonical(expected_value)

            def check_const(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
                if _canonical(value) != expected_key:
                    out.append(
                        issue(
                            path,
                            f"{describe(value)} must be {describe(expected_value)}",
                            "const",
                        )
                    )

            checks.append(check_const)

        # --- objects
        properties: dict[str, Check] = {
            name: self.compile(sub) for name, sub in (schema.get("properties") or {}).items()
        }
        patterns = [
            (re.compile(pattern), self.compile(sub))
            for pattern, sub in (schema.get("patternProperties") or {}).items()
        ]
        additional = schema.get("additionalProperties", True)
        additional_check = None if additional is True else self.compile(additional)
        required = tuple(schema.get("required") or ())
        known_names = sorted(properties)

        if properties or patterns or additional_check is not None:

            def check_members(
                value: dict[str, Any], path: PathLink, out: list[SchemaIssue]
            ) -> None:
                for key, member in value.items():
                    check = properties.get(key)
                    matched = check is not None
                    if check is not None:
                        check(member, (path, key), out)
                    for pattern, pattern_check in patterns:
                        if pattern.search(key):
                            matched = True
                            pattern_check(member, (path, key), out)
                    if not matched and additional_check is not None:
                        if additional is False:
                            out.append(
                                issue(
                                    (path, key),
                                    f"unknown key {key!r}",
                                    "additionalProperties",
                                    at_key=True,
                                    hint=_did_you_mean(key, known_names) or hint,
                                )
                            )
                        else:
                            additional_check(member, (path, key), out)

            object_checks.append(check_members)
        if required:

            def check_required(
                value: dict[str, Any], path: PathLink, out: list[SchemaIssue]
            ) -> None:
                for name in required:
                    if name not in value:
                        # The path names the missing key; locating it falls back to the
                        # parent, which is where the key has to be added.
                        out.append(
                            issue((path, name), f"missing required key {name!r}", "required")
                        )

            object_checks.append(check_required)
        if "propertyNames" in schema:
            names_check = self.compile(schema["propertyNames"])

            def check_names(value: dict[str, Any], path: PathLink, out: list[SchemaIssue]) -> None:
                for key in value:
                    found: list[SchemaIssue] = []
                    names_check(key, (path, key), found)
                    for problem in found:
                        out.append(
                            SchemaIssue(
                                problem.path,
                                f"key {problem.message}",
                                problem.keyword,
                                problem.rule,
                                problem.hint,
                                at_key=True,
                            )
                        )

            object_checks.append(check_names)
        min_properties = schema.get("minProperties")
        max_properties = schema.get("maxProperties")
        if min_properties is not None or max_properties is not None:

            def check_count(value: dict[str, Any], path: PathLink, out: list[SchemaIssue]) -> None:
                if min_properties is not None and len(value) < min_properties:
                    out.append(
                        issue(path, f"needs at least {min_properties} entries", "minProperties")
                    )
                if max_properties is not None and len(value) > max_properties:
                    out.append(
                        issue(path, f"allows at most {max_properties} entries", "maxProperties")
                    )

            object_checks.append(check_count)

        # --- arrays
        if "items" in schema:
            item_check = self.compile(schema["items"])

            def check_items(value: list[Any], path: PathLink, out: list[SchemaIssue]) -> None:
                for index, item in enumerate(value):
                    item_check(item, (path, index), out)

            array_checks.append(check_items)
        min_items = schema.get("minItems")
        max_items = schema.get("maxItems")
        if min_items is not None or max_items is not None:

            def check_length(value: list[Any], path: PathLink, out: list[SchemaIssue]) -> None:
                if min_items is not None and len(value) < min_items:
                    noun = "item" if min_items == 1 else "items"
                    out.append(issue(path, f"needs at least {min_items} {noun}", "minItems"))
                if max_items is not None and len(value) > max_items:
                    out.append(issue(path, f"allows at most {max_items} items", "maxItems"))

            array_checks.append(check_length)
        if schema.get("uniqueItems"):

            def check_unique(value: list[Any], path: PathLink, out: list[SchemaIssue]) -> None:
                seen: set[Any] = set()
                for index, item in enumerate(value):
                    key = _canonical(item)
                    if key in seen:
                        out.append(
                            issue(
                                (path, index),
                                f"{describe(item)} is listed twice",
                                "uniqueItems",
                            )
                        )
                    seen.add(key)

            array_checks.append(check_unique)

        # --- strings
        min_length = schema.get("minLength")
        max_length = schema.get("maxLength")
        if min_length is not None or max_length is not None:

            def check_string_length(value: str, path: PathLink, out: list[SchemaIssue]) -> None:
                if min_length is not None and len(value) < min_length:
                    message = (
                        "must not be empty"
                        if min_length == 1
                        else f"must be at least {min_length} characters long"
                    )
                    out.append(issue(path, message, "minLength"))
                if max_length is not None and len(value) > max_length:
                    out.append(
                        issue(
                            path,
                            f"{describe(value)} is longer than {max_length} characters",
                            "maxLength",
                        )
                    )

            string_checks.append(check_string_length)
        if "pattern" in schema:
            regex = re.compile(schema["pattern"])
            what = schema.get("title") or f"the pattern {schema['pattern']}"

            def check_pattern(value: str, path: PathLink, out: list[SchemaIssue]) -> None:
                if not regex.search(value):
                    out.append(issue(path, f"{describe(value)} is not {what}", "pattern"))

            string_checks.append(check_pattern)

        # --- numbers
        bounds: list[tuple[str, Callable[[float, float], bool], str]] = [
            ("minimum", lambda v, b: v >= b, "at least"),
            ("maximum", lambda v, b: v <= b, "at most"),
            ("exclusiveMinimum", lambda v, b: v > b, "more than"),
            ("exclusiveMaximum", lambda v, b: v < b, "less than"),
        ]
        active_bounds = [
            (keyword, schema[keyword], ok, word)
            for keyword, ok, word in bounds
            if schema.get(keyword) is not None
        ]
        if active_bounds:

            def check_bounds(value: float, path: PathLink, out: list[SchemaIssue]) -> None:
                for keyword, bound, ok, word in active_bounds:
                    if not ok(value, bound):
                        out.append(issue(path, f"{value!r} must be {word} {bound}", keyword))

            number_checks.append(check_bounds)

        # --- combinators
        if "allOf" in schema:
            all_checks = [self.compile(sub) for sub in schema["allOf"]]

            def check_all(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
                for check in all_checks:
                    check(value, path, out)

            checks.append(check_all)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                checks.append(self._alternatives(keyword, schema[keyword], issue))
        if "not" in schema:
            negated = self.compile(schema["not"])

            def check_not(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
                found: list[SchemaIssue] = []
                negated(value, path, found)
                if not found:
                    out.append(issue(path, f"{describe(value)} is not allowed here", "not"))

            checks.append(check_not)

        return _assemble(
            type_names,
            issue,
            checks=checks,
            object_checks=object_checks,
            array_checks=array_checks,
            string_checks=string_checks,
            number_checks=number_checks,
        )

    def _alternatives(
        self, keyword: str, subschemas: list[Any], issue: Callable[..., SchemaIssue]
    ) -> Check:
        branches = [self.compile(sub) for sub in subschemas]
        labels = [_label(self, sub) for sub in subschemas]
        only_required = all(
            isinstance(sub, Mapping) and set(sub) <= {"required", "description"}
            for sub in subschemas
        )
        exactly_one = keyword == "oneOf"

        def check_alternatives(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
            results: list[list[SchemaIssue]] = []
            passed = 0
            for branch in branches:
                found: list[SchemaIssue] = []
                branch(value, path, found)
                results.append(found)
                if not found:
                    passed += 1
                    if not exactly_one:
                        return
            if passed == 1 or (passed and not exactly_one):
                return
            if passed > 1:
                out.append(issue(path, f"matches more than one of: {', '.join(labels)}", keyword))
                return
            if only_required:
                names = [name for sub in subschemas for name in sub["required"]]
                out.append(
                    issue(path, f"needs one of the keys {', '.join(map(repr, names))}", keyword)
                )
                return
            here = path_tuple(path)
            # Branches whose type fits: their complaints are the useful ones.
            fitting = [
                found
                for found in results
                if not any(p.keyword == "type" and p.path == here for p in found)
            ]
            if len(fitting) == 1:
                out.extend(fitting[0])
                return
            out.append(issue(path, f"{describe(value)} is none of: {'; '.join(labels)}", keyword))

        return check_alternatives


def _label(compiler: _Compiler, schema: Any) -> str:
    if isinstance(schema, Mapping):
        if "$ref" in schema and len(schema) == 1:
            schema = compiler.resolve_pointer(schema["$ref"])
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


def _accept(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
    return None


def _reject(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
    out.append(SchemaIssue(path_tuple(path), "no value is allowed here", "false"))


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "object": (dict,),
    "array": (list,),
    "boolean": (bool,),
    "null": (type(None),),
    "integer": (int,),
    "number": (int, float),
}


def _assemble(
    type_names: tuple[str, ...],
    issue: Callable[..., SchemaIssue],
    *,
    checks: list[Check],
    object_checks: list[Check],
    array_checks: list[Check],
    string_checks: list[Check],
    number_checks: list[Check],
) -> Check:
    wanted = " or ".join(_article(name) for name in type_names)
    # Exact Python types that pass without further thought (bool is not an integer);
    # an integral float still counts as an integer, as JSON Schema says.
    fast_types = frozenset(t for name in type_names for t in _PYTHON_TYPES[name])
    float_is_integer = "integer" in type_names and "number" not in type_names
    by_kind: dict[type, tuple[Check, ...]] = {
        kind: tuple(found)
        for kind, found in (
            (dict, object_checks),
            (list, array_checks),
            (str, string_checks),
            (int, number_checks),
            (float, number_checks),
        )
        if found
    }
    generic = tuple(checks)
    no_checks: tuple[Check, ...] = ()

    def wrong_type(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
        out.append(
            issue(
                path,
                f"expected {wanted}, found {_article(json_type(value))}"
                + (f" ({describe(value)})" if not isinstance(value, (dict, list)) else ""),
                "type",
                expected=type_names,
            )
        )

    # This runs once per value of every document: it is kept to a dictionary lookup
    # and the checks that apply to the value's kind.
    def validate(value: Any, path: PathLink, out: list[SchemaIssue]) -> None:
        kind = type(value)
        if (
            fast_types
            and kind not in fast_types
            and not (float_is_integer and kind is float and _is_type(value, "integer"))
        ):
            wrong_type(value, path, out)
            return
        for check in by_kind.get(kind, no_checks):
            check(value, path, out)
        for check in generic:
            check(value, path, out)

    return validate


class CompiledSchema:
    """A compiled schema: ``validate(value)`` returns the problems (empty when valid)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self._compiler = _Compiler(schema)
        self._check = self._compiler.compile(schema)

    def validate(self, value: Any) -> list[SchemaIssue]:
        out: list[SchemaIssue] = []
        self._check(value, None, out)
        return out

    def subschema(self, pointer: str) -> Any:
        """The raw subschema at a local pointer such as ``#/$defs/step``."""
        return self._compiler.resolve_pointer(pointer)


@cache
def load_schema(path: Path) -> CompiledSchema:
    with open(path, encoding="utf-8") as handle:
        return CompiledSchema(json.load(handle))


@cache
def schema_for(kind: str) -> CompiledSchema:
    """The compiled ``schemas/<kind>.schema.json`` shipped with cosgitops."""
    from cosgitops.resources import schema_path

    return load_schema(schema_path(kind))
