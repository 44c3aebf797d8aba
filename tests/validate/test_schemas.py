"""The JSON Schemas themselves, the engine that checks them, and check-jsonschema as the
reference verdict on the shipped schemas."""

from __future__ import annotations

import copy
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cosgitops.resources import schema_path
from cosgitops.source import parse_yaml
from cosgitops.validate import validate_paths
from cosgitops.validate.schema import CompiledSchema, SchemaCompileError, SchemaIssue, schema_for

KINDS = ("derivative", "repository", "cloud-config")
SHIPPED = (*KINDS, "agent", "base")
DATA = Path(__file__).resolve().parent.parent / "data"


def raw(kind: str) -> dict[str, Any]:
    with open(schema_path(kind), encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


@pytest.mark.parametrize("kind", SHIPPED)
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


# ---------------------------------------------------------------- the engine
# Each of these gave a wrong verdict, or crashed, with the hand-written compiler that
# jsonschema_rs replaced.


def valid(schema: dict[str, Any], value: Any) -> bool:
    return not CompiledSchema(schema).validate(value)


def test_pattern_dollar_matches_only_at_the_very_end() -> None:
    """ECMA-262, as check-jsonschema: Python's ``re`` lets ``$`` match before a final
    newline, which let "0.1.0\\n" pass as a version."""
    assert valid({"pattern": "^a$"}, "a")
    assert not valid({"pattern": "^a$"}, "a\n")
    derivative = schema_for("derivative")
    base = {
        "apiVersion": "cosgitops/v1",
        "kind": "Derivative",
        "metadata": {"name": "edge"},
        "spec": {"version": "0.1.0"},
    }
    assert derivative.validate(base) == []
    broken = copy.deepcopy(base)
    broken["spec"]["version"] = "0.1.0\n"
    (issue,) = derivative.validate(broken)
    assert (issue.path, issue.rule, issue.keyword) == (
        ("spec", "version"),
        "version-semver",
        "pattern",
    )
    broken = copy.deepcopy(base)
    broken["spec"]["osRelease"] = {"GRUB_ENTRY_NAME": "Edge\n"}
    (issue,) = derivative.validate(broken)
    assert issue.path == ("spec", "osRelease", "GRUB_ENTRY_NAME")
    assert issue.message == '"Edge\\n" is not a single line'


def test_a_reference_to_an_anchor_names_the_anchored_subschema() -> None:
    schema = {
        "properties": {"port": {"$ref": "#port"}},
        "$defs": {"port": {"$anchor": "port", "type": "integer", "maximum": 65535}},
    }
    assert valid(schema, {"port": 22})
    assert not valid(schema, {"port": "22"})
    assert not valid(schema, {"port": 70000})
    assert CompiledSchema(schema).subschema("#port")["maximum"] == 65535


def test_subschema_gives_the_nodes_cloud_config_rules_walk() -> None:
    compiled = schema_for("cloud-config")
    assert compiled.subschema("#/$defs/step") is compiled.schema["$defs"]["step"]
    assert compiled.subschema("#") is compiled.schema
    with pytest.raises(SchemaCompileError):
        compiled.subschema("#/$defs/no-such-definition")


def test_a_nested_id_is_the_base_of_references_inside_it() -> None:
    schema = {
        "$id": "https://example.test/outer.json",
        "properties": {
            "inner": {
                "$id": "inner.json",
                "properties": {"x": {"$ref": "#/$defs/text"}},
                "$defs": {"text": {"type": "string"}},
            },
            "y": {"$ref": "inner.json#/$defs/text"},
        },
        "$defs": {"text": {"type": "integer"}},
    }
    assert valid(schema, {"inner": {"x": "a"}, "y": "b"})
    assert not valid(schema, {"inner": {"x": 1}})
    assert not valid(schema, {"y": 1})


def test_the_schema_keyword_picks_the_draft() -> None:
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "items": [{"type": "string"}],
        "additionalItems": False,
    }
    assert valid(draft7, ["a"])
    assert not valid(draft7, [1])
    assert not valid(draft7, ["a", "b"])


def test_defs_nobody_references_are_still_checked() -> None:
    with pytest.raises(SchemaCompileError):
        CompiledSchema({"$defs": {"unused": {"type": "strnig"}}})
    with pytest.raises(SchemaCompileError):
        CompiledSchema({"$defs": {"unused": {"minLength": -1}}})


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/missing"},
        {"$ref": "#/properties/a/~2"},
        {"pattern": "("},
        {"patternProperties": {"[": {}}},
        {"type": "object", "properties": []},
        {"$ref": "https://example.test/elsewhere.json"},
        {"$schema": "https://example.test/unknown-metaschema"},
    ],
)
def test_broken_schemas_are_refused_when_compiled(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaCompileError) as excinfo:
        CompiledSchema(schema)
    assert excinfo.value.exit_code == 3  # shipped schemas are ours: a bug


def test_keywords_beyond_the_old_subset_work() -> None:
    assert not valid({"dependentRequired": {"a": ["b"]}}, {"a": 1})
    assert not valid({"if": {"required": ["a"]}, "then": {"required": ["b"]}}, {"a": 1})
    assert not valid({"properties": {"a": {}}, "unevaluatedProperties": False}, {"a": 1, "b": 2})
    assert not valid({"contains": {"type": "string"}}, [1, 2])
    assert valid({"multipleOf": 0.5}, 1.5)


def test_values_outside_json_are_numbers_beyond_every_bound() -> None:
    """YAML's .inf and .nan are no JSON value: they count as numbers that are not
    integers, beyond every finite bound (as Python's jsonschema judges infinity)."""
    schema = {"type": "number", "maximum": 10}
    assert not valid(schema, math.inf)
    assert valid({"type": "number", "minimum": 0}, math.inf)
    assert not valid({"type": "number", "minimum": 0}, -math.inf)
    assert not valid({"type": "integer"}, math.inf)
    assert not valid({"type": ["array", "null"]}, math.nan)  # not read as null
    (issue,) = CompiledSchema({"properties": {"n": {"type": "integer"}}}).validate({"n": -math.inf})
    assert issue.message == "expected an integer, found a number (-inf)"


# ---------------------------------------------------------------- the diagnostics layer


def test_every_issue_has_a_message_and_a_path_into_the_document() -> None:
    issues = schema_for("derivative").validate(
        {"apiVersion": 1, "kind": "X", "metadata": [], "spec": {"version": 1, "zz": 1}}
    )
    assert {issue.keyword for issue in issues} >= {"type", "const", "additionalProperties"}
    for issue in issues:
        assert issue.message
        assert isinstance(issue.path, tuple)


DERIVATIVE = {
    "apiVersion": "cosgitops/v1",
    "kind": "Derivative",
    "metadata": {"name": "edge"},
    "spec": {"version": "1.0.0"},
}


def derivative_with(**spec: Any) -> dict[str, Any]:
    value = copy.deepcopy(DERIVATIVE)
    value["spec"].update(spec)
    return value


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (
            "derivative",
            derivative_with(version=1.1),
            SchemaIssue(
                ("spec", "version"),
                "expected a string, found a number (1.1)",
                "type",
                "version-semver",
                "write MAJOR.MINOR.PATCH, e.g. 1.4.0",
                expected=("string",),
            ),
        ),
        (
            "derivative",
            derivative_with(verison="1.0.0"),
            SchemaIssue(
                ("spec", "verison"),
                "unknown key 'verison'",
                "additionalProperties",
                hint="did you mean 'version'?",
                at_key=True,
            ),
        ),
        (
            "derivative",
            {**DERIVATIVE, "metadata": {}},
            SchemaIssue(("metadata", "name"), "missing required key 'name'", "required"),
        ),
        (
            "derivative",
            derivative_with(osRelease={"grub": "x"}),
            SchemaIssue(
                ("spec", "osRelease", "grub"),
                "key \"grub\" is not an os-release variable name (capital letters, digits and '_')",
                "pattern",
                at_key=True,
            ),
        ),
        (
            "derivative",
            derivative_with(platforms=["linux/amd64", "linux/arm64", "linux/amd64"]),
            SchemaIssue(("spec", "platforms", 2), '"linux/amd64" is listed twice', "uniqueItems"),
        ),
        (
            "derivative",
            derivative_with(release={"rollout": {"startPercentage": 101}}),
            SchemaIssue(
                ("spec", "release", "rollout", "startPercentage"),
                "101 must be at most 100",
                "maximum",
            ),
        ),
        (
            "derivative",
            derivative_with(platforms=[]),
            SchemaIssue(("spec", "platforms"), "needs at least 1 item", "minItems"),
        ),
        (
            "derivative",
            derivative_with(run=[""]),
            SchemaIssue(("spec", "run", 0), "must not be empty", "minLength"),
        ),
        (
            "derivative",
            {**DERIVATIVE, "kind": "Repository"},
            SchemaIssue(
                ("kind",),
                '"Repository" must be "Derivative"',
                "const",
                hint="write kind: Derivative (cosgitops.yaml is the Repository)",
            ),
        ),
    ],
)
def test_issues_read_as_before(kind: str, value: Any, expected: SchemaIssue) -> None:
    """Messages, rule ids, hints and paths as the reporters have always shown them."""
    assert schema_for(kind).validate(value) == [expected]


def test_a_wrong_type_is_the_only_complaint_about_that_value() -> None:
    issues = CompiledSchema(
        {"type": "object", "required": ["a"], "minProperties": 2, "items": {"type": "string"}}
    ).validate([1])
    assert [(issue.keyword, issue.message) for issue in issues] == [
        ("type", "expected a mapping, found a list")
    ]


def test_the_branch_whose_type_fits_explains_an_any_of() -> None:
    schema = {
        "properties": {
            "command": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                ]
            }
        }
    }
    compiled = CompiledSchema(schema)
    assert compiled.validate({"command": []}) == [
        SchemaIssue(("command",), "needs at least 1 item", "minItems")
    ]
    (issue,) = compiled.validate({"command": 5})
    assert (issue.keyword, issue.message) == ("anyOf", "5 is none of: a string; a list")
    (issue,) = CompiledSchema(
        {"anyOf": [{"required": ["keys"]}, {"required": ["identities"]}]}
    ).validate({})
    assert issue.message == "needs one of the keys 'keys', 'identities'"


# ---------------------------------------------------------------- the reference verdict


def _data_documents(interop: Path) -> list[tuple[str, Any]]:
    """The values cosgitops reads from the data files, each with its kind."""
    found: list[tuple[str, Any]] = []
    for folder in ("valid", "invalid"):
        for path in sorted((DATA / folder).rglob("*.yaml")):
            document = parse_yaml(path.read_bytes()).document
            if document is not None:
                found.append((path.parent.name, document.value))
    for path in sorted((interop / "yip").rglob("*")):
        document = parse_yaml(path.read_bytes()).document if path.is_file() else None
        if document is not None:
            found.append(("cloud-config", document.value))
    scaffold = DATA.parent.parent / "templates" / "scaffold"
    for kind, pattern in (
        ("repository", "cosgitops.yaml"),
        ("derivative", "derivatives/*/derivative.yaml"),
        ("base", "bases/*/base.yaml"),
    ):
        for path in sorted(scaffold.glob(pattern)):
            filled = re.sub(rb"@[A-Z_]+@", b"fleet", path.read_bytes())  # init's placeholders
            document = parse_yaml(filled).document
            assert document is not None, path
            found.append((kind, document.value))
    for kind in SHIPPED:
        found.extend((kind, example) for example in raw(kind).get("examples", ()))
    found.append(("base", BASE))
    return found


BASE = {  # bases/<name>/base.yaml with every key (its schema has no examples)
    "apiVersion": "cosgitops/v1",
    "kind": "Base",
    "metadata": {"name": "debian", "description": "Debian with the agent"},
    "spec": {
        "version": "1.0.0",
        "distribution": "debian",
        "suite": "bookworm",
        "architecture": "amd64",
        "mirrors": ["deb http://deb.debian.org/debian bookworm main"],
        "packages": ["openssh-server", "busybox"],
        "trim": {"docs": True, "locales": False, "kernelModules": True},
        "osRelease": {"VARIANT_ID": "edge"},
        "kernelCmdline": "quiet console=ttyS0",
    },
}


# Values a mutation puts in: types that do not fit, strings that regexes disagree on
# (a final newline, Unicode spaces and digits), and numbers at and beyond the edges.
_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.0, 1.5, 101, 4096, 10**20, math.inf, -math.inf,
    "", "x", "X", "a b", "1.0.0", "1.0.0\n", "edge\n", "\nedge", "a\u00a0b", "a\ufeffb",
    "a\u0085b", "a\u2028b", "١٢٣", "e\u0301", "-edge-", "a" * 64, "../up", "/abs", "oci:/x",
    [], ["a"], ["a", "a"], [1, 1.0], {}, {"a": 1}, {"A_B": "v"}, {"name": "n"},
    {"identity": "x", "issuer": "y"}, {"keys": []},
]  # fmt: skip
_KEYS = ["name", "version", "zz", "stages", "spec", "identity", "issuer", "keys", "files"]


def _edit_string(text: str, rng: random.Random) -> str:
    return rng.choice(
        [text + "\n", " " + text, text.upper(), text + "é", text + "\u00a0", text[:-1], ""]
    )


def _mutate(value: Any, rng: random.Random) -> Any:
    """A copy of ``value`` with one to three members removed, replaced or added."""
    value = copy.deepcopy(value)
    containers: list[Any] = []

    def collect(node: Any) -> None:
        if isinstance(node, (dict, list)):
            containers.append(node)
            for child in node.values() if isinstance(node, dict) else node:
                collect(child)

    collect(value)
    if not containers:
        return copy.deepcopy(rng.choice(_VALUES))
    for _ in range(rng.choice((1, 1, 2, 3))):
        target = rng.choice(containers)
        if isinstance(target, dict) and target and rng.random() < 0.75:
            key = rng.choice(sorted(target))
            roll = rng.random()
            if roll < 0.2:
                del target[key]
            elif roll < 0.5 and isinstance(target[key], str):
                target[key] = _edit_string(target[key], rng)
            else:
                target[key] = copy.deepcopy(rng.choice(_VALUES))
        elif isinstance(target, dict):
            target[rng.choice(_KEYS)] = copy.deepcopy(rng.choice(_VALUES))
        elif target and rng.random() < 0.7:
            index = rng.randrange(len(target))
            if isinstance(target[index], str) and rng.random() < 0.5:
                target[index] = _edit_string(target[index], rng)
            else:
                target[index] = copy.deepcopy(rng.choice(_VALUES))
        else:
            target.append(copy.deepcopy(rng.choice(_VALUES)))
    return value


def _check_jsonschema_verdicts(kind: str, documents: list[Any], folder: Path) -> list[bool]:
    folder.mkdir()
    names = []
    for index, document in enumerate(documents):
        name = f"{index:05d}.json"
        (folder / name).write_text(json.dumps(document), encoding="utf-8")
        names.append(name)
    program = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(program), "--schemafile", str(schema_path(kind)), "-o", "json", *names],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["parse_errors"] == []
    failed = {error["filename"] for error in report["errors"]}
    return [name not in failed for name in names]


@pytest.mark.slow
@pytest.mark.parametrize("kind", SHIPPED)
def test_check_jsonschema_agrees_on_every_shipped_schema(
    kind: str, tmp_path: Path, interop: Path
) -> None:
    """On the data files (the project's, the scaffold's, the real yip files) and on
    seeded mutations of them, cosgitops says valid exactly when check-jsonschema
    (ECMA-262 patterns, the reference) does."""
    rng = random.Random(f"reference-{kind}")
    seeds = _data_documents(interop)
    own = [value for document_kind, value in seeds if document_kind == kind]
    documents = [*own, *(value for _, value in rng.sample(seeds, min(len(seeds), 40)))]
    while len(documents) < 900:
        documents.append(_mutate(rng.choice(own), rng))
    expected = _check_jsonschema_verdicts(kind, documents, tmp_path / kind)
    compiled = schema_for(kind)
    disagreements = [
        (document, compiled.validate(document))
        for document, verdict in zip(documents, expected, strict=True)
        if (not compiled.validate(document)) != verdict
    ]
    assert disagreements == []
    assert 25 < sum(expected) < len(expected) - 25  # both verdicts, many times


def test_a_version_with_a_final_newline_is_refused_from_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "derivatives" / "edge"
    folder.mkdir(parents=True)
    (folder / "derivative.yaml").write_text(
        "apiVersion: cosgitops/v1\nkind: Derivative\nmetadata:\n  name: edge\n"
        'spec:\n  version: "0.1.0\\n"\n  osRelease:\n    VARIANT: |\n      edge\n'
    )
    report = validate_paths([folder / "derivative.yaml"], as_kind="derivative")
    assert [(d.rule, d.line, d.column, d.pointer) for d in report.errors] == [
        ("version-semver", 6, 12, "/spec/version"),
        ("schema", 8, 14, "/spec/osRelease/VARIANT"),
    ]
