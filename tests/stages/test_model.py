"""One model: the JSON Schema that validate checks, the model both read and the runner's
handlers agree key for key, and validate warns about what the runner skips."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cosgitops.resources import data_dir
from cosgitops.stages import model
from cosgitops.stages.kinds import HANDLERS, handler
from cosgitops.validate import cloudconfig, validate_paths
from cosgitops.validate.rules import RULES

SCHEMA = json.loads((data_dir("schemas") / "cloud-config.schema.json").read_text())


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _fields(node: Mapping[str, Any]) -> Any:
    """The field tree a schema node describes, in the model's form."""
    node = _resolve(node)
    if "items" in node:
        return _fields(node["items"])
    if "properties" in node:
        return {key: _fields(child) for key, child in node["properties"].items()}
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        inner = _resolve(additional)
        if "properties" in inner:
            return _fields(inner)
    return None


def _model_fields(fields: model.Fields) -> Any:
    return {key: None if sub is None else _model_fields(sub) for key, sub in fields.items()}


def test_the_schema_and_the_model_know_the_same_step_keys_and_fields() -> None:
    step = _resolve(SCHEMA["$defs"]["step"])
    assert set(step["properties"]) == model.STEP_KEYS
    for kind in model.KINDS:
        expected = _model_fields(kind.fields) if kind.fields else None
        assert _fields(step["properties"][kind.key]) == expected, kind.key
    assert _fields(step["properties"]["if_files"]) == _model_fields(model.IF_FILES_FIELDS)
    assert _fields(step["properties"]["after"]) == _model_fields(model.AFTER_FIELDS)
    shapes = {"list": "array", "map": "object", "object": "object", "textlist": "array",
              "textmap": "object"}  # fmt: skip
    for kind in model.KINDS:
        node = _resolve(step["properties"][kind.key])
        types = node.get("type", [])
        assert kind.shape == "text" or shapes[kind.shape] in types, kind.key
    assert set(SCHEMA["properties"]) - {"name", "stages"} == model.CLOUD_INIT_KEYS


def test_every_kind_is_run_or_skipped_with_a_reason() -> None:
    for kind in model.KINDS:
        if kind.unsupported is None:
            assert callable(handler(kind.key)), kind.key
        else:
            assert kind.key not in HANDLERS and kind.unsupported in model.HINTS
    assert set(HANDLERS) <= set(model.KIND_BY_KEY)


def test_validate_reads_its_stages_and_cloud_init_keys_from_the_model() -> None:
    assert cloudconfig.KNOWN_STAGES is model.KNOWN_STAGES
    assert cloudconfig.CLOUD_INIT_KEYS is model.CLOUD_INIT_KEYS


def test_validate_warns_about_what_the_runner_skips(tmp_path: Path) -> None:
    path = tmp_path / "skipped.yaml"
    path.write_text(
        "stages:\n"
        "  network:\n"
        "    - name: fetch\n"
        "      downloads: [{path: /tmp/x, url: 'http://192.0.2.1/x'}]\n"
        "      packages: {install: [htop]}\n"
        "      authorized_keys: {root: ['github:someone', 'ssh-ed25519 AAAA me@x']}\n"
        "      layout: {add_partitions: [{fsLabel: X}]}\n"
        "      files: [{path: /etc/ok, content: ok, permissions: 0644}]\n"
    )
    report = validate_paths([path], as_kind="cloud-config")
    assert report.ok
    found = [(d.line, d.column, d.message.split(":")[0]) for d in report.warnings
             if d.rule == "yip-unsupported"]  # fmt: skip
    assert found == [
        (4, 7, "downloads needs the network at boot"),
        (5, 7, "packages changes packages, which an immutable image does not do at boot"),
        (6, 32, "SSH key github"),
        (7, 16, "layout.add_partitions creates or reformats partitions"),
    ]
    assert all(d.hint for d in report.warnings)
    assert RULES["yip-unsupported"].severity == "warning"
