"""``cosgitops validate`` and ``cosgitops init`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.validate.helpers import derivative_yaml, make_repository


def cosgitops(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosgitops", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **env},
    )


def test_init_then_validate_is_clean(tmp_path: Path) -> None:
    result = cosgitops("init", "demo-repo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "created demo-repo/cosgitops.yaml" in result.stdout
    result = cosgitops("validate", "demo-repo", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("ok: ")
    assert result.stderr == ""


def test_errors_exit_1_with_located_text(tmp_path: Path) -> None:
    root = make_repository(tmp_path / "fleet")
    folder = root / "derivatives" / "edge"
    folder.mkdir(parents=True)
    (folder / "derivative.yaml").write_text(derivative_yaml("edge", version="1.10"))
    result = cosgitops("validate", cwd=root)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        "derivatives/edge/derivative.yaml:6:12: error[yaml-implicit-type] YAML reads 1.10 as "
        "the number 1.1, not as the string '1.10'"
    )
    assert '  hint: quote it: version: "1.10"' in result.stdout
    assert "Traceback" not in result.stderr


def test_warnings_pass_unless_strict(tmp_path: Path) -> None:
    path = tmp_path / "derivative.yaml"
    path.write_text(derivative_yaml("edge").replace("base: scratch", "base: alpine:3"))
    assert cosgitops("validate", str(path)).returncode == 0
    result = cosgitops("validate", "--strict", str(path))
    assert result.returncode == 1
    assert "warning[base-unpinned]" in result.stdout


def test_json_output(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stages:\n  boot:\n    - comands: [x]\n")
    result = cosgitops("validate", "--format", "json", "--as", "cloud-config", str(path))
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True
    [diagnostic] = data["diagnostics"]
    assert diagnostic["rule"] == "yip-unknown-key"
    assert (diagnostic["line"], diagnostic["column"]) == (3, 7)


def test_sarif_output_is_written_even_when_failing(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stages: [1]\n")
    result = cosgitops("validate", "--format", "sarif", "--as", "cloud-config", str(path))
    assert result.returncode == 1
    assert json.loads(result.stdout)["runs"][0]["results"][0]["ruleId"] == "schema"


def test_github_format_appends_to_the_job_summary(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stages: [1]\n")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    result = cosgitops(
        "validate",
        "--format",
        "github",
        "--as",
        "cloud-config",
        str(path),
        GITHUB_STEP_SUMMARY=str(summary),
    )
    assert result.returncode == 1
    assert result.stdout.startswith("::error file=")
    text = summary.read_text()
    assert text.startswith("earlier step\n### cosgitops validate failed")
    assert "| :x: |" in text


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = cosgitops("validate", "--as", "nonsense", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert cosgitops("validate", "--format", "xml").returncode == 2


def test_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.txt").write_text("mine\n")
    result = cosgitops("init", "existing", cwd=tmp_path)
    assert result.returncode == 1
    assert "is not empty" in result.stderr and "hint:" in result.stderr
    assert sorted(p.name for p in (tmp_path / "existing").iterdir()) == ["notes.txt"]


def test_validate_command_imports_stay_light() -> None:
    code = (
        "import sys, cosgitops.commands.validate; "
        "heavy = [m for m in ('docker', 'sigstore', 'tuf', 'git', 'jsonschema', 'jsonschema_rs', "
        "'rich', 'cryptography', 'requests', 'jinja2', 'multiprocessing', 'difflib') "
        "if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr
