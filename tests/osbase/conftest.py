"""Fixtures for building bases: the offline Debian mirror and the agent wheelhouse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
MIRROR_ENV = "COSGITOPS_TEST_DEBIAN_MIRROR"
WHEELHOUSE_ENV = "COSGITOPS_WHEELHOUSE"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _needed(path: Path, what: str) -> Path:
    if path.is_dir():
        return path
    message = f"{what} {path} is missing (.ci/run prepares it)"
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def debian_mirror_dir() -> Path:
    """The flat apt repository `.ci/prepare-debian-mirror` made (no network needed)."""
    default = PROJECT_ROOT / ".ci" / "cache" / "debian-mirror"
    path = Path(os.environ.get(MIRROR_ENV) or default)
    mirror = _needed(path, "the offline Debian mirror")
    if not (mirror / "Packages").is_file():
        pytest.fail(f"{mirror} holds no Packages index")
    return mirror


@pytest.fixture(scope="session")
def debian_sources(debian_mirror_dir: Path) -> list[str]:
    return [f"deb [trusted=yes] copy://{debian_mirror_dir} ./"]


@pytest.fixture(scope="session")
def agent_wheelhouse() -> Path:
    default = PROJECT_ROOT / ".ci" / "cache" / "wheelhouse"
    return _needed(Path(os.environ.get(WHEELHOUSE_ENV) or default), "the agent wheelhouse")
