"""``render``: the Dockerfile and context (the docker build of it is in test_docker.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cosgitops.builder.inputs import collect_inputs
from cosgitops.builder.render import MARKER, dockerfile_text, os_release_script, render_context
from cosgitops.errors import UsageError
from tests.builder.helpers import load, make_repo

FILES = {
    "derivatives/web/overlay/etc/nginx/site.conf": "server {}\n",
    "derivatives/web/overlay/usr/local/bin/start": "#!/bin/sh\nexec nginx\n",
    "derivatives/web/oem/90_web.yaml": "name: web\n",
    "derivatives/web/oem/notes.txt": "not copied\n",
}


def _web(tmp_path: Path, **spec: object) -> Path:
    values: dict[str, object] = {
        "base": "registry.example.com/cos/base:1.0",
        "packages": ["nginx", "curl"],
        "run": ["systemctl enable nginx", "printf 'a\\nb' > /etc/x \\"],
        "osRelease": {"VARIANT": "web server"},
        "labels": {"com.example.owner": 'team "web"'},
    }
    values.update(spec)
    repo = make_repo(tmp_path / "repo", {"web": values}, FILES)
    (repo / "derivatives/web/overlay/usr/local/bin/start").chmod(0o755)
    return repo


def test_rendered_dockerfile_and_context(tmp_path: Path) -> None:
    repo = _web(tmp_path)
    repository, derivatives = load(repo)
    inputs = collect_inputs(repository, derivatives["web"])
    out = tmp_path / "context"
    rendered = render_context(inputs, out)
    assert rendered.directory == out and rendered.files == 3
    dockerfile = (out / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=registry.example.com/cos/base:1.0\nFROM ${BASE_IMAGE}\n" in dockerfile
    for manager in ("apk add --no-cache nginx curl", "apt-get install -y --no-install-recommends",
                    "zypper --non-interactive install --no-recommends nginx curl",
                    "dnf install -y"):  # fmt: skip
        assert manager in dockerfile
    assert "RUN systemctl enable nginx\n" in dockerfile
    # a command ending in a backslash cannot be a shell-form line: exec form carries it
    assert 'RUN ["/bin/sh", "-c", "printf \'a\\\\nb\' > /etc/x \\\\"]' in dockerfile
    assert dockerfile.index("COPY overlay/ /") < dockerfile.index("RUN systemctl enable nginx")
    assert "COPY oem/ /system/oem/\n" in dockerfile
    assert 'com.example.owner="team \\"web\\""' in dockerfile
    assert 'org.opencontainers.image.version="1.0.0"' in dockerfile
    assert 'cosgitops.os-release=""' in dockerfile  # computed in the image, not known here
    assert (out / "overlay/etc/nginx/site.conf").read_text() == "server {}\n"
    assert (out / "overlay/usr/local/bin/start").stat().st_mode & 0o777 == 0o755
    assert (out / "overlay/etc/nginx/site.conf").stat().st_mode & 0o777 == 0o644
    assert (out / "oem/90_web.yaml").is_file() and not (out / "oem/notes.txt").exists()
    assert not (out / "os-release").exists()
    assert (out / MARKER).is_file()
    # rendering again replaces our own earlier render
    render_context(inputs, out)
    assert (out / "Dockerfile").read_text() == dockerfile


def test_config_only_derivative_copies_a_complete_os_release(tmp_path: Path) -> None:
    repo = _web(tmp_path, packages=[], run=[], base="scratch")
    repository, derivatives = load(repo)
    inputs = collect_inputs(repository, derivatives["web"])
    render_context(inputs, tmp_path / "out")
    dockerfile = (tmp_path / "out/Dockerfile").read_text()
    assert "RUN" not in dockerfile.replace("# ", "")
    assert "COPY os-release /etc/os-release" in dockerfile
    assert "ARG BASE_IMAGE=scratch" in dockerfile
    text = (tmp_path / "out/os-release").read_text()
    assert "IMAGE_REPO=oci:.cosgitops/registry/web" in text
    assert 'VARIANT="web server"' in text


def test_layout_base_gets_a_local_name_and_instructions(tmp_path: Path) -> None:
    repo = _web(tmp_path, base="oci:/srv/images/base:2")
    repository, derivatives = load(repo)
    inputs = collect_inputs(repository, derivatives["web"])
    text = dockerfile_text(derivatives["web"], inputs.identity, has_overlay=True, has_oem=False)
    assert "ARG BASE_IMAGE=cosgitops-base/web:2" in text
    assert "skopeo copy oci:/srv/images/base:2 docker-daemon:cosgitops-base/web:2" in text
    assert "COPY oem/" not in text


def _run_os_release_script(script: str, root: Path) -> str:
    """Run the script against ``root`` instead of the image's / and return the file."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        script = script.replace(path, f"{root}{path}")
    subprocess.run(["sh", "-c", script], check=True, capture_output=True, timeout=30)
    return (root / "etc/os-release").read_text()


def test_os_release_script_is_one_shell_line_that_merges(tmp_path: Path) -> None:
    repo = _web(tmp_path)
    repository, derivatives = load(repo)
    script = os_release_script(collect_inputs(repository, derivatives["web"]).identity)
    assert "\n" not in script
    assert "grep -v -E '^(IMAGE|IMAGE_REPO|IMAGE_TAG|TIMESTAMP|VARIANT)='" in script
    added = [
        'VARIANT="web server"',
        "IMAGE_REPO=oci:.cosgitops/registry/web",
        "IMAGE_TAG=1.0.0",
        "IMAGE=oci:.cosgitops/registry/web:1.0.0",
    ]

    # the image's own file: kept, less the keys cosgitops sets; a symlink is replaced,
    # never written through
    root = tmp_path / "linked"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("NAME=Debian\nVARIANT=old\nIMAGE=stale\nID=debian\n")
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    lines = _run_os_release_script(script, root).splitlines()
    assert lines[:2] == ["NAME=Debian", "ID=debian"]
    assert lines[2:6] == added and lines[6].startswith("TIMESTAMP=") and len(lines) == 7
    assert not (root / "etc/os-release").is_symlink()
    assert (root / "usr/lib/os-release").read_text().startswith("NAME=Debian\nVARIANT=old")

    # only /usr/lib/os-release: read from there
    root = tmp_path / "usr-only"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("NAME=Alpine\n")
    assert _run_os_release_script(script, root).splitlines()[:5] == ["NAME=Alpine", *added]

    # none at all: a fresh file from the derivative
    root = tmp_path / "bare"
    (root / "etc").mkdir(parents=True)
    lines = _run_os_release_script(script, root).splitlines()
    assert lines[:5] == ["NAME=web", "ID=web", "VERSION=1.0.0", "VERSION_ID=1.0.0",
                         'PRETTY_NAME="web test image 1.0.0"']  # fmt: skip
    assert lines[5:9] == added


def test_render_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    repo = _web(tmp_path)
    repository, derivatives = load(repo)
    inputs = collect_inputs(repository, derivatives["web"])
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not delete")
    with pytest.raises(UsageError):
        render_context(inputs, foreign)
    assert (foreign / "thesis.tex").read_text() == "do not delete"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError):
        render_context(inputs, a_file)
    assert not [p for p in os.listdir(tmp_path) if ".render-" in p]
