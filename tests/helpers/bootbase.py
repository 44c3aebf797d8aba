"""A repository with a bootable base, built once per test session from the offline mirror.

Building a base takes a couple of minutes (mmdebstrap, then packing), so the boot
tests share one: :func:`make_base_repository` writes the repository and
:func:`build_shared_base` builds it, both used by the session fixture ``built_base``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from cosgitops.osbase.build import BaseBuildResult
from tests.helpers.tools import in_ci, require, require_root

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
MIRROR_ENV = "COSGITOPS_TEST_DEBIAN_MIRROR"
WHEELHOUSE_ENV = "COSGITOPS_WHEELHOUSE"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "cosgitops test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "cosgitops test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}

BASE_NAME = "debian"
BASE_YAML = """\
apiVersion: cosgitops/v1
kind: Base
metadata:
  name: debian
  description: Debian 12 for the boot tests
spec:
  version: 1.0.0
  packages: [iputils-ping]
  kernelCmdline: quiet
"""  # a stand-alone definition; the shared base is the scaffold's own bases/debian


@dataclass(frozen=True)
class BuiltBase:
    repo: Path
    result: BaseBuildResult
    sources: tuple[str, ...]
    wheelhouse: Path
    cache: Path  # the OCI layouts bases are built into (demo --boot's cache_dir)


def git(repo: Path, *args: str) -> str:
    # session fixtures run outside the sealed per-test environment: give git its own
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **_GIT_ENV},
    ).stdout


def make_base_repository(repo: Path, base_yaml: str | None = None) -> Path:
    """A scaffolded repository; its bases/debian is the scaffold's unless given."""
    from cosgitops.scaffold import init_repository

    init_repository(repo, name="boot-fleet")
    if base_yaml is not None:
        (repo / "bases" / BASE_NAME / "base.yaml").write_text(base_yaml)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a fleet with a bootable base")
    return repo


def build_shared_base(
    repo: Path,
    sources: Sequence[str],
    wheelhouse: Path,
    *,
    reuse: bool = True,
    cache: Path | None = None,
) -> BaseBuildResult:
    from cosgitops.commands.common import load_repository_at
    from cosgitops.osbase.build import build_base

    repository, _derivatives = load_repository_at(repo)
    # in the cache, where demo --boot and the boot tests look for it (as `cache_dir`)
    target = f"oci:{cache / BASE_NAME}" if cache is not None else None
    return build_base(
        repository, BASE_NAME, wheelhouse=wheelhouse, sources=sources, reuse=reuse, target=target
    )


def _needed(path: Path, what: str) -> Path:
    if path.is_dir():
        return path
    message = f"{what} {path} is missing (.ci/run prepares it)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def debian_mirror_dir() -> Path:
    """The flat apt repository `.ci/prepare-debian-mirror` made (no network needed)."""
    default = PROJECT_ROOT / ".ci" / "cache" / "debian-mirror"
    mirror = _needed(Path(os.environ.get(MIRROR_ENV) or default), "the offline Debian mirror")
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


@pytest.fixture(scope="session")
def built_base(
    tmp_path_factory: pytest.TempPathFactory,
    debian_sources: list[str],
    agent_wheelhouse: Path,
) -> BuiltBase:
    """The boot tests' base, built once per session (root, a couple of minutes)."""
    require_root()
    require("mmdebstrap")
    work = tmp_path_factory.mktemp("base")
    repo = make_base_repository(work / "repo")
    result = build_shared_base(repo, debian_sources, agent_wheelhouse, cache=work / "cache")
    return BuiltBase(repo, result, tuple(debian_sources), agent_wheelhouse, work / "cache")
