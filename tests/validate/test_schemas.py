"""The JSON Schemas themselves, and the compiled validator against ``jsonschema``."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cosgitops.resources import schema_path
from cosgitops.source import load_yaml
from cosgitops.validate.schema import CompiledSchema, SchemaCompileError, schema_for

KINDS = ("derivative", "repository", "cloud-config")
DATA = Path(__file__).resolve().parent.parent / "data"


def raw(kind: str) -> dict[str, Any]:
    with open(schema_path(kind), encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


@pytest.mark.parametrize("kind", KINDS)
def test_schema_passes_its_metaschema(kind: str) -> None:
    schema = raw(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("kind", KINDS)
def test_schema_has_id_examples_and_a_description_on_every_property(kind: str) -> None:
    schema = raw(kind)
    assert schema["$id"] == f"https://cosgitops.dev/schemas/{kind}.schema.json"
    assert schema["examples"]
    undocumented = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if not isinstance(sub, dict) or not sub.get("description"):
                    undocumented.append(f"{where}/properties/{name}")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(schema, "#")
    assert undocumented == []
    validator = jsonschema.Draft202012Validator(schema)
    for example in schema["examples"]:
        validator.validate(example)
        assert schema_for(kind).validate(example) == []


def _examples(node: Any) -> list[tuple[dict[str, Any], Any]]:
    found = []
    if isinstance(node, dict):
        for example in node.get("examples") or ():
            found.append((node, example))
        for value in node.values():
            found.extend(_examples(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_examples(value))
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_property_examples_fit_their_property(kind: str) -> None:
    schema = raw(kind)
    for subschema, example in _examples(schema):
        standalone = {**subschema, "$defs": schema.get("$defs", {})}
        standalone.pop("examples")
        assert jsonschema.Draft202012Validator(standalone).is_valid(example), (subschema, example)


def test_compiler_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(SchemaCompileError):
        CompiledSchema({"type": "object", "dependentRequired": {"a": ["b"]}})
    with pytest.raises(SchemaCompileError):
        CompiledSchema({"$ref": "https://example.com/other.json"})


# ---------------------------------------------------------------- differential test


def _documents() -> list[tuple[str, Any]]:
    documents = []
    for folder in ("valid", "invalid"):
        for path in sorted((DATA / folder).rglob("*.yaml")):
            try:
                documents.append((path.parent.name, load_yaml(path).value))
            except Exception:  # unparsable fixtures have no value to compare
                continue
    return documents


_REPLACEMENTS: list[Any] = [None, True, 0, -1, 1.5, "", "x", "1.0.0", [], ["a"], {}, {"a": 1}]


def _mutate(value: Any, rng: random.Random) -> Any:
    """A copy of ``value`` with one random member removed, replaced or added."""
    value = copy.deepcopy(value)
    containers: list[Any] = []

    def collect(node: Any) -> None:
        if isinstance(node, (dict, list)):
            containers.append(node)
            for child in node.values() if isinstance(node, dict) else node:
                collect(child)

    collect(value)
    target = rng.choice(containers)
    if isinstance(target, dict):
        if target and rng.random() < 0.7:
            key = rng.choice(sorted(target))
            if rng.random() < 0.3:
                del target[key]
            else:
                target[key] = rng.choice(_REPLACEMENTS)
        else:
            target[rng.choice(["name", "version", "zzz", "stages", "spec"])] = rng.choice(
                _REPLACEMENTS
            )
    elif target and rng.random() < 0.7:
        target[rng.randrange(len(target))] = rng.choice(_REPLACEMENTS)
    else:
        target.append(rng.choice(_REPLACEMENTS))
    return value


def test_compiled_validator_agrees_with_jsonschema() -> None:
    """On every fixture and on thousands of mutations of them, the fast validator says
    valid exactly when the reference implementation does."""
    rng = random.Random(20240601)
    validators = {kind: jsonschema.Draft202012Validator(raw(kind)) for kind in KINDS}
    compared = 0
    for kind, document in _documents():
        candidates = [document] + [_mutate(document, rng) for _ in range(60)]
        for candidate in candidates:
            for schema_kind in {kind, rng.choice(KINDS)}:
                expected = validators[schema_kind].is_valid(candidate)
                issues = schema_for(schema_kind).validate(candidate)
                assert (not issues) == expected, (schema_kind, candidate, issues)
                compared += 1
    assert compared > 3000


def test_every_issue_has_a_message_and_a_path_into_the_document() -> None:
    issues = schema_for("derivative").validate(
        {"apiVersion": 1, "kind": "X", "metadata": [], "spec": {"version": 1, "zz": 1}}
    )
    assert {issue.keyword for issue in issues} >= {"type", "const", "additionalProperties"}
    for issue in issues:
        assert issue.message
        assert isinstance(issue.path, tuple)
