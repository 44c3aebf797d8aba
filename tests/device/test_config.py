from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from cosgitops.device.config import (
    AgentConfig,
    HealthCheck,
    TrustedIdentity,
    dump_agent_config,
    load_agent_config,
)
from cosgitops.errors import ConfigError
from cosgitops.resources import schema_path


def test_schema_is_valid_and_its_examples_pass() -> None:
    schema = json.loads(schema_path("agent").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith("agent.schema.json")
    for example in schema["examples"]:
        jsonschema.Draft202012Validator(schema).validate(example)


def test_round_trip(tmp_path: Path) -> None:
    config = AgentConfig(
        derivative="edge-gateway",
        index_url="file:///srv/public",
        keys=("cosign.pub",),
        identities=(TrustedIdentity(identity="me@example.com", issuer="https://issuer"),),
        channel="beta",
        platform="linux/arm64",
        registry_insecure=True,
        slot_format="squashfs",
        max_attempts=2,
        checks=(HealthCheck("web", ("true",), 5.0), HealthCheck("sh", "exit 0")),
        wariness=0.25,
    )
    path = tmp_path / "config.yaml"
    path.write_bytes(dump_agent_config(config))
    assert path.read_text().startswith("# yaml-language-server: $schema=")
    assert load_agent_config(path) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: cosgitops/v1\nkind: AgentConfig\nspec: {}\n", "derivative"),
        (
            "apiVersion: cosgitops/v1\nkind: AgentConfig\nspec:\n  derivative: Bad_Name\n"
            "  index: {url: /x}\n  trust: {keys: [k.pub]}\n",
            "/spec/derivative",
        ),
        (
            "apiVersion: cosgitops/v1\nkind: AgentConfig\nspec:\n  derivative: edge\n"
            "  index: {url: /x}\n  trust: {}\n",
            "/spec/trust",
        ),
        (
            "apiVersion: cosgitops/v1\nkind: AgentConfig\nspec:\n  derivative: edge\n"
            "  index: {url: /x}\n  trust: {keys: [k.pub]}\n  boot: {maxAttempts: 0}\n",
            "maxAttempts",
        ),
        ("spec: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_configs_are_refused_with_a_pointer(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_agent_config(path)


def test_missing_config_hints_at_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_agent_config(tmp_path / "nope.yaml")
    assert info.value.hint is not None and "install" in info.value.hint
