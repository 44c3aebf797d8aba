"""The agent configuration (``agent/config.yaml``), validated against
``schemas/agent.schema.json`` and turned into typed settings."""

from __future__ import annotations

import platform as host_platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import ConfigError
from cosgitops.model import Identity

KIND = "AgentConfig"
API_VERSION = "cosgitops/v1"

_MACHINE_TO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_platform_name() -> str:
    machine = host_platform.machine().lower()
    return f"linux/{_MACHINE_TO_ARCH.get(machine, machine)}"


@dataclass(frozen=True)
class HealthCheck:
    name: str
    command: tuple[str, ...] | str
    timeout_seconds: float = 60.0

    def to_json(self) -> dict[str, Any]:
        command: Any = self.command if isinstance(self.command, str) else list(self.command)
        return {"name": self.name, "command": command, "timeoutSeconds": self.timeout_seconds}


# The agent trusts keyless signers in the same form cosgitops.yaml declares them.
TrustedIdentity = Identity


@dataclass(frozen=True)
class AgentConfig:
    derivative: str
    index_url: str
    keys: tuple[str, ...] = ()  # as written (relative to the agent folder or absolute)
    identities: tuple[TrustedIdentity, ...] = ()
    trusted_root: str | None = None
    require_boot_test: bool = False  # refuse releases without a passing boot attestation
    signed_identity: str = "repository"  # repository | digest (what a signature must bind)
    channel: str = "stable"
    platform: str = field(default_factory=host_platform_name)
    index_ca_file: str | None = None
    registry_insecure: bool = False
    registry_ca_file: str | None = None
    slot_format: str = "dir"
    slot_backend: str = "folder"  # folder | cos-disk
    update_interval_seconds: float = 3600.0
    update_reboot: bool = True
    apply_method: str = "builtin"
    elemental_command: str = "elemental"
    max_attempts: int = 3
    checks: tuple[HealthCheck, ...] = ()
    wariness: float | None = None

    def resolve(self, agent_dir: Path, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else agent_dir / path

    def to_json(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "derivative": self.derivative,
            "channel": self.channel,
            "platform": self.platform,
            "index": {"url": self.index_url},
            "trust": {},
            "registry": {"insecure": self.registry_insecure},
            "slots": {"format": self.slot_format},
            "updates": {
                "intervalSeconds": self.update_interval_seconds,
                "reboot": self.update_reboot,
            },
            "apply": {"method": self.apply_method, "elementalCommand": self.elemental_command},
            "boot": {
                "maxAttempts": self.max_attempts,
                "checks": [check.to_json() for check in self.checks],
            },
        }
        if self.slot_backend != "folder":
            spec["slots"]["backend"] = self.slot_backend
        if self.index_ca_file:
            spec["index"]["caFile"] = self.index_ca_file
        if self.keys:
            spec["trust"]["keys"] = list(self.keys)
        if self.identities:
            spec["trust"]["identities"] = [identity.to_json() for identity in self.identities]
        if self.trusted_root:
            spec["trust"]["trustedRoot"] = self.trusted_root
        if self.require_boot_test:
            spec["trust"]["requireBootTest"] = True
        if self.signed_identity != "repository":
            spec["trust"]["signedIdentity"] = self.signed_identity
        if self.registry_ca_file:
            spec["registry"]["caFile"] = self.registry_ca_file
        if self.wariness is not None:
            spec["rollout"] = {"wariness": self.wariness}
        return {"apiVersion": API_VERSION, "kind": KIND, "spec": spec}

    @classmethod
    def from_data(cls, data: Any, *, source: str = "agent config") -> AgentConfig:
        validate_agent_config(data, source=source)
        spec: Mapping[str, Any] = data["spec"]
        index = spec["index"]
        trust = spec["trust"]
        registry = spec.get("registry") or {}
        boot = spec.get("boot") or {}
        apply = spec.get("apply") or {}
        return cls(
            derivative=spec["derivative"],
            channel=spec.get("channel", "stable"),
            platform=spec.get("platform") or host_platform_name(),
            index_url=index["url"],
            index_ca_file=index.get("caFile"),
            keys=tuple(trust.get("keys") or ()),
            identities=tuple(Identity.from_json(item) for item in trust.get("identities") or ()),
            trusted_root=trust.get("trustedRoot"),
            require_boot_test=bool(trust.get("requireBootTest", False)),
            signed_identity=trust.get("signedIdentity", "repository"),
            registry_insecure=bool(registry.get("insecure", False)),
            registry_ca_file=registry.get("caFile"),
            slot_format=(spec.get("slots") or {}).get("format", "dir"),
            slot_backend=(spec.get("slots") or {}).get("backend", "folder"),
            update_interval_seconds=float((spec.get("updates") or {}).get("intervalSeconds", 3600)),
            update_reboot=bool((spec.get("updates") or {}).get("reboot", True)),
            apply_method=apply.get("method", "builtin"),
            elemental_command=apply.get("elementalCommand", "elemental"),
            max_attempts=int(boot.get("maxAttempts", 3)),
            checks=tuple(
                HealthCheck(
                    name=item["name"],
                    command=item["command"]
                    if isinstance(item["command"], str)
                    else tuple(item["command"]),
                    timeout_seconds=float(item.get("timeoutSeconds", 60)),
                )
                for item in boot.get("checks") or ()
            ),
            wariness=(spec.get("rollout") or {}).get("wariness"),
        )


def validate_agent_config(data: Any, *, source: str = "agent config") -> None:
    """Raise :class:`ConfigError` naming the first problems against the JSON schema."""
    from cosgitops.validate.schema import pointer_of, schema_for

    issues = sorted(schema_for("agent").validate(data), key=lambda issue: pointer_of(issue.path))
    if issues:
        lines = [f"{pointer_of(issue.path) or '/'}: {issue.message}" for issue in issues[:5]]
        raise ConfigError(
            f"{source} is invalid: " + "; ".join(lines),
            hint="see schemas/agent.schema.json for every setting",
        )


def load_agent_config(path: Path, limits: Limits = DEFAULT_LIMITS) -> AgentConfig:
    from cosgitops.source import load_yaml_bytes

    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path} does not exist",
            hint="set the device up first with `cosgitops device install` or `device init`",
        ) from exc
    if len(raw) > limits.agent_config_max_bytes:
        raise ConfigError(f"{path} is larger than {limits.agent_config_max_bytes} bytes")
    # the same safe loader as every other YAML file: duplicate keys, alias bombs, depth
    # and encoding problems are refused with a file:line:col location
    document = load_yaml_bytes(raw, name=str(path), limits=limits)
    return AgentConfig.from_data(document.value, source=str(path))


def dump_agent_config(config: AgentConfig) -> bytes:
    import yaml

    data = config.to_json()
    validate_agent_config(data)
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    header = "# yaml-language-server: $schema=https://cosgitops.dev/schemas/agent.schema.json\n"
    return (header + text).encode("utf-8")
