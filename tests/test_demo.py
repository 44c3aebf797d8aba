"""`cosgitops demo`, the README's main command: in a fresh virtual environment built from
this checkout's wheel, with no docker socket and no network, it runs the whole loop and
leaves repo/, public/ and device/ behind."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT


def _no_network_prefix() -> list[str]:
    """Run in a new network namespace (no interfaces up) when we may; CI runs as root."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], check=False).returncode == 0:
        return [unshare, "-n"]
    if os.environ.get("CI"):
        pytest.fail("cannot create a network namespace (unshare -n) to seal the demo off")
    return []


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory, project_wheel: Path) -> Path:
    """A new venv with cosgitops installed from a wheel of this checkout, offline.

    Its dependencies come from the test environment through a .pth file, since nothing
    may be downloaded; cosgitops itself (code, schemas, templates) comes only from the
    wheel, so this also proves the wheel carries everything the demo needs.
    """
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    purelib = Path(
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    )
    outer = [Path(p) for p in site.getsitepackages()] or [Path(sysconfig.get_paths()["purelib"])]
    (purelib / "outer-deps.pth").write_text("".join(f"{p}\n" for p in outer))
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(project_wheel),
        ],
        check=True,
        timeout=300,
        env={**os.environ, "HOME": str(root), "PIP_NO_CACHE_DIR": "1"},
    )
    return venv


def test_demo_runs_offline_without_docker_in_a_fresh_venv(fresh_venv: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {
        "PATH": f"{fresh_venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ["HOME"],
        "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}",
        "GIT_CONFIG_GLOBAL": os.environ["GIT_CONFIG_GLOBAL"],
        "GIT_CONFIG_NOSYSTEM": "1",
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-cache"),
        "LANG": "C.UTF-8",
    }
    # the editable install of the outer environment must not shadow the wheel
    env["PYTHONNOUSERSITE"] = "1"
    command = [*_no_network_prefix(), str(fresh_venv / "bin" / "cosgitops"), "demo", str(out)]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    # the story as narrated
    assert "refused by the hook" in result.stdout
    assert "upgrade 1.0.0 -> 1.1.0" in result.stdout
    assert "rolled-back" in result.stdout

    # the three folders DESIGN.md promises, with real content
    repo, public, device = out / "repo", out / "public", out / "device"
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert log == ["example 1.2.0: degraded health", "example 1.1.0: new motd", "example 1.0.0"]
    assert (repo / ".git" / "hooks" / "pre-commit").is_file()
    assert (public / "metadata" / "1.root.json").is_file()
    assert (public / "metadata" / "timestamp.json").is_file()
    # Local OCI layouts are no images an Elemental cluster can pull: the channel is empty.
    channel = json.loads((public / "channels" / "example" / "stable.json").read_text())
    assert channel == []

    # the cosgitops that ran is the wheel's, not the checkout's
    which = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", "import cosgitops; print(cosgitops.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert str(PROJECT_ROOT) not in which

    status = subprocess.run(
        [
            str(fresh_venv / "bin" / "cosgitops"),
            "device",
            "status",
            "--root",
            str(device),
            "--format",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["active"]["version"] == "1.1.0"
    assert state["passive"] is None  # the rejected 1.2.0 slot is discarded
    assert state["recovery"]["version"] == "1.0.0"
    assert state["pending"] is False
    assert [r["version"] for r in state["rejected"]] == ["1.2.0"]
    assert (device / "state" / "active" / "etc" / "example" / "health").read_text() == "ok\n"


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    from cosgitops.demo import run_demo
    from cosgitops.errors import UsageError

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not empty"):
        run_demo(tmp_path)
    with pytest.raises(UsageError, match="which no demo made"):
        run_demo(tmp_path, force=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_demo_folder_is_replaced_only_when_it_holds_a_demo(tmp_path: Path) -> None:
    from cosgitops.demo import prepare_demo_directory
    from cosgitops.errors import UsageError

    parts = ("repo", "disk.img", "serial")
    folder = tmp_path / "demo"
    (folder / "repo" / "sub").mkdir(parents=True)
    (folder / "disk.img").write_bytes(b"disk")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    (folder / "serial").symlink_to(outside)
    with pytest.raises(UsageError, match="is not empty"):
        prepare_demo_directory(folder, False, parts, "the demo's files")
    (folder / "notes.txt").write_text("a user's file")
    with pytest.raises(UsageError, match=r"notes\.txt, which no demo made") as refused:
        prepare_demo_directory(folder, True, parts, "the demo's files")
    assert refused.value.hint == "--force only replaces the demo's files"
    (folder / "notes.txt").unlink()
    prepare_demo_directory(folder, True, parts, "the demo's files")
    assert folder.is_dir() and not any(folder.iterdir())
    assert (outside / "keep").read_text() == "mine", "a linked part is unlinked, not followed"
