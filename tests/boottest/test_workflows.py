"""The boot tests in the scaffolded workflows: the release workflow boot-tests every
changed derivative (a job matrix from `cosgitops plan --format json`) before it
publishes, KVM when the runner has it; the validate workflow can do the same on pull
requests (opt-in). The planning shell steps run for real against git and cosgitops."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_workflows import EXPRESSION, cosgitops_command_steps, workflow


def _job_steps(data: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    steps = data["jobs"][job_id]["steps"]
    assert isinstance(steps, list)
    return steps


def _step(data: dict[str, Any], job_id: str, name: str) -> dict[str, Any]:
    (found,) = [s for s in _job_steps(data, job_id) if s.get("name") == name]
    return found


def _uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).startswith(f"{action}@")


def test_release_boot_tests_each_planned_derivative_before_it_publishes() -> None:
    data = workflow("release.yaml")
    jobs = data["jobs"]
    ((plan_job, plan_step),) = cosgitops_command_steps(data, "plan")
    ((boot_job, boot_step),) = cosgitops_command_steps(data, "boot-test")
    ((release_job, _),) = cosgitops_command_steps(data, "release")

    # plan -> boot-test (a matrix job per derivative) -> release
    assert "--format json" in plan_step["with"]["command"]
    assert plan_step["with"]["command"].startswith("plan --since ${{ steps.since.outputs.ref }}")
    assert jobs[boot_job]["needs"] == plan_job
    assert jobs[boot_job]["strategy"]["matrix"] == (
        f"${{{{ fromJSON(needs.{plan_job}.outputs.matrix) }}}}"
    )
    assert jobs[boot_job]["strategy"]["fail-fast"] is False
    assert jobs[boot_job]["if"] == f"${{{{ needs.{plan_job}.outputs.count != '0' }}}}"
    assert set(jobs[release_job]["needs"]) == {plan_job, boot_job}
    # the release runs after the boot tests whatever they found: the gate reads their
    # attestations, and nothing changed (no boot test) must still catch up
    assert "!cancelled()" in jobs[release_job]["if"]
    assert f"needs.{plan_job}.result == 'success'" in jobs[release_job]["if"]

    arguments = shlex.split(EXPRESSION.sub("NAME", boot_step["with"]["command"]))
    assert arguments[:2] == ["boot-test", "NAME"]
    assert "--no-attest" not in arguments and "--skip-published" in arguments
    assert boot_step["with"]["command"].split()[1] == "${{"  # the matrix entry's name

    # signed keyless by this workflow's identity, as the images are; pushed to ghcr.io
    permissions = jobs[boot_job]["permissions"]
    assert permissions == {"contents": "read", "packages": "write", "id-token": "write"}
    steps = _job_steps(data, boot_job)
    (login,) = [s for s in steps if _uses(s, "docker/login-action")]
    assert steps.index(login) < steps.index(boot_step)
    upload = next(s for s in steps if _uses(s, "actions/upload-artifact"))
    assert upload["if"] == "${{ !cancelled() }}" and upload["with"]["path"] == "boot-test"
    assert "--work-dir boot-test" in boot_step["with"]["command"]


def test_the_boot_tests_use_kvm_when_the_runner_has_it() -> None:
    for name, job in (("release.yaml", "boot-test"), ("validate.yaml", "boot-test")):
        data = workflow(name)
        steps = _job_steps(data, job)
        kvm = _step(data, job, "Let QEMU use KVM")
        script = str(kvm["run"])
        assert "[ -e /dev/kvm ]" in script and "udevadm trigger --name-match=kvm" in script
        assert "TCG" in script
        install = _step(data, job, "Install QEMU and the disk tools")
        for package in ("qemu-system-x86", "ovmf", "mtools", "gdisk", "dosfstools"):
            assert package in install["run"], (name, package)
        boot = next(s for s in steps if "boot-test" in str(s.get("with", {}).get("command", "")))
        assert steps.index(install) < steps.index(kvm) < steps.index(boot)


def test_pull_requests_boot_test_only_when_asked_and_never_sign() -> None:
    data = workflow("validate.yaml")
    jobs = data["jobs"]
    ((plan_job, plan_step),) = cosgitops_command_steps(data, "plan")
    ((boot_job, boot_step),) = cosgitops_command_steps(data, "boot-test")
    assert jobs[plan_job]["if"] == "${{ vars.COSGITOPS_BOOT_TEST_PULL_REQUESTS == 'true' }}"
    assert plan_step["with"]["command"] == (
        "plan --since origin/${{ github.base_ref }} --format json"
    )
    assert jobs[boot_job]["needs"] == plan_job
    assert "--no-attest" in boot_step["with"]["command"]
    assert jobs[boot_job]["permissions"] == {"contents": "read", "packages": "read"}
    # the validation itself does not wait for (or depend on) the boot tests
    assert "needs" not in jobs["validate"]


def _run(script: str, cwd: Path, **env: str) -> tuple[int, dict[str, str], str]:
    output = cwd.parent / f"output-{len(list(cwd.parent.glob('output-*')))}"
    environment = {**os.environ, "GITHUB_OUTPUT": str(output), **env}
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = output.read_text().splitlines() if output.exists() else []
    return done.returncode, dict(line.split("=", 1) for line in lines), done.stdout + done.stderr


def _cosgitops_plan(repo: Path, since: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cosgitops", "plan", "--since", since, "--format", "json"],
        cwd=repo, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    from cosgitops.scaffold import init_repository

    repo = tmp_path / "fleet"
    init_repository(repo, name="fleet")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "fleet"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


def test_the_plan_covers_this_push_or_everything(fleet: Path) -> None:
    data = workflow("release.yaml")
    since = str(_step(data, "plan", "Find what this push changed")["run"])
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=fleet, capture_output=True, text=True, check=True
    ).stdout.strip()
    motd = fleet / "derivatives" / "example" / "overlay" / "etc" / "motd"
    motd.write_text("changed\n")
    subprocess.run(["git", "commit", "-qam", "motd"], cwd=fleet, check=True)

    # a push: what changed since the commit before it
    code, outputs, log = _run(since, fleet, BEFORE=head)
    assert code == 0, log
    assert outputs["ref"] == head
    assert json.loads(_cosgitops_plan(fleet, outputs["ref"]))["include"][0]["name"] == "example"

    # nothing changed since the previous push: an empty matrix
    now = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=fleet, capture_output=True, text=True, check=True
    ).stdout.strip()
    code, outputs, log = _run(since, fleet, BEFORE=now)
    assert code == 0, log
    assert json.loads(_cosgitops_plan(fleet, outputs["ref"])) == {"include": []}

    # the first push of main (GitHub sends zeros) or a run by hand (no `before`): all
    for before in ("0" * 40, ""):
        code, outputs, log = _run(since, fleet, BEFORE=before)
        assert code == 0, log
        planned = json.loads(_cosgitops_plan(fleet, outputs["ref"]))["include"]
        assert [entry["name"] for entry in planned] == ["example"]


@pytest.mark.parametrize("name", ["release.yaml", "validate.yaml"])
def test_the_plan_becomes_a_matrix(fleet: Path, name: str) -> None:
    data = workflow(name)
    plan_job = "plan" if name == "release.yaml" else "plan-boot-tests"
    script = str(_step(data, plan_job, "Hand the plan to the boot tests")["run"])
    plan_file = fleet / "cosgitops-plan.json"
    everything = {"include": [{"name": "a", "version": "1.0.0"}, {"name": "b", "version": "2.0.0"}]}
    for plan, count in ((_cosgitops_plan(fleet, "HEAD"), 0), (json.dumps(everything), 2)):
        plan_file.write_text(plan)
        code, outputs, log = _run(script, fleet, PLAN_FILE=str(plan_file))
        assert code == 0, log
        assert outputs["count"] == str(count)
        assert json.loads(outputs["matrix"]) == json.loads(plan)
