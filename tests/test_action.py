"""The composite GitHub Action (action.yml at the project root): GitHub's action schema,
its inputs and outputs, and its shell steps run the way a runner runs them.

The install step runs for real: this interpreter stands in for actions/setup-python's,
`python -m venv` makes the venv and pip installs cosgitops into it, offline. The package
index is replaced by a folder holding a wheel of this checkout (`--find-links`, no
index), and cosgitops' dependencies, which pip would download, are the test
environment's own (on PYTHONPATH, cosgitops itself left out), so every installed
cosgitops here comes from the wheel or from the action's source."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
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

    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp = root / "runner-temp"
        self.workspace = root / "workspace"
        self.temp.mkdir()
        self.workspace.mkdir()
        self.python = Path(sys.executable)
        self.path_file = root / "github-path"
        self.action_path = PROJECT_ROOT
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
            "GITHUB_ACTION_PATH": str(self.action_path),
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
            timeout=300,
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


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


@pytest.fixture(scope="module")
def offline_index(project_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the install step's pip needs offline: the wheel folder instead of the index,
    and the test environment's packages, less cosgitops, as the dependencies."""
    packages = tmp_path_factory.mktemp("dependencies")
    for folder in {Path(sysconfig.get_paths()[name]) for name in ("purelib", "platlib")}:
        for entry in folder.iterdir():
            if entry.name.startswith(("cosgitops", "__editable__")) or entry.suffix == ".pth":
                continue
            if not (packages / entry.name).exists():
                (packages / entry.name).symlink_to(entry)
    return {
        "PYTHONPATH": str(packages),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(project_wheel.parent),
        "PIP_NO_BUILD_ISOLATION": "0",  # pip reads "0" as: do not isolate the build
        "PIP_NO_CACHE_DIR": "1",
    }


@pytest.fixture
def installing(runner: Runner, offline_index: dict[str, str]) -> Runner:
    """A runner whose install step's real pip works offline."""
    runner.extra_env.update(offline_index)
    return runner


def installed(runner: Runner, code: str) -> str:
    """What ``code`` prints in the venv the install step made (its packages only)."""
    return subprocess.run(
        [str(runner.venv / "bin" / "python"), "-c", code],
        cwd=runner.root,
        env={**os.environ, **runner.extra_env},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


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


@pytest.mark.slow
def test_default_installs_the_source_of_the_action_ref(installing: Runner, tmp_path: Path) -> None:
    """With no version, the step builds and installs the action's own checkout: here a
    copy of this one, marked with a version of its own."""
    runner = installing
    source = tmp_path / "action-ref"
    shutil.copytree(
        PROJECT_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "tests",
            ".cosgitops", ".ci",
        ),
    )  # fmt: skip
    init = source / "cosgitops" / "__init__.py"
    init.write_text(init.read_text().replace('"0.1.0"', '"0.1.0+actionref"'))
    runner.action_path = source
    code, outputs, output = runner.run("install")
    assert code == 0, output
    assert outputs["version"] == "0.1.0+actionref"
    assert runner.path_file.read_text().splitlines() == [f"{runner.venv}/bin"]
    assert (runner.venv / ".cosgitops-spec").read_text() == str(source)
    module = installed(runner, "import cosgitops; print(cosgitops.__file__)")
    assert Path(module).is_relative_to(runner.venv)
    schema = installed(
        runner, "from cosgitops.resources import schema_path; print(schema_path('derivative'))"
    )
    assert Path(schema).is_relative_to(runner.venv) and Path(schema).is_file()


@pytest.mark.slow
def test_version_input_installs_from_the_package_index_once(installing: Runner) -> None:
    """A version (with or without its v) installs that release from the index, once per
    job; asking for another one replaces the installation."""
    runner = installing
    code, outputs, output = runner.run("install", version="v0.1.0")
    assert code == 0, output
    assert outputs["version"] == cosgitops.__version__
    assert (runner.venv / ".cosgitops-spec").read_text() == "cosgitops==0.1.0"
    assert installed(runner, "import cosgitops; print(cosgitops.__file__)").startswith(
        str(runner.venv)
    )
    marker = runner.venv / "left-by-the-first-install"
    marker.write_text("")
    code, outputs, output = runner.run("install", version="0.1.0")  # the same release
    assert code == 0, output
    assert "already installed from cosgitops==0.1.0" in output
    assert marker.exists()
    assert outputs["version"] == cosgitops.__version__
    code, outputs, output = runner.run("install", version="latest")
    assert code == 0, output
    assert not marker.exists()  # a new venv
    assert (runner.venv / ".cosgitops-spec").read_text() == "cosgitops"
    assert outputs["version"] == cosgitops.__version__


def test_a_failed_install_fails_the_step(installing: Runner) -> None:
    runner = installing
    code, outputs, output = runner.run("install", version="1.2.0")
    assert code != 0
    assert "No matching distribution found for cosgitops==1.2.0" in output
    assert "version" not in outputs
    assert not (runner.venv / ".cosgitops-spec").exists()
    assert not (runner.venv / "bin" / "cosgitops").exists()


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
