"""Test-wide fixtures. Every test runs sealed: HOME, DOCKER_CONFIG and git's global
config point into a temporary folder, and nothing reaches beyond loopback."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.bootbase import (  # noqa: F401 - session fixtures for the boot tests
    agent_wheelhouse,
    built_base,
    debian_mirror_dir,
    debian_sources,
)
from tests.helpers.services import RegistryServer, StaticServer, TestCA

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Real files from other projects (see its README), beside the checkout in this project's
# CI and its sessions, absent from a user's clone. Tests reach ../shared only through the
# `interop` fixture.
INTEROP = PROJECT_ROOT.parent / "shared" / "interop"
INTEROP_MISSING = "the interop data folder ../shared/interop is not present"

_SEALED_ENV = {
    "GIT_AUTHOR_NAME": "cosgitops test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "cosgitops test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "NO_COLOR": "1",
}
_DROPPED_ENV = ("COSIGN_PASSWORD", "SOURCE_DATE_EPOCH", "GITHUB_STEP_SUMMARY", "GITHUB_ACTIONS")


@pytest.fixture(autouse=True)
def sealed_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    os.environ.update(_SEALED_ENV)
    os.environ["HOME"] = str(home)
    os.environ["DOCKER_CONFIG"] = str(home / ".docker")
    os.environ["XDG_CONFIG_HOME"] = str(home / ".config")
    os.environ["XDG_CACHE_HOME"] = str(home / ".cache")
    os.environ["PRE_COMMIT_HOME"] = str(home / ".cache" / "pre-commit")
    os.environ["GIT_CONFIG_GLOBAL"] = str(home / ".gitconfig")
    os.environ["COSGITOPS_CRASH_DIR"] = str(home)
    for name in _DROPPED_ENV:
        os.environ.pop(name, None)
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    try:
        yield home
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def interop() -> Path:
    """The real-world files in ../shared/interop. Where they are absent the test is
    skipped, except in this project's CI (CI=true), which always has them."""
    if not INTEROP.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{INTEROP_MISSING} ({INTEROP}); this project's CI must have it")
        pytest.skip(INTEROP_MISSING)
    return INTEROP


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A plain-HTTP docker-registry on loopback."""
    with RegistryServer(tmp_path / "registry") as server:
        yield server


@pytest.fixture
def test_ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def static_server_factory() -> Iterator[type[StaticServer]]:
    servers: list[StaticServer] = []

    class _Tracked(StaticServer):
        def __init__(self, directory: Path) -> None:
            super().__init__(directory)
            servers.append(self)

    yield _Tracked
    for server in servers:
        with contextlib.suppress(Exception):
            server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built once, offline (what `pip install .` installs)."""
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "HOME": str(out), "PIP_NO_CACHE_DIR": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out), str(PROJECT_ROOT)],
        check=True, timeout=300, cwd=out, env=env,
    )  # fmt: skip
    return next(out.glob("cosgitops-*.whl"))
