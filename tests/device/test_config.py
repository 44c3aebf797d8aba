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
from cosgitops.errors import ConfigError, SourceError
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


BILLION_LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]\n" for n in range(1, 9)
)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("spec: [unclosed\n", 2),
        # regression: plain yaml.safe_load kept the second `derivative` silently
        (
            "apiVersion: cosgitops/v1\nkind: AgentConfig\nspec:\n  derivative: edge\n"
            "  derivative: other\n  index: {url: /x}\n  trust: {keys: [k.pub]}\n",
            5,
        ),
        (BILLION_LAUGHS, 6),
    ],
    ids=["syntax", "duplicate-key", "alias-bomb"],
)
def test_unsafe_yaml_in_the_config_is_refused_with_a_location(
    tmp_path: Path, text: str, line: int
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(SourceError) as info:
        load_agent_config(path)
    assert info.value.location is not None
    assert info.value.location.startswith(f"{path}:{line}:")
