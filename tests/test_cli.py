"""The CLI shell: exit codes and error rendering (0 ok, 1 failed, 2 usage, 3 bug)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from cosgitops import cli
from cosgitops.errors import VerificationError


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosgitops", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_command_without_importing_them() -> None:
    result = run("--help")
    assert result.returncode == 0
    for name in cli.COMMANDS:
        assert name in result.stdout


def test_unknown_command_is_usage_error() -> None:
    result = run("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_library_error_maps_to_its_exit_code_with_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @click.command()
    def failing() -> None:
        raise VerificationError("signature does not match", hint="re-sign the image")

    monkeypatch.setitem(cli.COMMANDS, "failing", "tests.test_cli:_failing")
    monkeypatch.setattr(sys.modules[__name__], "_failing", failing, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["failing"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "error: signature does not match" in err
    assert "hint: re-sign the image" in err


def test_bug_exits_3_and_writes_traceback_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    @click.command()
    def broken() -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setenv("COSGITOPS_CRASH_DIR", str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "broken", "tests.test_cli:_broken")
    monkeypatch.setattr(sys.modules[__name__], "_broken", broken, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["broken"])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" not in err
    reports = list(tmp_path.glob("cosgitops-crash-*.txt"))
    assert len(reports) == 1
    assert "ZeroDivisionError" in reports[0].read_text()


def test_import_cli_is_light() -> None:
    code = (
        "import sys, cosgitops.cli; "
        "heavy = [m for m in ('docker', 'sigstore', 'tuf', 'git', 'jsonschema', 'rich', "
        "'cryptography', 'requests', 'jinja2') if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_a_commands_ctx_exit_code_becomes_the_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: without standalone mode click returned ctx.exit(1)'s code instead of
    exiting, and `python -m cosgitops` dropped it (exit 0 for a failed check)."""

    @click.command()
    @click.pass_context
    def check_failed(ctx: click.Context) -> None:
        ctx.exit(1)

    monkeypatch.setitem(cli.COMMANDS, "check-failed", "tests.test_cli:_check_failed")
    monkeypatch.setattr(sys.modules[__name__], "_check_failed", check_failed, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["check-failed"])
    assert exit_info.value.code == 1
