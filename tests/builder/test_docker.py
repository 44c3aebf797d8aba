"""The docker side against the real dockerd: ``render`` output built by the plain
docker CLI, the docker builder through the SDK (packages, run, a failing step), and
pushes to a loopback docker-registry. Base images are made here, never pulled from
the internet: a busybox-static root with a fake ``apk`` that records its arguments."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cosgitops.builder import build_derivative
from cosgitops.builder.image import base_os_release, parse_os_release
from cosgitops.builder.inputs import collect_inputs
from cosgitops.builder.render import render_context
from cosgitops.errors import BuildError
from cosgitops.oci.store import StoreOptions
from tests.builder.helpers import (
    busybox_entries,
    load,
    make_repo,
    skopeo_copy,
    skopeo_inspect,
    write_base_layout,
)
from tests.helpers.services import RegistryServer, require_binary, require_docker

pytestmark = [pytest.mark.docker, pytest.mark.registry]

FAKE_APK = b'#!/bin/sh\necho "$*" >> /var/log/fake-apk.log\n'
BASE_OS_RELEASE = b'NAME="Busybox Test"\nID=busybox-test\nVERSION_ID=1\nIMAGE_TAG=stale\n'


OUR_PREFIXES = ("cosgitops-test/", "cosgitops-build/", "cosgitops-base/")


@pytest.fixture
def docker_client(registry: RegistryServer) -> Iterator[Any]:
    client = require_docker()
    before = {image.id for image in client.images.list(all=True)}
    yield client
    # Remove only what this test made: new images named after this test's registry (its
    # port is unique) or our local prefixes, and untagged intermediates built on them.
    # Other images on the daemon are not ours to touch.
    prefixes = (f"{registry.host}/", *OUR_PREFIXES)
    new = [image for image in client.images.list(all=True) if image.id not in before]
    new_ids = {image.id for image in new}
    names = [
        name
        for image in new
        for name in [*image.tags, *(image.attrs.get("RepoDigests") or [])]
        if name.startswith(prefixes)
    ]
    intermediates = [
        image.id
        for image in new
        if not image.tags and not image.attrs.get("RepoDigests")
        and image.attrs.get("Parent") in new_ids
    ]  # fmt: skip
    for name in [*reversed(intermediates), *names]:
        with contextlib.suppress(Exception):
            client.images.remove(name, force=True)


@pytest.fixture
def base_in_registry(registry: RegistryServer, tmp_path: Path) -> str:
    require_binary("skopeo", "skopeo")
    base = write_base_layout(
        tmp_path / "base",
        [busybox_entries({"sbin/apk": FAKE_APK, "etc/os-release": BASE_OS_RELEASE})],
    )
    name = f"{registry.host}/cos/busybox:1"
    skopeo_copy(base.reference, f"docker://{name}")
    # pinned as release requires: tag for people, digest for machines
    return f"{name}@{skopeo_inspect(f'docker://{name}')['Digest']}"


def _run(client: Any, image: str, command: str) -> str:
    output = client.containers.run(
        image, ["/bin/sh", "-c", command], remove=True, network_mode="none"
    )
    return bytes(output).decode()


def test_rendered_context_builds_with_plain_docker_build(
    docker_client: Any, base_in_registry: str, tmp_path: Path
) -> None:
    require_binary("docker", "docker.io")
    repo = make_repo(
        tmp_path / "repo",
        {"kiosk": {"base": base_in_registry, "osRelease": {"VARIANT": "kiosk"}}},
        {
            "derivatives/kiosk/overlay/etc/motd": "kiosk mode\n",
            "derivatives/kiosk/oem/90_kiosk.yaml": "name: kiosk\n",
        },
    )
    repository, derivatives = load(repo)
    render_context(collect_inputs(repository, derivatives["kiosk"]), tmp_path / "ctx")
    tag = "cosgitops-test/rendered:1"
    built = subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(tmp_path / "ctx")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    output = _run(docker_client, tag, "cat /etc/motd /system/oem/90_kiosk.yaml /etc/os-release")
    assert "kiosk mode\n" in output and "name: kiosk\n" in output
    values = parse_os_release(output.split("name: kiosk\n", 1)[1])
    assert values["IMAGE_TAG"] == "1.0.0" and values["VARIANT"] == "kiosk"
    labels = docker_client.images.get(tag).labels
    assert labels["org.opencontainers.image.version"] == "1.0.0"
    from_label = parse_os_release(base_os_release({"config": {"Labels": labels}}) or "")
    assert from_label == values  # the label is the file, for builds on top of this image


def test_packages_and_run_build_through_the_sdk_and_push(
    docker_client: Any, base_in_registry: str, registry: RegistryServer, tmp_path: Path
) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {
            "web": {
                "base": base_in_registry,
                "packages": ["htop", "curl"],
                "run": ["cat /etc/motd > /etc/motd.copy", "echo ran > /var/log/run.log"],
                "osRelease": {"VARIANT": "web"},
            }
        },
        {"derivatives/web/overlay/etc/motd": "from the overlay\n"},
    )
    repository, derivatives = load(repo)
    target = f"{registry.host}/fleet/web"
    result = build_derivative(
        repository,
        derivatives["web"],
        push=True,
        target=target,
        options=StoreOptions(insecure=True),
    )
    assert result.builder == "docker"
    assert result.reference.startswith(f"{target}@sha256:")
    inspected = skopeo_inspect(f"docker://{target}:1.0.0")
    assert inspected["Digest"] == result.digest
    assert [layer.digest for layer in result.platforms[0].layers] == inspected["Layers"]
    assert inspected["Labels"]["org.opencontainers.image.revision"] == result.revision
    assert 0 < len(result.new_layers) < len(inspected["Layers"])
    assert result.base is not None and result.base.startswith(f"{registry.host}/cos/busybox@")

    image = f"{target}:1.0.0"
    assert _run(docker_client, image, "cat /var/log/fake-apk.log") == "add --no-cache htop curl\n"
    assert _run(docker_client, image, "cat /etc/motd.copy /var/log/run.log") == (
        "from the overlay\nran\n"
    )
    values = parse_os_release(_run(docker_client, image, "cat /etc/os-release"))
    assert values["ID"] == "busybox-test"  # the base's own os-release, extended
    assert values["IMAGE_TAG"] == "1.0.0"
    assert values["IMAGE_REPO"] == target
    assert values["VARIANT"] == "web"
    # the final file (known only after the RUN steps) is recorded in the label too
    config = skopeo_inspect(f"docker://{image}", config=True)
    assert parse_os_release(base_os_release(config) or "") == values

    # a config-only derivative on top of it extends that file without reading a layer
    child_repo = make_repo(tmp_path / "child", {"child": {"base": result.reference}})
    child_repository, children = load(child_repo)
    child = build_derivative(
        child_repository,
        children["child"],
        push=True,
        target=f"{registry.host}/fleet/child",
        options=StoreOptions(insecure=True),
    )
    assert child.builder == "oci" and child.bytes_downloaded < 16 * 1024
    child_config = skopeo_inspect(f"docker://{registry.host}/fleet/child:1.0.0", config=True)
    child_values = parse_os_release(base_os_release(child_config) or "")
    assert child_values["ID"] == "busybox-test" and child_values["VARIANT"] == "web"
    assert child_values["IMAGE_REPO"] == f"{registry.host}/fleet/child"


def test_a_failing_run_step_is_a_build_error_with_its_output(
    docker_client: Any, base_in_registry: str, tmp_path: Path
) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {
            "broken": {
                "base": base_in_registry,
                "run": ["echo preparing", "echo the disk is full >&2; exit 3"],
            }
        },
    )
    repository, derivatives = load(repo)
    with pytest.raises(BuildError) as error:
        build_derivative(repository, derivatives["broken"], target=f"oci:{tmp_path}/out")
    message = str(error.value)
    assert "step 4/6 " in message  # ARG, FROM, RUN, RUN
    assert "`RUN echo the disk is full >&2; exit 3`" in message
    assert message.endswith("\n  | the disk is full")
    assert "\x1b" not in message and "intermediate container" not in message
    assert "non-zero code: 3" in message
    assert error.value.exit_code == 1 and error.value.hint


def test_docker_build_into_an_oci_layout_from_a_layout_base(
    docker_client: Any, tmp_path: Path
) -> None:
    require_binary("skopeo", "skopeo")
    base = write_base_layout(tmp_path / "base", [busybox_entries({"sbin/apk": FAKE_APK})])
    repo = make_repo(
        tmp_path / "repo",
        {"tools": {"base": base.reference, "packages": ["jq"]}},
    )
    repository, derivatives = load(repo)
    result = build_derivative(repository, derivatives["tools"])
    layout = repo / ".cosgitops/registry/tools"
    assert result.name == f"oci:{layout}"
    inspected = skopeo_inspect(f"oci:{layout}:1.0.0")
    assert inspected["Digest"] == result.digest
    assert inspected["Labels"]["org.opencontainers.image.title"] == "tools"
    skopeo_copy(f"oci:{layout}:1.0.0", f"oci:{tmp_path}/copy:x")
