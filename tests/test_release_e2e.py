"""The GitOps loop over real parts, as a user meets them.

A git repository with the real pre-commit hook (a bad commit refused, a good one
accepted) → `cosgitops release` (docker builder through the real dockerd, because the
derivative installs packages; push to a real docker-registry on loopback; cosign-format
signatures; TUF index) → the index served over HTTP on 127.0.0.1 → a device root
installed from it → a second commit, a second release, and an upgrade that downloads
only the layers that changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.builder.helpers import busybox_entries, skopeo_copy, skopeo_inspect, write_base_layout
from tests.helpers.services import RegistryServer, StaticServer, require_binary, require_docker

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

FAKE_APK = b'#!/bin/sh\necho "$*" >> /var/log/fake-apk.log\n'
NAME = "gateway"


def _cosgitops(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "cosgitops", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, (
            f"cosgitops {' '.join(args)}:\n{result.stdout}{result.stderr}"
        )
    return result


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=check
    )


@pytest.fixture
def docker_images(registry: RegistryServer) -> Iterator[Any]:
    client = require_docker()
    yield client
    for image in client.images.list():
        names = [*image.tags, *(image.attrs.get("RepoDigests") or [])]
        if any(name.startswith(f"{registry.host}/") for name in names):
            for name in image.tags:
                with contextlib.suppress(Exception):
                    client.images.remove(name, force=True)


@pytest.fixture
def base_image(registry: RegistryServer, tmp_path: Path) -> str:
    require_binary("skopeo", "skopeo")
    layout = write_base_layout(tmp_path / "base", [busybox_entries({"sbin/apk": FAKE_APK})])
    name = f"{registry.host}/cos/busybox:1"
    skopeo_copy(layout.reference, f"docker://{name}")
    return f"{name}@{skopeo_inspect(f'docker://{name}')['Digest']}"


def _write_repository(repo: Path, registry: RegistryServer, base: str) -> Path:
    from cosgitops.scaffold import init_repository

    init_repository(repo, name="e2e-fleet")
    config = yaml.safe_load((repo / "cosgitops.yaml").read_text())
    config["spec"]["registry"] = f"{registry.host}/fleet"
    (repo / "cosgitops.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    folder = repo / "derivatives" / NAME
    (repo / "derivatives" / "example").rename(folder)
    derivative = yaml.safe_load((folder / "derivative.yaml").read_text())
    derivative["metadata"]["name"] = NAME
    derivative["spec"].update(
        {"version": "1.0.0", "base": base, "packages": ["htop"], "run": ["mkdir -p /var/lib/gw"]}
    )
    (folder / "derivative.yaml").write_text(yaml.safe_dump(derivative, sort_keys=False))
    return folder


def _release(repo: Path) -> dict[str, Any]:
    result = _cosgitops("release", "--insecure", "--format", "json", cwd=repo)
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["ok"] is True
    return report


def _layers(public: Path, version: str) -> dict[str, int]:
    from cosgitops.publish.reader import open_index

    manifest = open_index(public).manifest(NAME, version)
    return {layer.digest: layer.size for layer in manifest.platforms[0].layers}


def test_commit_release_serve_install_then_upgrade_only_changed_layers(
    tmp_path: Path, registry: RegistryServer, base_image: str, docker_images: Any
) -> None:
    require_binary("git", "git")
    repo = tmp_path / "repo"
    folder = _write_repository(repo, registry, base_image)
    _git(repo, "init", "-q", "-b", "main")
    hook = subprocess.run(
        [sys.executable, "-m", "pre_commit", "install"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "pre-commit installed" in hook.stdout

    # a broken derivative is refused by the real hook, with file:line:col
    good = (folder / "derivative.yaml").read_text()
    (folder / "derivative.yaml").write_text(good.replace("version: 1.0.0", "version: 1.0"))
    _git(repo, "add", "-A")
    refused = _git(repo, "commit", "-m", "broken", check=False)
    assert refused.returncode != 0
    assert f"derivatives/{NAME}/derivative.yaml:" in refused.stdout + refused.stderr
    assert _git(repo, "rev-list", "--all").stdout == ""  # nothing was committed

    (folder / "derivative.yaml").write_text(good)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"{NAME} 1.0.0")

    first = _release(repo)
    (released,) = first["derivatives"]
    assert released["status"] == "released"
    assert released["image"].startswith(f"{registry.host}/fleet/{NAME}@sha256:")
    assert released["signer"]  # signed, and verified under the policy before publishing
    # idempotent: the same commit again changes nothing
    again = _release(repo)
    assert [d["status"] for d in again["derivatives"]] == ["published"]
    assert again["index"] is None

    public = repo / "public"
    with StaticServer(public) as index_server:
        device = tmp_path / "device"
        _cosgitops(
            "device", "install", "--root", str(device),
            "--index", index_server.url,
            "--trusted-root", str(public / "metadata" / "1.root.json"),
            "--derivative", NAME,
            "--key", str(repo / ".cosgitops" / "keys" / "cosign.pub"),
            "--insecure-registry",
            cwd=tmp_path,
        )  # fmt: skip
        installed = json.loads(
            _cosgitops(
                "device", "status", "--root", str(device), "--format", "json", cwd=tmp_path
            ).stdout
        )
        assert installed["active"]["version"] == "1.0.0"
        assert installed["active"]["digest"] == released["image"].rsplit("@", 1)[1]
        slot = device / "state" / "active"
        assert (slot / "var" / "log" / "fake-apk.log").read_text() == "add --no-cache htop\n"
        assert (slot / "var" / "lib" / "gw").is_dir()

        # the second commit changes one overlay file
        motd = folder / "overlay" / "etc" / "motd"
        motd.write_text(motd.read_text() + "second release\n")
        (folder / "derivative.yaml").write_text(good.replace("version: 1.0.0", "version: 1.1.0"))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"{NAME} 1.1.0")
        second = _release(repo)
        assert [d["status"] for d in second["derivatives"]] == ["released"]

        upgrade = json.loads(
            _cosgitops(
                "device", "upgrade", "--root", str(device), "--format", "json", cwd=tmp_path
            ).stdout
        )
    old, new = _layers(public, "1.0.0"), _layers(public, "1.1.0")
    changed = {digest: size for digest, size in new.items() if digest not in old}
    assert changed and len(changed) < len(new)  # the base and package layers are shared
    assert sorted(upgrade["layers"]["downloaded"]) == sorted(changed)
    assert upgrade["layers"]["bytesDownloaded"] == sum(changed.values())
    assert (device / "state" / "active" / "etc" / "motd").read_text().endswith("second release\n")
