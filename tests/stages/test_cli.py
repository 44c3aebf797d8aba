"""``cosgitops device run-stage`` and the stages in ``device status``. These need no
Debian tree: file steps on an empty root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

GOOD_AND_BAD = """\
name: Two steps
stages:
  boot:
    - name: Greeting
      files:
        - path: /etc/issue.d/90-example.issue
          permissions: 0644
          content: hello
    - name: Escape
      files:
        - path: /etc/../../outside
          content: no
"""


def cosgitops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosgitops", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    (root / "oem").mkdir(parents=True)
    (root / "oem" / "50_two.yaml").write_text(GOOD_AND_BAD)
    return root, root / "run/cosgitops/stages"


def test_a_failed_step_is_located_and_the_run_exits_1(tmp_path: Path) -> None:
    root, _ = _setup(tmp_path)
    result = cosgitops("device", "run-stage", "boot", "--root", str(root))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "+ boot         /oem/50_two.yaml:4  Greeting  (wrote /etc/issue.d/90-example.issue)"
    )
    assert lines[1] == "! boot         /oem/50_two.yaml:9  Escape"
    assert lines[2].startswith("    error: /oem/50_two.yaml:11: path '/etc/../../outside' escapes")
    assert lines[-1].startswith(f"stage boot on {root}: FAILED, 2 steps (1 applied, 1 failed)")
    assert (root / "etc/issue.d/90-example.issue").read_text() == "hello"
    assert not (tmp_path / "outside").exists()
    assert "Traceback" not in result.stderr


def test_json_gives_every_step_and_the_console_event_follows(tmp_path: Path) -> None:
    root, records = _setup(tmp_path)
    result = cosgitops(
        "device", "run-stage", "boot", "--root", str(root), "--format", "json", "--console-event"
    )
    assert result.returncode == 1
    body, event_line = result.stdout.rsplit("\n", 2)[0], result.stdout.splitlines()[-1]
    report = json.loads(body)
    assert report["ok"] is False and report["stages"] == ["boot.before", "boot", "boot.after"]
    assert [(s["name"], s["status"], s["errorLine"]) for s in report["steps"]] == [
        ("Greeting", "applied", None),
        ("Escape", "failed", 11),
    ]
    assert report["steps"][0]["kinds"] == [
        {"kind": "files", "status": "applied", "detail": "wrote /etc/issue.d/90-example.issue"}
    ]
    assert event_line.startswith("COSGITOPS ")
    event = json.loads(event_line.removeprefix("COSGITOPS "))
    assert event["event"] == "stage" and event["stage"] == "boot" and event["ok"] is False
    assert event["applied"] == 1 and event["failed"] == 1
    assert event["errors"][0].startswith("/oem/50_two.yaml:11: path")
    assert json.loads((records / "boot.json").read_text())["steps"] == report["steps"]


def test_device_status_shows_the_last_run_of_each_stage(tmp_path: Path) -> None:
    root, records = _setup(tmp_path)
    device = tmp_path / "device"
    device.mkdir()
    env = {"COSGITOPS_STAGES_DIR": str(records)}
    status = json.loads(
        cosgitops("device", "status", "--root", str(device), "--format", "json", env=env).stdout
    )
    assert status["stages"] == {}
    assert cosgitops("device", "run-stage", "boot", "--root", str(root), env=env).returncode == 1
    (root / "oem" / "50_two.yaml").write_text(
        GOOD_AND_BAD.split("    - name: Escape", maxsplit=1)[0]
    )
    assert cosgitops("device", "run-stage", "rootfs", "--root", str(root), env=env).returncode == 0
    status = json.loads(
        cosgitops("device", "status", "--root", str(device), "--format", "json", env=env).stdout
    )
    assert list(status["stages"]) == ["rootfs", "boot"]  # in boot order
    boot = status["stages"]["boot"]
    assert boot["ok"] is False and boot["counts"]["failed"] == 1
    assert boot["errors"][0].startswith("/oem/50_two.yaml:11: path '/etc/../../outside'")
    assert status["stages"]["rootfs"]["ok"] is True
    text = cosgitops("device", "status", "--root", str(device), env=env).stdout
    assert "  stage     rootfs       ok at " in text
    assert "  stage     boot         FAILED at " in text and "(1 applied, 1 failed)" in text
    assert "              /oem/50_two.yaml:11: path" in text


def test_no_record_and_bad_arguments(tmp_path: Path) -> None:
    root, records = _setup(tmp_path)
    assert (
        cosgitops("device", "run-stage", "fs", "--root", str(root), "--no-record").returncode == 0
    )
    assert not records.exists()
    bad = cosgitops("device", "run-stage", "no such stage", "--root", str(root))
    assert bad.returncode == 2 and "is not a stage name" in bad.stderr
    missing = cosgitops("device", "run-stage", "boot", "--root", str(tmp_path / "nope"))
    assert missing.returncode == 2


def test_config_dirs_are_read_after_the_roots_own(tmp_path: Path) -> None:
    root, _ = _setup(tmp_path)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "00_first.yaml").write_text(
        "stages: {boot: [{name: Extra, files: [{path: /etc/extra, content: x}]}]}\n"
    )
    result = cosgitops(
        "device",
        "run-stage",
        "boot",
        "--root",
        str(root),
        "--config-dir",
        str(extra),
        "--format",
        "json",
        "--no-record",
    )
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["steps"]] == ["Greeting", "Escape", "Extra"]
    assert report["sources"] == ["/system/oem", "/oem", "/usr/local/cloud-config", str(extra)]
    only = cosgitops(
        "device",
        "run-stage",
        "boot",
        "--root",
        str(root),
        "--config-dir",
        str(extra),
        "--only-config-dirs",
        "--no-record",
    )
    assert only.returncode == 0 and "Extra" in only.stdout and "Greeting" not in only.stdout


def test_the_units_event_goes_to_the_console(tmp_path: Path) -> None:
    """The units set COSGITOPS_CONSOLE_EVENTS=1: the line goes to the console itself."""
    from cosgitops.device.events import parse_events

    root, _ = _setup(tmp_path)
    console = tmp_path / "console"
    env = {"COSGITOPS_CONSOLE_EVENTS": "1", "COSGITOPS_CONSOLE_PATH": str(console)}
    result = cosgitops("device", "run-stage", "boot", "--root", str(root), env=env)
    assert "COSGITOPS" not in result.stdout
    [event] = parse_events(console.read_text())
    assert (event["event"], event["stage"], event["ok"], event["failed"]) == (
        "stage",
        "boot",
        False,
        1,
    )
