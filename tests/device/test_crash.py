"""Crash safety: the agent is SIGKILLed at every named step of an upgrade (and of a boot
assessment), and at random moments; afterwards the state is consistent, the active slot
is a complete, verified release, and the next run finishes the job."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cosgitops.device.agent import DeviceAgent
from cosgitops.device.config import HealthCheck, dump_agent_config
from cosgitops.device.faults import BOOT_STEPS, CRASH_ENV, UPGRADE_STEPS
from cosgitops.oci.store import StoreOptions
from tests.device.fleet import DERIVATIVE, Fleet, base_layer, overlay_layer, slot_files
from tests.helpers.services import RegistryServer, StaticServer

pytestmark = [pytest.mark.registry, pytest.mark.slow]

V1, V2 = "1.0.0", "1.1.0"


@dataclass
class World:
    fleet: Fleet
    pristine: Path  # v1 installed, nothing pending
    upgraded: Path  # v2 active and pending, v1 passive
    files: dict[str, dict[str, bytes]]
    big_layer_size: int
    upgrade_seconds: float
    transaction_window: tuple[float, float]  # seconds after start: journal begun, committed


@contextlib.contextmanager
def _sealed(home: Path) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(
        {"HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"), "XDG_CONFIG_HOME": str(home)}
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _cli(root: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "cosgitops", "device", *args, "--root", str(root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base_dir = tmp_path_factory.mktemp("crash-world")
    with _sealed(base_dir / "home"), RegistryServer(base_dir / "registry") as registry:
        fleet = Fleet(
            base_dir / "fleet", f"{registry.host}/fleet/{DERIVATIVE}", StoreOptions(insecure=True)
        )
        base = base_layer(128 * 1024)
        fleet.release(V1, [base, overlay_layer(V1)])
        # v2's overlay carries 2 MiB of noise, so its download spans many chunks
        _, v2 = fleet.release(V2, [base, overlay_layer(V2, extra=os.urandom(2 * 1024 * 1024))])
        with StaticServer(fleet.public_dir) as server:
            pristine = base_dir / "pristine"
            agent = DeviceAgent(pristine)
            agent.install(fleet.setup(server.url), version=V1, recovery=False)
            files = {V1: slot_files(agent)}
            upgraded = base_dir / "upgraded"
            shutil.copytree(pristine, upgraded, symlinks=True)
            seconds, window = _profile_upgrade(upgraded)
            files[V2] = slot_files(DeviceAgent(upgraded))
            yield World(fleet, pristine, upgraded, files, v2.layers[1].size, seconds, window)


def _profile_upgrade(root: Path) -> tuple[float, tuple[float, float]]:
    """Run one upgrade, watching state.json for when its transaction opens and commits."""
    state_file = root / "state" / "state.json"
    started = time.monotonic()
    process = _cli(root, "upgrade")
    begun = committed = 0.0
    while process.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_bytes())
            now = time.monotonic() - started
            if state["transaction"] and not begun:
                begun = now
            if state["slots"]["active"]["version"] == V2 and not committed:
                committed = now
        time.sleep(0.002)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    total = time.monotonic() - started
    assert 0 < begun < (committed or total)
    return total, (begun, committed or total)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def assert_consistent(root: Path, world: World) -> str:
    """Status agrees with the disk, and the active slot is exactly a release."""
    agent = DeviceAgent(root)
    status = agent.status(verify=True)
    data = status.to_json()
    active = data["active"]["version"]
    assert active in (V1, V2)
    assert slot_files(agent) == world.files[active]
    assert status.verified and all(v is True for v in status.verified.values()), status.verified
    if active == V2:
        assert data["passive"]["version"] == V1 and data["pending"] is True
    else:
        assert data["passive"] is None and data["pending"] is False
    state_dir = root / "state"
    assert not (state_dir / "transition").exists()
    stored = {p.name for p in (state_dir / "slots").iterdir()}
    referenced = {Path(r.storage).name for r in agent.journal.load().records()}
    assert stored == referenced
    link = state_dir / "active"
    assert link.resolve() == (root / agent.journal.load().active.storage).resolve()  # type: ignore[union-attr]
    assert (link / "etc" / "motd").read_text() == f"release {active}\n"
    return active


@pytest.mark.parametrize("step", UPGRADE_STEPS)
def test_sigkill_at_each_upgrade_step(tmp_path: Path, world: World, step: str) -> None:
    root = _copy(world.pristine, tmp_path / "device")
    crash_at = f"{step}#3" if step == "layer-download-partial" else step
    process = _cli(root, "upgrade", crash_at=crash_at)
    assert process.wait(timeout=120) == -signal.SIGKILL, process.stderr.read()  # type: ignore[union-attr]
    before = assert_consistent(root, world)
    expected_after_crash = (
        V2 if step in ("state-committed", "links-updated", "cache-collected") else V1
    )
    assert before == expected_after_crash
    if before == V1 and UPGRADE_STEPS.index(step) >= UPGRADE_STEPS.index("journal-begun"):
        assert DeviceAgent(root).status().to_json()["interrupted"]["version"] == V2
    report = DeviceAgent(root).upgrade()
    assert assert_consistent(root, world) == V2
    if before == V1:
        assert report.installed is not None and report.installed.version == V2
    if step == "layer-download-partial":
        # the interrupted download resumed from its partial file (HTTP Range)
        assert 0 < report.cache.bytes_downloaded < world.big_layer_size


@pytest.mark.parametrize("step", BOOT_STEPS)
def test_sigkill_during_boot_assessment(tmp_path: Path, world: World, step: str) -> None:
    root = _copy(world.upgraded, tmp_path / "device")
    agent = DeviceAgent(root)
    failing = replace(agent.config, checks=(HealthCheck("always fails", "false"),), max_attempts=1)
    (root / "agent" / "config.yaml").write_bytes(dump_agent_config(failing))
    process = _cli(root, "boot-check", crash_at=step)
    assert process.wait(timeout=60) == -signal.SIGKILL
    after_crash = DeviceAgent(root).status(verify=True).to_json()
    assert after_crash["active"]["version"] in (V1, V2)
    assert all(v is True for v in after_crash["verified"].values())
    if step == "rollback-committed":
        assert after_crash["active"]["version"] == V1
    if step != "boot-attempt-counted":
        assert [r["version"] for r in after_crash["rejected"]] == [V2]
    report = DeviceAgent(root).boot_check()
    final = DeviceAgent(root).status(verify=True).to_json()
    assert final["active"]["version"] == V1 and final["pending"] is False
    assert [r["version"] for r in final["rejected"]] == [V2]
    assert report.outcome in ("rolled-back", "nothing-pending")
    assert slot_files(DeviceAgent(root)) == world.files[V1]


def _wait_for_transaction(root: Path, process: subprocess.Popen[bytes]) -> None:
    """Return once the upgrade in ``process`` has opened its transaction (or exited)."""
    state_file = root / "state" / "state.json"
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_file.read_bytes())["transaction"]:
                return
        time.sleep(0.001)


def test_sigkill_at_random_moments(tmp_path: Path, world: World) -> None:
    rng = random.Random(6)  # fixed seed: a failure can be replayed
    begun, committed = world.transaction_window
    # (anchor, delay): two kills early in the run, two anywhere, and four at random
    # moments after the transaction opened (download, unpack, switch), where a crash can
    # do harm. Anchoring on the journal keeps those inside it on a slow machine too.
    plan = [("start", rng.uniform(0.0, begun * 0.8)) for _ in range(2)]
    plan += [("start", rng.uniform(0.0, world.upgrade_seconds)) for _ in range(2)]
    plan += [("transaction", rng.uniform(0.0, committed - begun)) for _ in range(4)]
    phases = []
    for attempt, (anchor, delay) in enumerate(plan):
        root = _copy(world.pristine, tmp_path / f"device-{attempt}")
        process = _cli(root, "upgrade")
        if anchor == "transaction":
            _wait_for_transaction(root, process)
        time.sleep(delay)
        process.kill()
        code = process.wait(timeout=60)
        version = assert_consistent(root, world)
        interrupted = DeviceAgent(root).status().to_json()["interrupted"] is not None
        if code != -signal.SIGKILL:
            phases.append("finished")
        elif version == V2:
            phases.append("after commit")
        else:
            phases.append("during the transaction" if interrupted else "before the transaction")
        DeviceAgent(root).upgrade()
        assert assert_consistent(root, world) == V2
    # the kills landed in different phases of the upgrade, not all in one
    print("phases", phases)
    killed = {phase for phase in phases if phase != "finished"}
    assert len(killed) >= 2, (phases, plan, world.transaction_window)
