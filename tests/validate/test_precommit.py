"""The real pre-commit framework in a real git repository runs the scaffold's hook."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cosgitops.scaffold import init_repository
from cosgitops.source import load_yaml
from tests.helpers.services import require_binary

PROJECT = Path(__file__).resolve().parent.parent.parent
VENV_BIN = str(Path(sys.executable).parent)


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(
        list(args), cwd=root, env=env, check=False, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    require_binary("git", "git")
    root = tmp_path / "fleet"
    init_repository(root)
    assert run(root, "git", "init", "-q").returncode == 0
    installed = run(root, "pre-commit", "install")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return root


def commit(root: Path, message: str) -> subprocess.CompletedProcess[str]:
    assert run(root, "git", "add", "-A").returncode == 0
    return run(root, "git", "commit", "-m", message)


def test_a_broken_derivative_is_refused_and_a_fixed_one_accepted(repo: Path) -> None:
    first = commit(repo, "scaffold")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "cosgitops validate" in first.stdout + first.stderr

    definition = repo / "derivatives" / "example" / "derivative.yaml"
    text = definition.read_text()
    definition.write_text(text.replace("version: 0.1.0", "version: 0.10"))
    refused = commit(repo, "broken")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    match = re.search(r"derivatives/example/derivative\.yaml:(\d+):(\d+): error\[(\S+)\]", output)
    assert match, output
    line = int(match[1])
    assert definition.read_text().splitlines()[line - 1].strip() == "version: 0.10"
    assert match[3] == "yaml-implicit-type"
    assert run(repo, "git", "rev-list", "--count", "HEAD").stdout.strip() == "1"

    definition.write_text(text.replace("version: 0.1.0", "version: 0.2.0"))
    accepted = commit(repo, "fixed")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert run(repo, "git", "rev-list", "--count", "HEAD").stdout.strip() == "2"


def test_a_change_to_an_overlay_file_checks_its_derivative(repo: Path) -> None:
    assert commit(repo, "scaffold").returncode == 0
    definition = repo / "derivatives" / "example" / "derivative.yaml"
    definition.write_text(definition.read_text().replace("name: example", "name: other"))
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "sneak past with --no-verify", "--no-verify")
    (repo / "derivatives" / "example" / "overlay" / "etc" / "motd").write_text("changed\n")
    refused = commit(repo, "only the overlay file is staged")
    assert refused.returncode != 0
    assert "error[name-matches-folder]" in refused.stdout + refused.stderr


def test_a_private_key_anywhere_is_refused(repo: Path) -> None:
    from tests.validate.helpers import private_key_pem

    assert commit(repo, "scaffold").returncode == 0
    (repo / "deploy.key").write_text(private_key_pem())
    refused = commit(repo, "oops")
    assert refused.returncode != 0
    assert "deploy.key:1:1: error[private-key]" in refused.stdout + refused.stderr


def test_the_manifest_and_the_scaffold_config_are_valid_for_pre_commit(tmp_path: Path) -> None:
    manifest = run(PROJECT, "pre-commit", "validate-manifest", ".pre-commit-hooks.yaml")
    assert manifest.returncode == 0, manifest.stdout + manifest.stderr
    [hook] = load_yaml(PROJECT / ".pre-commit-hooks.yaml").value
    assert hook["id"] == "cosgitops-validate"
    assert hook["entry"] == "cosgitops validate"
    assert hook["pass_filenames"] is True
    assert re.search(hook["files"], "derivatives/edge/oem/10.yaml")
    init_repository(tmp_path / "fleet")
    config = run(tmp_path / "fleet", "pre-commit", "validate-config", ".pre-commit-config.yaml")
    assert config.returncode == 0, config.stdout + config.stderr
