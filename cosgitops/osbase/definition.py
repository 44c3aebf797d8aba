"""``bases/<name>/base.yaml`` (kind: Base): a bootable OS base defined in Git.

The typed :class:`BaseDefinition` is built only from a document that passed
``schemas/base.schema.json``; :func:`load_base` is the way in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import ConfigError, NotFoundError

BASES_DIR = "bases"
BASE_FILE = "base.yaml"
KIND = "Base"

# What every cosgitops base holds, whatever the definition adds: the kernel and the
# boot chain, systemd, the tools the boot script and the agent run, and python3 for
# the agent itself.
REQUIRED_PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "kmod",
    "initramfs-tools",
    "busybox",
    "util-linux",
    "e2fsprogs",
    "dbus",
    "python3",
    "python3-venv",
    "squashfs-tools-ng",
    "grub-efi-amd64-bin",
    "procps",
    "passwd",
    "iproute2",
    "libcap2-bin",
)

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"


def default_mirrors(suite: str) -> tuple[str, ...]:
    return (
        f"deb {DEFAULT_MIRROR} {suite} main",
        f"deb {DEFAULT_MIRROR} {suite}-updates main",
        f"deb {DEFAULT_SECURITY_MIRROR} {suite}-security main",
    )


@dataclass(frozen=True)
class Trim:
    docs: bool = True
    locales: bool = True
    kernel_modules: bool = True


@dataclass(frozen=True)
class BaseDefinition:
    folder: Path
    name: str
    version: str
    description: str = ""
    distribution: str = "debian"
    suite: str = "bookworm"
    architecture: str = "amd64"
    mirrors: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    trim: Trim = field(default_factory=Trim)
    os_release: Mapping[str, str] = field(default_factory=dict)
    kernel_cmdline: str = ""

    @property
    def platform(self) -> str:
        return f"linux/{self.architecture}"

    @property
    def sources(self) -> tuple[str, ...]:
        return self.mirrors or default_mirrors(self.suite)

    @property
    def all_packages(self) -> tuple[str, ...]:
        """The required packages, then the definition's own, each once."""
        seen: dict[str, None] = dict.fromkeys(REQUIRED_PACKAGES)
        seen.update(dict.fromkeys(self.packages))
        return tuple(seen)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], folder: Path) -> BaseDefinition:
        metadata = data.get("metadata") or {}
        spec = data.get("spec") or {}
        trim = spec.get("trim") or {}
        return cls(
            folder=folder,
            name=str(metadata["name"]),
            description=str(metadata.get("description", "")),
            version=str(spec["version"]),
            distribution=str(spec.get("distribution", "debian")),
            suite=str(spec.get("suite", "bookworm")),
            architecture=str(spec.get("architecture", "amd64")),
            mirrors=tuple(str(line) for line in spec.get("mirrors") or ()),
            packages=tuple(str(name) for name in spec.get("packages") or ()),
            trim=Trim(
                docs=bool(trim.get("docs", True)),
                locales=bool(trim.get("locales", True)),
                kernel_modules=bool(trim.get("kernelModules", True)),
            ),
            os_release={str(k): str(v) for k, v in (spec.get("osRelease") or {}).items()},
            kernel_cmdline=str(spec.get("kernelCmdline", "")),
        )


def _check_schema(document: Any, path: Path) -> None:
    """Raise :class:`ConfigError` at the first schema problem, with its line and column."""
    from cosgitops.validate.schema import pointer_of, schema_for

    issues = sorted(schema_for("base").validate(document.value), key=lambda i: pointer_of(i.path))
    if not issues:
        return
    first = issues[0]
    where = document.locate(first.path, key=first.at_key)
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    raise ConfigError(
        f"{path}:{where.line}:{where.column}: {first.message}{more}",
        hint=first.hint or "see schemas/base.schema.json; `cosgitops validate` lists every problem",
    )


def base_file(root: Path, name: str) -> Path:
    return root / BASES_DIR / name / BASE_FILE


def list_bases(root: Path) -> list[str]:
    folder = root / BASES_DIR
    if not folder.is_dir():
        return []
    return sorted(child.name for child in folder.iterdir() if (child / BASE_FILE).is_file())


def load_base(root: Path, name: str, limits: Limits = DEFAULT_LIMITS) -> BaseDefinition:
    """Read and validate ``bases/<name>/base.yaml`` under the repository ``root``."""
    from cosgitops.source import load_yaml_bytes

    path = base_file(root, name)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        known = list_bases(root)
        raise NotFoundError(
            f"there is no base {name!r} ({path} does not exist)",
            hint=f"the bases here are: {', '.join(known)}"
            if known
            else "create bases/<name>/base.yaml (`cosgitops init` scaffolds one)",
        ) from None
    document = load_yaml_bytes(raw, name=str(path), limits=limits)
    _check_schema(document, path)
    definition = BaseDefinition.from_data(document.value, path.parent)
    if definition.name != path.parent.name:
        raise ConfigError(
            f"{path}: metadata.name is {definition.name!r} but the folder is {path.parent.name!r}",
            hint="a base's name must equal its folder name under bases/",
        )
    return definition
