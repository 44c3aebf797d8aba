"""`cosgitops boot-test` for real: a good candidate upgrades from the release devices run,
passes its health checks and falls back by itself when made to fail, and gets a passing
attestation that opens the release gate; a candidate whose health check fails gets exit
1, a failing attestation, and the gate stays shut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cosgitops.boottest.attestation import verify_attestations
from cosgitops.boottest.run import BootTestOptions, boot_test
from cosgitops.demoboot import (
    DERIVATIVE,
    build_base_for,
    commit_version,
    scaffold_repository,
    write_example,
)
from cosgitops.oci import open_store
from cosgitops.progress import NullProgress
from cosgitops.publish.reader import open_index
from cosgitops.release import release
from cosgitops.signing import policy_for
from cosgitops.validate import load_repository
from tests.helpers.bootbase import BuiltBase

pytestmark = [pytest.mark.boot, pytest.mark.timeout(3600)]


class Notes(NullProgress):
    """The progress lines a user sees, kept."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, message: str) -> None:
        self.lines.append(message)


def _require_boot_test(repo: Path) -> None:
    from cosgitops.demoboot import _commit

    path = repo / "derivatives" / DERIVATIVE / "derivative.yaml"
    definition = yaml.safe_load(path.read_text())
    definition["spec"]["release"]["bootTest"] = "required"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    assert _commit(repo, "releases of example must pass a boot test").returncode == 0


def _verdict(repo: Path, digest: str) -> bool:
    tree = load_repository(repo)
    store = open_store(tree.repository.image_name(DERIVATIVE))
    return verify_attestations(store, digest, policy_for(tree.repository, DERIVATIVE)).ok


def test_boot_test_proves_a_release_and_refuses_an_unhealthy_one(
    tmp_path: Path, built_base: BuiltBase
) -> None:
    repo, public = tmp_path / "repo", tmp_path / "public"
    scaffold_repository(repo)
    spec_base, _ = build_base_for(
        repo, built_base.sources, built_base.wheelhouse, built_base.cache, lambda _: None
    )
    write_example(repo, spec_base)
    assert release(repo, public_dir=public).ok
    commit_version(repo, "1.1.0", motd="1.1.0")
    notes = Notes()
    good = boot_test(
        repo,
        DERIVATIVE,
        BootTestOptions(public_dir=public, work_dir=tmp_path / "bt-good"),
        progress=notes,
    )
    assert good.status == "passed", (good.error, good.failed_log, notes.lines)
    assert good.result is not None
    steps = {step.name: step for step in good.result.steps}
    assert list(steps) == [
        "build", "disk", "boot-from", "upgrade", "boot-candidate", "health", "fallback",
    ]  # fmt: skip
    assert all(step.outcome == "passed" for step in steps.values())
    assert good.result.from_release is not None and good.result.from_release.version == "1.0.0"
    assert "health-file" in steps["health"].detail
    assert "1.0.0 from the passive image" in steps["fallback"].detail
    assert "fell-back" in steps["fallback"].detail
    assert len(good.result.serial_logs) == 4, "from, candidate, the failing boot, the fallback"
    assert good.result.environment["qemu"] and good.result.environment["firmware"]
    assert any("[4] upgrade: passed" in line for line in notes.lines)
    assert good.attestation is not None
    assert _verdict(repo, good.result.candidate.digest)

    _require_boot_test(repo)
    gated = release(repo, public_dir=public)
    assert gated.ok, gated.failed
    manifest = open_index(public).manifest(DERIVATIVE, "1.1.0")
    assert manifest.digest == good.result.candidate.digest
    assert manifest.boot_test is not None
    assert manifest.boot_test.attestation == good.attestation.digest

    # 1.2.0's health file says "degraded": a fresh install of it (nothing published in
    # this folder) boots, fails its health check, and the test stops there
    commit_version(repo, "1.2.0", healthy=False)
    bad = boot_test(
        repo,
        DERIVATIVE,
        BootTestOptions(public_dir=tmp_path / "nothing-published", work_dir=tmp_path / "bt-bad"),
    )
    assert bad.status == "failed" and bad.failed_step == "health", bad.error
    assert "health-file" in bad.error and "1.2.0" in bad.error
    assert bad.failed_log is not None and bad.failed_log.is_file()
    assert b'"event": "boot-check"' in bad.failed_log.read_bytes()
    assert bad.result is not None and not _verdict(repo, bad.result.candidate.digest)
    report = json.loads(json.dumps(bad.to_json()))
    assert report["failedStep"] == "health" and report["serialLog"] == str(bad.failed_log)

    refused = release(repo, public_dir=public)
    assert not refused.ok
    (outcome,) = [o for o in refused.outcomes if o.name == DERIVATIVE]
    assert "requires a passing boot test" in outcome.error
    assert [r.version for r in open_index(public).releases(DERIVATIVE)] == ["1.1.0", "1.0.0"]
