"""The composite GitHub Action (action.yml at the project root): GitHub's action schema,
its inputs and outputs, and its shell steps run the way a runner runs them.

The install step's `pip install` needs the package index, so the tests give it a
recording stand-in for the interpreter that actions/setup-python would provide; the
steps that run a command use the real cosgitops."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import cosgitops
from tests.test_workflows import check_jsonschema

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ACTION = PROJECT_ROOT / "action.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def action() -> dict[str, Any]:
    data = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def step(step_id: str) -> dict[str, Any]:
    (found,) = [s for s in action()["runs"]["steps"] if s.get("id") == step_id]
    assert isinstance(found, dict)
    return found


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class Runner:
    """Runs the action's shell steps as a GitHub runner does: bash -e -o pipefail, the
    step's env with `${{ inputs.* }}` filled in, RUNNER_TEMP, GITHUB_OUTPUT, GITHUB_PATH
    and GITHUB_ACTION_PATH (the action's own checkout: this project)."""

    def __init__(self, root: Path, python: Path | None = None) -> None:
        self.root = root
        self.temp = root / "runner-temp"
        self.workspace = root / "workspace"
        self.temp.mkdir()
        self.workspace.mkdir()
        self.python = python or Path(sys.executable)
        self.path_file = root / "github-path"
        self.extra_env: dict[str, str] = {}
        self.count = 0

    @property
    def venv(self) -> Path:
        return self.temp / "cosgitops-venv"

    def run(self, step_id: str, **inputs: str) -> tuple[int, dict[str, str], str]:
        definition = step(step_id)
        values = {name: str(spec.get("default", "")) for name, spec in action()["inputs"].items()}
        unknown = set(inputs) - set(values)
        assert not unknown, f"not inputs of the action: {unknown}"
        values.update(inputs)

        def evaluate(text: str) -> str:
            def replace(match: re.Match[str]) -> str:
                expression = match.group(1)
                if expression.startswith("inputs."):
                    return values[expression.removeprefix("inputs.")]
                if expression == "steps.python.outputs.python-path":
                    return str(self.python)
                raise AssertionError(f"the test runner cannot evaluate {expression!r}")

            return EXPRESSION.sub(replace, text)

        self.count += 1
        output = self.root / f"github-output-{self.count}"
        env = {
            **os.environ,
            "RUNNER_TEMP": str(self.temp),
            "GITHUB_OUTPUT": str(output),
            "GITHUB_PATH": str(self.path_file),
            "GITHUB_ACTION_PATH": str(PROJECT_ROOT),
            "GITHUB_WORKSPACE": str(self.workspace),
            **self.extra_env,
        }
        env.update({key: evaluate(str(value)) for key, value in definition.get("env", {}).items()})
        cwd = self.workspace / evaluate(definition.get("working-directory", "."))
        assert definition["shell"] == "bash"
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", definition["run"]],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        lines = output.read_text(encoding="utf-8").splitlines() if output.exists() else []
        return (
            result.returncode,
            dict(line.split("=", 1) for line in lines),
            result.stdout + result.stderr,
        )

    def preinstall(self, program: str, spec: str | None = None) -> None:
        """A venv the install step recognises as holding ``spec`` (default: this checkout),
        whose `cosgitops` runs ``program`` (a shell script body)."""
        executable(self.venv / "bin" / "python", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        executable(self.venv / "bin" / "cosgitops", f"#!/bin/sh\n{program}\n")
        (self.venv / ".cosgitops-spec").write_text(spec or str(PROJECT_ROOT))


REAL_COSGITOPS = f'exec "{sys.executable}" -m cosgitops "$@"'
RECORD_ARGUMENTS = (
    f'exec "{sys.executable}" -c '
    '\'import json, os, sys; print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}))\' '
    '"$@"'
)

# A stand-in for the interpreter actions/setup-python provides: `-m venv` makes a venv
# whose python is this same stand-in, `-m pip install SPEC` "installs" a cosgitops that
# prints a version. Every call is logged, so tests see what would have been installed.
STANDIN_PYTHON = f"""#!{sys.executable}
import json, os, pathlib, shutil, sys
arguments = sys.argv[1:]
with open(os.environ["STANDIN_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(arguments) + "\\n")
if arguments[:2] == ["-m", "venv"]:
    venv = pathlib.Path(arguments[-1])
    if "--clear" in arguments and venv.exists():
        shutil.rmtree(venv)
    (venv / "bin").mkdir(parents=True)
    shutil.copy(__file__, venv / "bin" / "python")
elif arguments[:3] == ["-m", "pip", "install"]:
    if os.environ.get("STANDIN_PIP_FAILS"):
        sys.exit("ERROR: No matching distribution found")
    cosgitops = pathlib.Path(__file__).parent / "cosgitops"
    cosgitops.write_text("#!/bin/sh\\necho 'cosgitops, version 9.8.7'\\n")
    cosgitops.chmod(0o755)
else:
    sys.exit(f"unexpected call: {{arguments}}")
"""


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Runner, Path]:
    log = tmp_path / "standin.log"
    monkeypatch.setenv("STANDIN_LOG", str(log))
    python = executable(tmp_path / "setup-python" / "python", STANDIN_PYTHON)
    return Runner(tmp_path, python=python), log


def calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- contract


def test_action_passes_github_action_schema() -> None:
    result = check_jsonschema("vendor.github-actions", ACTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_refuses_a_broken_action(tmp_path: Path) -> None:
    data = action()
    del data["runs"]["steps"][1]["shell"]  # composite run steps must name their shell
    broken = tmp_path / "action.yml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = check_jsonschema("vendor.github-actions", broken)
    assert result.returncode == 1


def test_inputs_and_outputs() -> None:
    data = action()
    assert data["runs"]["using"] == "composite"
    inputs = data["inputs"]
    assert {"command", "version", "python-version", "working-directory"} <= set(inputs)
    assert all(spec.get("description") for spec in inputs.values())
    assert not any(spec.get("required") for spec in inputs.values())
    assert inputs["command"]["default"] == "validate --format github"
    assert inputs["version"]["default"] == ""
    step_ids = {s.get("id") for s in data["runs"]["steps"]}
    for name, output in data["outputs"].items():
        assert output.get("description"), name
        (reference,) = EXPRESSION.findall(output["value"])
        assert reference.split(".")[1] in step_ids, (name, reference)


def test_python_comes_from_setup_python_without_touching_the_job() -> None:
    setup = step("python")
    assert setup["uses"].startswith("actions/setup-python@")
    assert setup["with"]["python-version"] == "${{ inputs.python-version }}"
    assert setup["with"]["update-environment"] is False


def test_run_scripts_take_inputs_only_through_env() -> None:
    for definition in action()["runs"]["steps"]:
        assert "${{" not in str(definition.get("run", "")), definition.get("id")


# --------------------------------------------------------------------------- install


def test_default_installs_the_source_of_the_action_ref(standin: tuple[Runner, Path]) -> None:
    runner, log = standin
    code, outputs, output = runner.run("install")
    assert code == 0, output
    venv = str(runner.venv)
    assert calls(log) == [
        ["-m", "venv", "--clear", venv],
        ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(PROJECT_ROOT)],
    ]
    assert outputs["version"] == "9.8.7"
    assert runner.path_file.read_text().splitlines() == [f"{venv}/bin"]


@pytest.mark.parametrize(
    ("version", "spec"),
    [("1.2.0", "cosgitops==1.2.0"), ("v1.2.0", "cosgitops==1.2.0"), ("latest", "cosgitops")],
)
def test_version_input_installs_from_the_package_index(
    standin: tuple[Runner, Path], version: str, spec: str
) -> None:
    runner, log = standin
    code, _, output = runner.run("install", version=version)
    assert code == 0, output
    assert calls(log)[-1][-1] == spec


def test_a_second_use_in_the_same_job_installs_nothing(standin: tuple[Runner, Path]) -> None:
    runner, log = standin
    assert runner.run("install", version="1.2.0")[0] == 0
    before = len(calls(log))
    code, outputs, output = runner.run("install", version="1.2.0")
    assert code == 0, output
    assert "already installed" in output
    assert len(calls(log)) == before
    assert outputs["version"] == "9.8.7"
    # Asking for another version replaces the installation.
    assert runner.run("install", version="1.3.0")[0] == 0
    assert calls(log)[-2:] == [
        ["-m", "venv", "--clear", str(runner.venv)],
        ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "cosgitops==1.3.0"],
    ]


def test_a_failed_install_fails_the_step(
    standin: tuple[Runner, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, _ = standin
    monkeypatch.setenv("STANDIN_PIP_FAILS", "1")
    code, outputs, output = runner.run("install", version="0.0.0")
    assert code != 0
    assert "No matching distribution" in output
    assert "version" not in outputs
    assert not (runner.venv / ".cosgitops-spec").exists()


def test_install_reports_the_real_version(runner: Runner) -> None:
    runner.preinstall(REAL_COSGITOPS)
    code, outputs, output = runner.run("install")
    assert code == 0, output
    assert outputs["version"] == cosgitops.__version__


# --------------------------------------------------------------------------- run


def test_command_is_split_like_a_shell_but_never_run_by_one(runner: Runner) -> None:
    runner.preinstall(RECORD_ARGUMENTS)
    (runner.workspace / "fleet").mkdir()
    command = "cosgitops validate --format github 'two words' \"$(touch pwned)\" `id` ; rm -rf x"
    code, outputs, output = runner.run("run", command=command, **{"working-directory": "fleet"})
    assert code == 0, output
    recorded = json.loads(output.splitlines()[-1])
    assert recorded["argv"] == [
        "validate",
        "--format",
        "github",
        "two words",
        "$(touch pwned)",
        "`id`",
        ";",
        "rm",
        "-rf",
        "x",
    ]
    assert recorded["cwd"] == str(runner.workspace / "fleet")
    assert not any(runner.root.rglob("pwned"))
    assert outputs == {"exit-code": "0"}


def test_default_command_validates_with_annotations(runner: Runner) -> None:
    runner.preinstall(RECORD_ARGUMENTS)
    code, _, output = runner.run("run")
    assert code == 0, output
    assert json.loads(output.splitlines()[-1])["argv"] == ["validate", "--format", "github"]


def test_output_file_captures_standard_output(runner: Runner) -> None:
    runner.preinstall(REAL_COSGITOPS)
    code, outputs, output = runner.run("run", command="--version", **{"output-file": "v.txt"})
    assert code == 0, output
    written = runner.workspace / "v.txt"
    assert outputs == {"exit-code": "0", "output-file": str(written)}
    assert written.read_text().strip() == f"cosgitops, version {cosgitops.__version__}"
    assert "version" not in output.replace("--version", "")


def test_failing_command_fails_the_step_with_its_exit_code(runner: Runner) -> None:
    runner.preinstall(REAL_COSGITOPS)
    code, outputs, output = runner.run("run", command="no-such-command")
    assert code == 2
    assert outputs["exit-code"] == "2"
    assert "no-such-command" in output
    assert "Traceback" not in output


# --------------------------------------------------------------------------- with validate


@pytest.fixture
def fleet(runner: Runner) -> Path:
    """A repository as `cosgitops init` scaffolds it, in the runner's workspace."""
    from cosgitops.scaffold import init_repository

    init_repository(runner.workspace / "fleet")
    return runner.workspace / "fleet"


def test_validate_as_sarif_through_the_action(runner: Runner, fleet: Path) -> None:
    runner.preinstall(REAL_COSGITOPS)
    code, outputs, output = runner.run(
        "run",
        command="validate --format sarif",
        **{"working-directory": "fleet", "output-file": "cosgitops.sarif"},
    )
    assert code == 0, output
    assert outputs["output-file"] == str(fleet / "cosgitops.sarif")
    sarif = json.loads((fleet / "cosgitops.sarif").read_text(encoding="utf-8"))
    assert sarif["version"] == "2.1.0"
    assert sarif["runs"][0]["results"] == []


def test_validate_annotates_a_broken_derivative_through_the_action(
    runner: Runner, fleet: Path
) -> None:
    definition = fleet / "derivatives" / "example" / "derivative.yaml"
    definition.write_text(definition.read_text().replace("name: example", "name: Example!"))
    summary = runner.root / "step-summary.md"
    runner.extra_env["GITHUB_STEP_SUMMARY"] = str(summary)
    runner.preinstall(REAL_COSGITOPS)
    code, outputs, output = runner.run("run", **{"working-directory": "fleet"})
    assert code == 1
    assert outputs["exit-code"] == "1"
    annotations = [line for line in output.splitlines() if line.startswith("::error ")]
    assert annotations
    assert any("file=derivatives/example/derivative.yaml" in line for line in annotations)
    assert "derivative.yaml" in summary.read_text(encoding="utf-8")
