"""Step filters, evaluated inside the root; stage order; ``after``."""

from __future__ import annotations

import platform
from pathlib import Path

from cosgitops.stages.runner import stages_of
from tests.stages.conftest import Stage, statuses

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def test_filters_are_honoured(stage: Stage, root: Path, tmp_path: Path) -> None:
    (tmp_path / "host-only").write_text("the machine running the test has it, the root not")
    (root / "etc/hostname").write_text("edge-7\n")
    report = stage(f"""
        stages:
          boot:
            - {{name: if true, if: "test -e /etc/debian_version", commands: [true]}}
            - {{name: if false, if: "test -e {tmp_path}/host-only", commands: [true]}}
            - {{name: os, only_os: "^Debian GNU/Linux", commands: [true]}}
            - {{name: other os, only_os: "openSUSE", commands: [true]}}
            - {{name: version, only_os_version: "^12$", commands: [true]}}
            - {{name: other version, only_os_version: "^15", commands: [true]}}
            - {{name: arch, only_arch: "{ARCH}", commands: [true]}}
            - {{name: other arch, only_arch: "^s390x$", commands: [true]}}
            - {{name: systemd, only_service_manager: systemd, commands: [true]}}
            - {{name: openrc, only_service_manager: openrc, commands: [true]}}
            - {{name: any, if_files: {{any: [/nope, /etc/passwd]}}, commands: [true]}}
            - {{name: all, if_files: {{all: [/nope, /etc/passwd]}}, commands: [true]}}
            - {{name: none, if_files: {{none: [/nope]}}, commands: [true]}}
            - {{name: not none, if_files: {{none: [/etc/passwd]}}, commands: [true]}}
            - {{name: node, node: "^edge-[0-9]+$", commands: [true]}}
            - {{name: other node, node: "^core-", commands: [true]}}
    """)
    assert report.ok
    expected = {
        "if true": "applied",
        "if false": "filtered",
        "os": "applied",
        "other os": "filtered",
        "version": "applied",
        "other version": "filtered",
        "arch": "applied",
        "other arch": "filtered",
        "systemd": "applied",
        "openrc": "filtered",
        "any": "applied",
        "all": "filtered",
        "none": "applied",
        "not none": "filtered",
        "node": "applied",
        "other node": "filtered",
    }
    assert dict(statuses(report)) == expected
    reasons = {step.name: step.reason for step in report.steps}
    assert reasons["if false"].endswith("exited 1")
    assert reasons["other os"] == (
        "only_os: OS name 'Debian GNU/Linux 12 (bookworm)' does not match 'openSUSE'"
    )
    assert reasons["all"] == "if_files.all: /nope is missing"


def test_before_stage_and_after_run_in_order(stage: Stage, config_dir: Path) -> None:
    assert stages_of("boot") == ["boot.before", "boot", "boot.after"]
    assert stages_of("boot.after") == ["boot.after"]
    (config_dir / "20_second.yaml").write_text(
        "stages: {boot.before: [{name: b2, commands: [true]}], boot: [{name: s2}]}\n"
    )
    (config_dir / "sub").mkdir()
    (config_dir / "sub" / "x.yml").write_text("stages: {boot: [{name: in-sub}]}\n")
    (config_dir / "ignored.txt").write_text("stages: {boot: [{name: never}]}\n")
    report = stage(
        """
        stages:
          boot.after: [{name: a1}]
          boot: [{name: s1}]
          boot.before: [{name: b1}]
    """,
        file="10_first.yaml",
    )
    assert [(s.stage, s.name) for s in report.steps] == [
        ("boot.before", "b1"),
        ("boot.before", "b2"),
        ("boot", "s1"),
        ("boot", "s2"),
        ("boot", "in-sub"),
        ("boot.after", "a1"),
    ]


def test_after_waits_for_a_named_step(stage: Stage, config_dir: Path, root: Path) -> None:
    (config_dir / "20_later.yaml").write_text(
        "name: Later\nstages: {boot: [{name: make, commands: ['echo x > /srv/made']}]}\n"
    )
    report = stage(
        """
        stages:
          boot:
            - name: use
              after: [{name: Later.make}]
              commands: [test -e /srv/made]
    """,
        file="10_first.yaml",
    )
    assert report.ok, [s.error for s in report.steps]
    assert [s.name for s in report.steps] == ["make", "use"]
