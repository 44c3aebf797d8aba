"""Debian trees for tests that need a real root (users made by useradd, units enabled by
systemctl, ...), built offline by mmdebstrap from the flat mirror that ``.ci/run``
prepares (``.ci/prepare-debian-mirror``).

Use the fixtures in a test module or conftest::

    from tests.helpers.debian import debian_mirror, debian_base_tree, debian_root  # noqa: F401

``debian_mirror``: the mirror folder (``$COSGITOPS_TEST_DEBIAN_MIRROR``, default
``.ci/cache/debian-mirror`` of this checkout or of the main checkout of a git
worktree); a test fails in CI when it is missing and is skipped elsewhere.
``debian_base_tree``: a minbase tree built once per session (about 20 s).
``debian_root``: a private copy of it for one test (an overlay mount, or ``cp -a`` where
overlays are not available), thrown away afterwards. Building needs root.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.helpers.tools import in_ci, require, require_root

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIRROR_ENV = "COSGITOPS_TEST_DEBIAN_MIRROR"
MIRROR_SUBDIR = Path(".ci") / "cache" / "debian-mirror"
SUITE = "bookworm"
# what the stage tests need from a tree; every package is in .ci/debian-packages.txt
BASE_PACKAGES = ("systemd", "passwd", "procps", "kmod", "iproute2")


def _main_checkout() -> Path | None:
    """The main checkout when this project is a git worktree (.git is then a file)."""
    git = PROJECT_ROOT / ".git"
    if not git.is_file():
        return None
    text = git.read_text(encoding="utf-8", errors="replace").strip()
    if not text.startswith("gitdir:"):
        return None
    gitdir = Path(text.partition(":")[2].strip())
    # <main>/.git/worktrees/<name>
    return gitdir.parent.parent.parent if gitdir.parent.name == "worktrees" else None


def mirror_path() -> Path:
    configured = os.environ.get(MIRROR_ENV)
    if configured:
        return Path(configured)
    local = PROJECT_ROOT / MIRROR_SUBDIR
    main = _main_checkout()
    if not (local / "Release").is_file() and main is not None and (main / MIRROR_SUBDIR).is_dir():
        return main / MIRROR_SUBDIR
    return local


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI must provide it: .ci/run prepares it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def debian_mirror() -> Path:
    mirror = mirror_path()
    if not (mirror / "Release").is_file() or not (mirror / "Packages").is_file():
        _unavailable(
            f"no offline Debian mirror at {mirror}: run .ci/prepare-debian-mirror {mirror} "
            f"or set ${MIRROR_ENV}"
        )
    return mirror


def build_tree(
    mirror: Path, target: Path, packages: Sequence[str] = BASE_PACKAGES, *, variant: str = "minbase"
) -> Path:
    """A Debian tree at ``target`` built offline from ``mirror`` by mmdebstrap."""
    require_root()
    require("mmdebstrap")
    command = [
        "mmdebstrap",
        "--quiet",
        f"--variant={variant}",
        f"--include={','.join(packages)}",
        SUITE,
        str(target),
        f"deb [trusted=yes] copy://{mirror} ./",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"mmdebstrap failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return target


@pytest.fixture(scope="session")
def debian_base_tree(debian_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal Debian tree (minbase + systemd, passwd, procps, kmod, iproute2), built
    once per session. Never change it: use ``debian_root``."""
    return build_tree(debian_mirror, tmp_path_factory.mktemp("debian") / "tree")


@contextlib.contextmanager
def private_copy(base: Path, work: Path) -> Iterator[Path]:
    """A writable copy of ``base`` under ``work``: an overlay mount when the kernel
    allows it (instant), else ``cp -a``."""
    upper, scratch, merged = work / "upper", work / "work", work / "root"
    for folder in (upper, scratch, merged):
        folder.mkdir(parents=True)
    options = f"lowerdir={base},upperdir={upper},workdir={scratch}"
    mounted = (
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    if not mounted:
        merged.rmdir()
        subprocess.run(["cp", "-a", str(base), str(merged)], check=True)
    try:
        yield merged
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(merged)], check=False)


@pytest.fixture
def debian_root(debian_base_tree: Path, tmp_path: Path) -> Iterator[Path]:
    """A private, writable Debian root for one test."""
    with private_copy(debian_base_tree, tmp_path / "debian") as root:
        yield root
