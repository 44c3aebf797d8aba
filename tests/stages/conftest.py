"""Fixtures of the stage tests: a Debian root per test (tests/helpers/debian.py) and a
helper that writes cloud-config files and runs a stage on that root."""

from __future__ import annotations

import hashlib
import os
import stat
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cosgitops.stages.report import RunReport
from cosgitops.stages.runner import run_stage
from tests.helpers.debian import debian_base_tree, debian_mirror, debian_root  # noqa: F401

MACHINE_ID = "0123456789abcdef0123456789abcdef"

Stage = Callable[..., RunReport]


@pytest.fixture
def root(debian_root: Path) -> Path:  # noqa: F811
    """A Debian root with a machine id, as a booted system has one."""
    (debian_root / "etc" / "machine-id").write_text(MACHINE_ID + "\n")
    return debian_root


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cloud-config"
    folder.mkdir()
    return folder


@pytest.fixture
def stage(root: Path, config_dir: Path) -> Stage:
    """``stage(yaml_text, name="boot", file="50_test.yaml")``: write the file, run the
    stage on the root with only that folder, return the report."""

    def run(
        document: str | None = None,
        name: str = "boot",
        file: str = "50_test.yaml",
        **options: object,
    ) -> RunReport:
        if document is not None:
            (config_dir / file).write_text(textwrap.dedent(document).lstrip("\n"))
        return run_stage(name, root=root, config_dirs=[config_dir], default_dirs=False, **options)  # type: ignore[arg-type]

    return run


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry that differs from the base tree (the overlay's upper folder, or the
    whole root for a plain copy): type, mode, owner, mtime and a hash of the content.
    The run records under /run/cosgitops are left out: each run rewrites its own."""
    upper = root.parent / "upper"
    top = upper if upper.is_dir() else root
    state: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            relative = str(path.relative_to(top))
            if relative == "run" or relative.startswith("run/cosgitops"):
                continue
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                content: object = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            else:
                content = None
            state[relative] = (
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                info.st_mtime_ns,
                content,
            )
    return state


def statuses(report: RunReport) -> list[tuple[str, str]]:
    return [(step.name, step.status) for step in report.steps]
