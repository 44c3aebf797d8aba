"""What the runner refuses: a located error, nothing of the step written, the stage
going on with the next step, and a failed run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cosgitops.stages.report import RunReport
from tests.stages.conftest import Stage, statuses, tree_state


def _refused(report: RunReport, name: str) -> tuple[int, str]:
    step = next(step for step in report.steps if step.name == name)
    assert step.status == "failed", step
    assert step.error is not None and "refused: nothing was changed" in step.error
    assert step.error_line is not None
    return step.error_line, step.error


@pytest.mark.parametrize(
    ("entry", "line", "message"),
    [
        ("path: /etc/../../../tmp/escaped", 8, "escapes the root with '..'"),
        ("path: relative/file", 8, "is not absolute"),
        ("{path: /etc/x, ownerstring: 'nobody-here:root'}", 8, "unknown user 'nobody-here'"),
        ("{path: /etc/x, ownerstring: 'root:no-such-group'}", 8, "unknown group 'no-such-group'"),
        ("{path: /etc/x, encoding: base64, content: 'not base64!'}", 8, "cannot be decoded"),
        ("{path: /etc/x, encoding: gz+base64, content: aGVsbG8=}", 8, "cannot be decoded"),
    ],
)
def test_a_bad_file_entry_refuses_the_whole_step(
    stage: Stage, root: Path, entry: str, line: int, message: str
) -> None:
    before = tree_state(root)
    report = stage(f"""
        stages:
          boot:
            - name: Mixed
              files:
                - path: /etc/first-is-fine
                  content: ok
                  permissions: 0644
                - {entry}
              commands: [touch /etc/command-ran]
            - name: Next
              files: [{{path: /etc/next, content: next, permissions: 0644}}]
    """)
    error_line, error = _refused(report, "Mixed")
    assert message in error
    assert error_line == line
    assert not report.ok
    # nothing of the refused step, the next step applied
    assert not (root / "etc/first-is-fine").exists() and not (root / "etc/command-ran").exists()
    assert (root / "etc/next").read_text() == "next"
    after = tree_state(root)
    assert set(after) - set(before) == {"etc/next"}
    assert not Path("/tmp/escaped").exists()


def test_a_symlink_that_climbs_out_of_the_root_is_refused(stage: Stage, root: Path) -> None:
    os.symlink("../../../../../../../../tmp", root / "etc/outside")
    report = stage("stages: {boot: [{name: Out, files: [{path: /etc/outside/x, content: x}]}]}")
    assert "escapes the root through a symlink" in _refused(report, "Out")[1]


def test_an_absolute_symlink_points_inside_the_root(
    stage: Stage, root: Path, tmp_path: Path
) -> None:
    """As in `chroot R`: /etc/link -> /srv means R/srv, never the machine's /srv."""
    (root / "srv").mkdir(exist_ok=True)
    os.symlink("/srv", root / "etc/link")
    assert stage("stages: {boot: [{files: [{path: /etc/link/inside, content: in}]}]}").ok
    assert (root / "srv/inside").read_text() == "in"
    assert not Path("/srv/inside").exists()


def test_unknown_users_and_groups_are_refused(stage: Stage, root: Path) -> None:
    report = stage("""
        stages:
          boot:
            - name: Groups
              users:
                gina:
                  groups: [wheel-does-not-exist]
            - name: Primary
              users:
                hank:
                  primary_group: nope
            - name: Keys
              authorized_keys:
                nobody-at-all: ["ssh-ed25519 AAAA x@y"]
            - name: Made in the same step
              users: {ivy: {}}
              authorized_keys:
                ivy: ["ssh-ed25519 AAAA ivy@y"]
    """)
    assert _refused(report, "Groups") == (
        6,
        "unknown group 'wheel-does-not-exist' (the step was refused: nothing was changed)",
    )
    assert _refused(report, "Primary")[0] == 10
    assert "unknown user 'nobody-at-all'" in _refused(report, "Keys")[1]
    assert statuses(report)[-1] == ("Made in the same step", "applied")
    assert "gina" not in (root / "etc/passwd").read_text()
    assert "hank" not in (root / "etc/passwd").read_text()
    assert (root / "home/ivy/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA ivy@y\n"


def test_a_failed_command_fails_its_step_and_the_stage_goes_on(stage: Stage, root: Path) -> None:
    report = stage("""
        stages:
          boot:
            - name: Broken
              commands:
                - echo first > /srv/first
                - echo about to fail; exit 3
                - echo third > /srv/third
            - name: After
              commands: [echo after > /srv/after]
    """)
    broken = report.steps[0]
    assert broken.status == "failed"
    assert broken.error is not None and "exited 3: about to fail" in broken.error
    assert broken.location.endswith("50_test.yaml:6")
    assert not report.ok
    for name in ("first", "third", "after"):  # yip runs every command, then the next step
        assert (root / "srv" / name).exists()


def test_a_file_that_does_not_validate_is_not_run(
    stage: Stage, root: Path, config_dir: Path
) -> None:
    (config_dir / "10_good.yaml").write_text(
        "stages: {boot: [{files: [{path: /etc/good, content: g}]}]}\n"
    )
    report = stage(
        """
        stages:
          boot:
            - files:
                - path: /etc/bad
                  permissions: "0644"
    """,
        file="20_bad.yaml",
    )
    assert [(p.file.rsplit("/", 1)[-1], p.line, p.rule) for p in report.problems] == [
        ("20_bad.yaml", 5, "yip-permissions")
    ]
    assert not report.ok
    assert (root / "etc/good").exists() and not (root / "etc/bad").exists()


def test_a_hostname_template_that_cannot_be_expanded_is_refused(stage: Stage, root: Path) -> None:
    report = stage("stages: {boot: [{name: H, hostname: 'x-{{ sha256sum .MachineID }}'}]}")
    assert "function 'sha256sum' is not supported" in _refused(report, "H")[1]
    assert (root / "etc/hostname").read_text() != "x-\n"


def test_a_bad_regular_expression_fails_the_step(stage: Stage) -> None:
    report = stage("stages: {boot: [{name: R, only_os: '(', commands: [true]}]}")
    assert report.steps[0].status == "failed"
    assert "is not a regular expression" in (report.steps[0].error or "")


def test_a_private_key_in_a_devices_own_file_does_not_stop_it(
    stage: Stage, root: Path, config_dir: Path
) -> None:
    """validate refuses a private key in Git; a device's own /oem file may carry one."""
    kind = "OPENSSH " + "PRIVATE KEY"  # (not one block in this file: it is scanned too)
    (config_dir / "50_key.yaml").write_text(
        "stages:\n  boot:\n    - files:\n        - path: /etc/ssh/ssh_host_ed25519_key\n"
        "          permissions: 0600\n          content: |\n"
        f"            -----BEGIN {kind}-----\n            {'b3BlbnNzaC1rZXktdjEAAAAA' * 4}\n"
        f"            -----END {kind}-----\n"
    )
    from cosgitops.validate import validate_paths

    assert not validate_paths([config_dir / "50_key.yaml"], as_kind="cloud-config").ok
    report = stage(file="50_key.yaml")
    assert report.ok and not report.problems
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_text().startswith("-----BEGIN OPENSSH")
