"""Fault injection on a small file system (issue 13, kind 2 and "what must be shown").

The device root lives on a 24 MiB tmpfs in a private mount namespace (``unshare -m``);
the fleet and the index stay outside it. The disk is filled at several points of an
upgrade and of a reset (``COSGITOPS_FILL_AT``, also together with a SIGKILL), and a
sparse layer that unpacks to more than the disk holds is published; after each, the
command exits 0 or 1 (never 3), the active slot is intact, and once the filler is gone
``status``, ``upgrade`` and ``reset`` all work.

Needs root (mount); skipped with the reason when not root outside CI, failed in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.device.fleet import overlay_layer
from tests.device.fresh import FreshDevice, fresh_device

pytestmark = pytest.mark.slow

RUNNER = """
import json, os, subprocess, sys
spec = json.load(open(sys.argv[1]))
results = []
for step in spec["steps"]:
    if step.get("unfill"):
        if os.path.exists(spec["filler"]):
            os.unlink(spec["filler"])
        results.append({"unfill": True})
        continue
    env = dict(os.environ)
    env.update(step.get("env", {}))
    done = subprocess.run([sys.executable, "-m", "cosgitops", "device", *step["args"],
                           "--root", spec["root"]], env=env, capture_output=True, text=True)
    verify = subprocess.run([sys.executable, "-c", spec["verify"], spec["root"]],
                            capture_output=True, text=True)
    results.append({"args": step["args"], "env": step.get("env", {}), "code": done.returncode,
                    "out": done.stdout, "err": done.stderr, "active": verify.stdout.strip(),
                    "verifyErr": verify.stderr[-2000:]})
json.dump(results, open(spec["results"], "w"))
"""

# prints "<version> <ok|bad: reason>" for the active slot, re-hashed against its record
VERIFY = """
import sys
from cosgitops.device.agent import DeviceAgent
from cosgitops.device.slots import tree_digest
agent = DeviceAgent(sys.argv[1])
try:
    state = agent.journal.load()
    active = state.active
    digest = tree_digest(agent.device.root / active.storage)
    print(active.version, "ok" if digest == active.tree_digest else "bad: digest")
except Exception as exc:
    print("?", "bad:", type(exc).__name__, exc)
"""


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a small tmpfs in a private mount namespace"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    return None


@pytest.fixture
def small_disk() -> None:
    reason = _can_mount()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the fault-injection suite: {reason}")
        pytest.skip(reason)


def run_on_tmpfs(
    tmp_path: Path, pristine: Path, steps: list[dict[str, Any]], *, verify: str = VERIFY
) -> list[Any]:
    """Copy ``pristine`` (an installed device root) onto a fresh 24 MiB tmpfs and run
    ``steps`` there; returns one result per step."""
    mount = tmp_path / "disk"
    mount.mkdir()
    spec = {
        "root": str(mount / "device"),
        "filler": str(mount / "filler"),
        "results": str(tmp_path / "results.json"),
        "verify": verify,
        "steps": steps,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "runner.py").write_text(RUNNER)
    script = (
        f"mount -t tmpfs -o size=24m tmpfs {mount} && cp -a {pristine} {mount}/device && "
        f"exec {sys.executable} {tmp_path / 'runner.py'} {tmp_path / 'spec.json'}"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads((tmp_path / "results.json").read_text()))


def fill_at(step: str, *, crash: bool = False) -> dict[str, str]:
    env = {"COSGITOPS_FILL_AT": step, "COSGITOPS_FILL_PATH": "__FILLER__"}
    if crash:
        env["COSGITOPS_CRASH_AT"] = step
    return env


def scenario(step: str, operation: list[str], *, crash: bool = False) -> list[dict[str, Any]]:
    return [
        {"args": operation, "env": fill_at(step, crash=crash)},  # the disk fills here
        {"args": ["status"]},  # on the full disk: still works
        {"args": ["status", "--format", "json"]},
        {"unfill": True},
        {"args": ["status"]},
        {"args": ["upgrade"]},
        {"args": ["reset"]},
        {"args": ["status", "--verify"]},
    ]


UPGRADE_POINTS = [
    "journal-begun",
    "layer-download-partial",
    "layer-downloaded",
    "extract-partial",
    "layer-extracted",
    "transition-complete",
    "slot-stored",
]
RESET_POINTS = ["reset-begun", "reset-copied", "reset-stored"]


def _prepared(tmp_path: Path) -> tuple[Path, FreshDevice]:
    device = fresh_device(tmp_path / "world")
    # 1.1.0 brings 3 MiB of noise, so the fills land mid-download and mid-unpack
    device.release(
        "1.1.0",
        [device.base, overlay_layer("1.1.0", extra=os.urandom(3 * 1024 * 1024))],
    )
    return device.root, device


def _check(results: list[Any]) -> None:
    for number, result in enumerate(results):
        if result.get("unfill"):
            continue
        where = f"step {number} {result['args']} {result['env']}"
        assert "internal error" not in result["err"], (where, result["err"])
        assert result["code"] in (0, 1), (where, result)
        if result["code"] == 1:
            assert "error:" in result["err"] and "hint:" in result["err"], (where, result)
        assert result["active"].endswith(" ok"), (where, result["active"], result["verifyErr"])
    tail = [r for r in results if not r.get("unfill")][-5:]
    for result in tail[1:]:  # after the filler is gone: status, upgrade, reset, verify
        assert result["code"] == 0, result


@pytest.mark.usefixtures("small_disk")
@pytest.mark.parametrize("point", UPGRADE_POINTS + [f"{p}+kill" for p in UPGRADE_POINTS[3:]])
def test_disk_fills_during_an_upgrade(tmp_path: Path, point: str) -> None:
    root, _ = _prepared(tmp_path)
    step, crash = point.removesuffix("+kill"), point.endswith("+kill")
    steps = scenario(step, ["upgrade"], crash=crash)
    mount_filler = str(tmp_path / "disk" / "filler")
    for item in steps:
        if "env" in item and "COSGITOPS_FILL_PATH" in item["env"]:
            item["env"]["COSGITOPS_FILL_PATH"] = mount_filler
    results = run_on_tmpfs(tmp_path, root, steps)
    first = results[0]
    if crash:
        assert first["code"] == -9, first
    else:
        assert first["code"] == 1 and "free" in first["err"], first
    assert results[1]["code"] == 0, results[1]  # status on the full disk
    _check([r for r in results if r.get("code") != -9])
    state = json.loads(results[2]["out"])
    assert state["active"]["version"] == "1.0.0", state


@pytest.mark.usefixtures("small_disk")
@pytest.mark.parametrize("point", RESET_POINTS)
def test_disk_fills_during_a_reset(tmp_path: Path, point: str) -> None:
    root, _ = _prepared(tmp_path)
    steps = scenario(point, ["reset"])
    mount_filler = str(tmp_path / "disk" / "filler")
    steps[0]["env"]["COSGITOPS_FILL_PATH"] = mount_filler
    results = run_on_tmpfs(tmp_path, root, steps)
    assert results[0]["code"] in (0, 1), results[0]
    if results[0]["code"] == 1:
        assert "free" in results[0]["err"], results[0]
    assert results[1]["code"] == 0, results[1]
    _check(results)


@pytest.mark.usefixtures("small_disk")
def test_sparse_layer_larger_than_the_disk(tmp_path: Path) -> None:
    device = fresh_device(tmp_path / "world")
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    with (sparse / "huge.img").open("wb") as handle:
        handle.truncate(200 * 1024 * 1024)  # 200 MiB of holes, a few bytes of data
        handle.seek(100 * 1024 * 1024)
        handle.write(b"data")
    tarball = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-C", str(sparse), "-cf", str(tarball), "huge.img"],
        check=True,
    )
    import gzip

    layer = gzip.compress(tarball.read_bytes(), mtime=0)
    assert len(layer) < 1024 * 1024  # tiny on the wire
    device.release("1.1.0", [device.base, overlay_layer("1.1.0"), layer])
    steps: list[dict[str, Any]] = [
        {"args": ["upgrade"]},
        {"args": ["status"]},
        {"args": ["reset"]},
        {"args": ["status", "--verify"]},
    ]
    results = run_on_tmpfs(tmp_path, device.root, steps)
    first = results[0]
    assert first["code"] == 1, first
    assert "huge.img" in first["err"] and "free" in first["err"], first["err"]
    for result in results[1:]:
        assert result["code"] == 0, result
        assert result["active"] == "1.0.0 ok", result
