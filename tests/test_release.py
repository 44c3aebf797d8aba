"""`cosgitops release` on embedded defaults (OCI layout, development key, local index):
what gets released, what is refused, idempotency, and the summary a CI run shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cosgitops.publish.reader import open_index
from cosgitops.release import release

UNPINNED_BASE = "registry.example.invalid/cos/base:1.0"


def _repository(root: Path) -> Path:
    from cosgitops.scaffold import init_repository

    init_repository(root, name="fleet")
    example = root / "derivatives" / "example"
    broken = root / "derivatives" / "unpinned"
    broken.mkdir()
    definition = yaml.safe_load((example / "derivative.yaml").read_text())
    definition["metadata"]["name"] = "unpinned"
    definition["spec"]["base"] = UNPINNED_BASE  # valid YAML (a warning), refused by release
    (broken / "derivative.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "fleet"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def test_a_refused_derivative_fails_the_run_and_the_others_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repository(tmp_path / "repo")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    report = release(repo)

    assert not report.ok
    outcomes = {outcome.name: outcome for outcome in report.outcomes}
    assert outcomes["example"].status == "released"
    layout = repo / ".cosgitops" / "registry" / "example"
    assert outcomes["example"].image.startswith(f"oci:{layout}@sha256:")
    assert outcomes["example"].signer  # signed and verified before it was published
    assert outcomes["unpinned"].status == "failed"
    assert "not pinned by digest" in outcomes["unpinned"].error
    assert outcomes["unpinned"].hint
    index = open_index(repo / "public")
    assert index.derivatives() == ["example"]
    assert [r.version for r in index.releases("example")] == ["0.1.0"]
    assert report.development_key == repo / ".cosgitops" / "keys" / "cosign.key"

    table = summary.read_text()
    assert "| example | 0.1.0 | released |" in table
    assert "| unpinned | 0.1.0 | failed: " in table


def test_release_is_idempotent_and_the_cli_names_the_failure(tmp_path: Path) -> None:
    repo = _repository(tmp_path / "repo")
    first = subprocess.run(
        [sys.executable, "-m", "cosgitops", "release", "-C", str(repo), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 1
    assert "Traceback" not in first.stderr
    assert "release failed for unpinned 0.1.0" in first.stderr
    assert json.loads(first.stdout)["ok"] is False
    timestamp = (repo / "public" / "metadata" / "timestamp.json").read_bytes()

    again = subprocess.run(
        [sys.executable, "-m", "cosgitops", "release", "-C", str(repo), "--only", "example"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert "published" in again.stdout
    # nothing was re-signed or re-published
    assert (repo / "public" / "metadata" / "timestamp.json").read_bytes() == timestamp


def test_only_names_an_existing_derivative(tmp_path: Path) -> None:
    from cosgitops.errors import UsageError

    repo = _repository(tmp_path / "repo")
    with pytest.raises(UsageError, match="no derivative named nope"):
        release(repo, only=["nope"])
    assert not (repo / "public").exists()


def test_public_dir_overrides_the_configured_folder(tmp_path: Path) -> None:
    repo = _repository(tmp_path / "repo")
    elsewhere = tmp_path / "pages"
    report = release(repo, only=["example"], public_dir=elsewhere)
    assert report.ok
    assert open_index(elsewhere).derivatives() == ["example"]
    assert not (repo / "public").exists()
    assert os.path.isfile(elsewhere / "metadata" / "1.root.json")
