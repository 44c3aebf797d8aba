"""The parts of `boot-test` that need no VM: which release it upgrades from, skipping a
published version, and the step runner (timed steps, the first failure skips the rest)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from cosgitops.boottest.run import BootTestOptions, boot_test, from_release, serial_logs
from cosgitops.boottest.steps import StepFailed, StepRunner
from cosgitops.errors import NotFoundError
from cosgitops.validate import load_repository

NAME = "example"


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def task(self, description: str, total: int | None = None) -> object:
        raise AssertionError("steps report notes only")

    def note(self, message: str) -> None:
        self.lines.append(message)


def _commit(repo: Path, message: str) -> None:
    for args in (["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _set(repo: Path, **spec: object) -> None:
    path = repo / "derivatives" / NAME / "derivative.yaml"
    definition = yaml.safe_load(path.read_text())
    for key, value in spec.items():
        definition["spec"][key] = value
    path.write_text(yaml.safe_dump(definition, sort_keys=False))


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    from cosgitops.scaffold import init_repository

    repo = tmp_path / "fleet"
    init_repository(repo, name="fleet")
    (repo / "cosgitops.yaml").write_text(
        (repo / "cosgitops.yaml")
        .read_text()
        .replace("    stable:\n", "    beta: {}\n    stable:\n")
    )
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    _commit(repo, "fleet")
    return repo


def _release(repo: Path, version: str, channels: list[str] | None = None) -> None:
    from cosgitops.release import release

    _set(repo, version=version)
    if channels is not None:
        path = repo / "derivatives" / NAME / "derivative.yaml"
        definition = yaml.safe_load(path.read_text())
        definition["spec"]["release"]["channels"] = channels
        path.write_text(yaml.safe_dump(definition, sort_keys=False))
    _commit(repo, version)
    assert release(repo).ok


def _origin(repo: Path, pinned: str | None = None) -> str | None:
    tree = load_repository(repo)
    found = from_release(tree.repository, tree.derivatives[NAME], repo / "public", pinned=pinned)
    return None if found is None else found.version


def test_it_upgrades_from_what_the_channel_runs_today(fleet: Path) -> None:
    from cosgitops.publish.publisher import yank

    assert _origin(fleet) is None  # nothing published: a fresh install
    _release(fleet, "0.1.0")
    _release(fleet, "0.2.0", channels=["beta"])  # not what stable devices run
    _release(fleet, "0.3.0", channels=["stable"])
    _set(fleet, version="0.4.0")
    _set(fleet, release={"channels": ["stable"]})
    _commit(fleet, "candidate")
    assert _origin(fleet) == "0.3.0"
    assert _origin(fleet, pinned="0.2.0") == "0.2.0"
    with pytest.raises(NotFoundError):
        _origin(fleet, pinned="9.9.9")
    tree = load_repository(fleet)
    yank(tree.repository, NAME, "0.3.0", reason="boot loop")
    assert _origin(fleet) == "0.1.0"  # devices leave a yanked release, never go to it


def test_a_published_version_is_skipped(fleet: Path) -> None:
    _release(fleet, "0.1.0")
    report = boot_test(fleet, NAME, BootTestOptions(skip_published=True, attest=False))
    assert report.ok and report.status == "skipped"
    assert report.note == f"{NAME} 0.1.0 is already published"
    assert report.to_json()["status"] == "skipped"


def test_an_unknown_derivative_is_a_usage_error(fleet: Path) -> None:
    from cosgitops.errors import UsageError

    with pytest.raises(UsageError, match="no derivative named 'nope'"):
        boot_test(fleet, "nope")


def test_the_first_failure_skips_the_rest() -> None:
    ticks = iter([0.0, 1.5, 2.0, 5.0])
    notes = Notes()
    runner = StepRunner(notes, clock=lambda: next(ticks))
    with runner.step("disk", "a disk") as step:
        assert step is not None
        step.detail = "4 GiB"
    with runner.step("boot-from", "boot 1.0.0") as step:
        assert step is not None
        step.serial_log = Path("/tmp/serial/01-boot-from.log")
        raise StepFailed("no 'booted' event within 300 s", hint="see the serial log")
    with runner.step("upgrade", "upgrade") as step:
        assert step is None
    runner.skip_rest(("disk", "boot-from", "upgrade", "health"))
    assert [(r.name, r.outcome) for r in runner.results] == [
        ("disk", "passed"),
        ("boot-from", "failed"),
        ("upgrade", "skipped"),
        ("health", "skipped"),
    ]
    assert runner.results[0].duration_seconds == 1.5
    assert runner.results[1].duration_seconds == 3.0
    assert runner.results[1].serial_log == "01-boot-from.log"
    assert runner.failure is not None and runner.failure.hint == "see the serial log"
    assert runner.failed_log == Path("/tmp/serial/01-boot-from.log")
    assert notes.lines[0] == "[1] disk: a disk"
    assert notes.lines[1] == "[1] disk: passed in 1.5s: 4 GiB"
    assert notes.lines[3].startswith("[2] boot-from: FAILED after 3.0s: no 'booted' event")
    assert "(serial log /tmp/serial/01-boot-from.log)" in notes.lines[3]


def test_a_bug_in_a_step_is_not_a_failed_step() -> None:
    runner = StepRunner()
    with pytest.raises(ZeroDivisionError), runner.step("disk", "a disk"):
        _ = 1 / 0


def test_serial_logs_are_named_by_digest_in_boot_order(tmp_path: Path) -> None:
    (tmp_path / "02-boot-candidate.log").write_bytes(b"second\n")
    (tmp_path / "01-boot-from.log").write_bytes(b"first\n")
    (tmp_path / "notes.txt").write_text("not a log")
    logs = serial_logs(tmp_path)
    assert [log.name for log in logs] == ["01-boot-from.log", "02-boot-candidate.log"]
    assert logs[0].size == 6
    assert logs[0].digest == "sha256:" + hashlib.sha256(b"first\n").hexdigest()
    assert serial_logs(tmp_path / "missing") == ()


def test_a_failed_step_exits_1_naming_it_and_attests_nothing(fleet: Path) -> None:
    """The scaffold's example (a scratch base: no kernel) never gets past the disk."""
    import json
    import sys

    from cosgitops.boottest.attestation import verify_attestations
    from cosgitops.oci import open_store
    from cosgitops.signing import policy_for

    command = [sys.executable, "-m", "cosgitops", "boot-test", NAME, "-C", str(fleet)]
    done = subprocess.run(
        [*command, "--format", "json"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"error: boot test of {NAME} 0.1.0 failed at step 'disk'" in done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "failed" and report["failedStep"] == "disk"
    assert [s["outcome"] for s in report["predicate"]["steps"]] == [
        "passed", "failed", "skipped", "skipped", "skipped",
    ]  # fmt: skip
    tree = load_repository(fleet)
    store = open_store(tree.repository.image_name(NAME))
    digest = report["predicate"]["candidate"]["digest"]
    assert not verify_attestations(store, digest, policy_for(tree.repository, NAME)).ok
