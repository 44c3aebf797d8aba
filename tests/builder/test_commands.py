"""``cosgitops plan``, ``render`` and ``build`` as a user runs them (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builder.helpers import commit_all, make_repo
from tests.helpers.services import RegistryServer

FILES = {
    "derivatives/edge/overlay/etc/motd": "edge\n",
    "derivatives/edge/oem/90_edge.yaml": "name: edge\nstages:\n  boot:\n    - commands: [true]\n",
}


def cosgitops(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosgitops", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path / "repo",
        {
            "edge": {},
            "web": {
                "base": "registry.example.com/cos/base:1",
                "packages": ["nginx"],
                "run": ["true"],
            },
        },
        FILES,
    )


def test_build_prints_the_pinned_reference_and_json(repo: Path) -> None:
    text = cosgitops("build", "edge", "-q", cwd=repo / "derivatives")
    assert text.returncode == 0, text.stderr
    layout = repo.resolve() / ".cosgitops/registry/edge"
    assert text.stdout.startswith(f"oci:{layout}@sha256:")
    assert text.stdout.count("\n") == 1
    as_json = cosgitops("build", "edge", "--format", "json", "-C", str(repo))
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["image"] == text.stdout.strip()
    assert result["builder"] == "oci" and result["version"] == "1.0.0"
    assert [layer["mediaType"] for layer in result["newLayers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ] * 3
    assert "edge 1.0.0: 3 new layer(s)" in as_json.stderr  # line progress when not a TTY
    assert "uncommitted" not in as_json.stderr
    (repo / "derivatives/edge/overlay/etc/motd").write_text("edited, not committed\n")
    dirty = cosgitops("build", "edge", "-C", str(repo))
    assert dirty.returncode == 0
    assert (
        "1 uncommitted change(s) in edge (e.g. derivatives/edge/overlay/etc/motd)" in dirty.stderr
    )
    assert dirty.stdout != text.stdout


def test_build_push_to_a_registry(repo: Path, registry: RegistryServer) -> None:
    target = f"{registry.host}/fleet/edge"
    result = cosgitops("build", "edge", "--push", "--to", target, "--insecure", "-C", str(repo))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{target}@sha256:")
    refused = cosgitops("build", "edge", "--push", "--to", target, "-C", str(repo))
    assert refused.returncode == 1  # plain HTTP without --insecure: refused, cleanly
    assert "Traceback" not in refused.stderr and "hint:" in refused.stderr


def test_build_usage_errors(repo: Path) -> None:
    unknown = cosgitops("build", "nope", "-C", str(repo))
    assert unknown.returncode == 2
    assert "no derivative named 'nope'" in unknown.stderr
    assert "edge, web" in unknown.stderr
    daemonless = cosgitops("build", "web", "--builder", "oci", "-C", str(repo))
    assert daemonless.returncode == 2
    assert "docker builder" in daemonless.stderr and "Traceback" not in daemonless.stderr


def test_an_invalid_repository_is_refused(repo: Path) -> None:
    (repo / "derivatives/edge/derivative.yaml").write_text(
        (repo / "derivatives/edge/derivative.yaml").read_text().replace("1.0.0", "one")
    )
    result = cosgitops("build", "edge", "-C", str(repo))
    assert result.returncode == 1
    assert "derivative.yaml" in result.stderr and "Traceback" not in result.stderr


def test_plan_text_and_json(repo: Path) -> None:
    (repo / "derivatives/edge/overlay/etc/motd").write_text("edge 2\n")
    commit_all(repo, "edge")
    as_json = cosgitops("plan", "--since", "HEAD~1", "--format", "json", "-C", str(repo))
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "include": [
            {"name": "edge", "version": "1.0.0", "builder": "oci", "folder": "derivatives/edge"}
        ]
    }
    everything = cosgitops("plan", "--format", "json", "-C", str(repo))
    assert [e["builder"] for e in json.loads(everything.stdout)["include"]] == ["oci", "docker"]
    text = cosgitops("plan", "--since", "HEAD~1", "-C", str(repo))
    assert text.stdout == "edge 1.0.0 (oci): derivatives/edge/overlay/etc/motd\n"
    nothing = cosgitops("plan", "--since", "HEAD", "--until", "HEAD", "-C", str(repo))
    assert "nothing to build" in nothing.stdout
    bad_ref = cosgitops("plan", "--since", "no-such-ref", "-C", str(repo))
    assert bad_ref.returncode == 1 and "unknown git ref" in bad_ref.stderr


def test_render_writes_a_context(repo: Path, tmp_path: Path) -> None:
    result = cosgitops("render", "web", "-o", str(tmp_path / "ctx"), "-C", str(repo))
    assert result.returncode == 0, result.stderr
    dockerfile = (tmp_path / "ctx/Dockerfile").read_text()
    assert "apk add --no-cache nginx" in dockerfile and "RUN true" in dockerfile
    assert "docker build -t web:1.0.0" in result.stderr
    missing = cosgitops("render", "web", "-C", str(repo))
    assert missing.returncode == 2  # -o is required
