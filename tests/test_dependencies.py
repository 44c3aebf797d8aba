"""The security-critical dependencies are bounded to majors that were tested, and the
installed ones are inside the bounds (an unbounded `tuf>=5` took any future major)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
SECURITY_CRITICAL = (
    "cryptography",
    "pynacl",
    "requests",
    "urllib3",
    "tuf",
    "securesystemslib",
    "sigstore",
    "rfc8785",
)


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    parsed = (Requirement(text) for text in project["dependencies"])
    return {requirement.name.lower(): requirement for requirement in parsed}


@pytest.mark.parametrize("name", SECURITY_CRITICAL)
def test_security_critical_dependency_has_a_major_bound(name: str) -> None:
    requirement = _requirements()[name]
    uppers = [Version(spec.version) for spec in requirement.specifier if spec.operator == "<"]
    assert uppers, f"{requirement} has no upper bound"
    installed = Version(metadata.version(name))
    assert installed in requirement.specifier, f"{name} {installed} is outside {requirement}"
