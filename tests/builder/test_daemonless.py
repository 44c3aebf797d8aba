"""The daemonless builder against real parts: real git clones, OCI layouts read by
skopeo, a real docker-registry on loopback."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from cosgitops.builder import build_derivative, choose_builder, resolve_target
from cosgitops.builder.daemonless import build_image
from cosgitops.builder.image import OS_RELEASE_LABEL, parse_os_release
from cosgitops.builder.inputs import collect_inputs
from cosgitops.errors import BuildError, UsageError
from cosgitops.model import Derivative
from cosgitops.oci import open_store
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.oci.store import StoreOptions
from tests.builder.helpers import (
    COMMIT_EPOCH,
    busybox_entries,
    git,
    load,
    make_repo,
    random_entries,
    skopeo_copy,
    skopeo_inspect,
    write_base_layout,
)
from tests.helpers.services import RegistryServer, require_binary

INSECURE = StoreOptions(insecure=True)
EDGE_FILES = {
    "derivatives/edge/overlay/etc/motd": "welcome to the edge\n",
    "derivatives/edge/overlay/usr/local/bin/hello": "#!/bin/sh\necho hello\n",
    "derivatives/edge/oem/90_custom.yaml": "name: custom\nstages: {boot: [{commands: [true]}]}\n",
}


def _layer_files(store: OCILayoutStore, digest: str) -> dict[str, tarfile.TarInfo | bytes]:
    """Regular files as their content, everything else as its tar header."""
    return {name: data or info for name, (info, data) in _layer(store, digest).items()}


def _layer(store: OCILayoutStore, digest: str) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    data = gzip.decompress(store.blob_path(digest).read_bytes())
    out: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member) if member.isfile() else None
            out[member.name] = (member, extracted.read() if extracted else None)
    return out


def _edge_repo(root: Path, **spec: object) -> Path:
    repo = make_repo(root, {"edge": {"osRelease": {"GRUB_ENTRY_NAME": "Edge"}, **spec}}, EDGE_FILES)
    (repo / "derivatives/edge/overlay/usr/local/bin/hello").chmod(0o755)
    os.symlink("motd", repo / "derivatives/edge/overlay/etc/issue")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "exec bit and link")
    return repo


def test_scratch_build_into_the_default_layout_is_read_by_skopeo(tmp_path: Path) -> None:
    require_binary("skopeo", "skopeo")
    repo = _edge_repo(tmp_path / "repo")
    repository, derivatives = load(repo)
    result = build_derivative(repository, derivatives["edge"])
    layout = repo / ".cosgitops/registry/edge"
    assert result.name == f"oci:{layout}"
    assert result.reference == f"oci:{layout}@{result.digest}"
    assert result.builder == "oci" and result.tag == "1.0.0"
    inspected = skopeo_inspect(f"oci:{layout}:1.0.0")
    assert inspected["Digest"] == result.digest
    assert inspected["Architecture"] == "amd64"
    labels = inspected["Labels"]
    assert labels["org.opencontainers.image.version"] == "1.0.0"
    assert labels["org.opencontainers.image.title"] == "edge"
    assert labels["org.opencontainers.image.revision"] == git(repo, "rev-parse", "HEAD").strip()
    assert labels["org.opencontainers.image.created"] == "2024-03-04T05:06:07Z"
    assert len(inspected["Layers"]) == 3 == len(result.new_layers)
    raw = skopeo_inspect(f"oci:{layout}:1.0.0", raw=True)
    assert raw["annotations"]["org.opencontainers.image.version"] == "1.0.0"

    store = OCILayoutStore(layout)
    overlay, oem, os_release = (_layer_files(store, d.digest) for d in result.new_layers)
    assert overlay["etc/motd"] == b"welcome to the edge\n"
    link = overlay["etc/issue"]
    assert isinstance(link, tarfile.TarInfo) and link.issym() and link.linkname == "motd"
    members = _layer(store, result.new_layers[0].digest)
    assert members["usr/local/bin/hello"][0].mode == 0o755
    assert members["etc/motd"][0].mode == 0o644
    assert set(oem) == {"system", "system/oem", "system/oem/90_custom.yaml"}
    text = os_release["etc/os-release"]
    assert isinstance(text, bytes)
    values = parse_os_release(text.decode())
    assert values["IMAGE_REPO"] == "oci:.cosgitops/registry/edge"  # not the checkout path
    assert values["IMAGE"] == "oci:.cosgitops/registry/edge:1.0.0"
    assert values["TIMESTAMP"] == "20240304050607"
    assert values["GRUB_ENTRY_NAME"] == "Edge"
    config = skopeo_inspect(f"oci:{layout}:1.0.0", config=True)
    assert config["config"]["Labels"][OS_RELEASE_LABEL] == text.decode()
    assert config["created"] == "2024-03-04T05:06:07Z"


def test_two_checkouts_with_other_umask_and_mtimes_give_the_same_digest(tmp_path: Path) -> None:
    origin = _edge_repo(tmp_path / "origin")
    first = tmp_path / "a" / "checkout"
    second = tmp_path / "b" / "deeper" / "other-name"
    first.parent.mkdir(parents=True)
    second.parent.mkdir(parents=True)
    git(tmp_path, "clone", "-q", str(origin), str(first))
    old = os.umask(0o077)
    try:
        git(tmp_path, "clone", "-q", str(origin), str(second))
    finally:
        os.umask(old)
    for number, checkout in enumerate((first, second)):
        for path in (checkout / "derivatives").rglob("*"):
            os.utime(path, (1_000_000 * (number + 1),) * 2, follow_symlinks=False)
    assert (second / "derivatives/edge/overlay/etc/motd").stat().st_mode & 0o777 == 0o600
    digests = []
    for checkout in (first, second):
        repository, derivatives = load(checkout)
        digests.append(build_derivative(repository, derivatives["edge"]).digest)
    assert digests[0] == digests[1]
    # and SOURCE_DATE_EPOCH is the commit time unless set explicitly
    os.environ["SOURCE_DATE_EPOCH"] = str(COMMIT_EPOCH + 60)
    try:
        repository, derivatives = load(first)
        later = build_derivative(repository, derivatives["edge"], target=f"oci:{tmp_path}/t")
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    assert later.created == "2024-03-04T05:07:07Z"
    assert later.digest != digests[0]


def _push_base(registry: RegistryServer, tmp_path: Path, **kwargs: object) -> tuple[str, list[str]]:
    base = write_base_layout(
        tmp_path / "base-layout",
        [busybox_entries(), random_entries("payload", 512 * 1024)],
        **kwargs,  # type: ignore[arg-type]
    )
    name = f"{registry.host}/cos/base:1"
    skopeo_copy(base.reference, f"docker://{name}", all_platforms=True)
    return name, base.layer_digests


def _blob_gets(registry: RegistryServer, repository: str) -> list[str]:
    return [
        line
        for line in registry.log.read_text().splitlines()
        if f"GET /v2/{repository}/blobs/" in line
    ]


def test_registry_base_is_mounted_never_downloaded(
    registry: RegistryServer, tmp_path: Path
) -> None:
    require_binary("skopeo", "skopeo")
    base, base_layers = _push_base(registry, tmp_path)
    repo = _edge_repo(tmp_path / "repo", base=base)
    repository, derivatives = load(repo)
    target = f"{registry.host}/fleet/edge"
    gets_before = len(_blob_gets(registry, "cos/base"))
    result = build_derivative(
        repository, derivatives["edge"], push=True, target=target, options=INSECURE
    )
    assert result.name == target
    assert result.base is not None and result.base.startswith(f"{registry.host}/cos/base@sha256:")
    # only the base manifest and config were read: no layer bytes (the payload is 512 KiB)
    assert result.bytes_downloaded < 8 * 1024
    assert len(_blob_gets(registry, "cos/base")) - gets_before == 1  # the config blob only
    layers = [layer.digest for layer in result.platforms[0].layers]
    assert layers[: len(base_layers)] == base_layers
    mounted = {
        digest.replace("%3A", ":")
        for digest in re.findall(
            r'"POST /v2/fleet/edge/blobs/uploads/\?mount=(\S+)&from=cos%2Fbase HTTP/1.1" 201',
            registry.log.read_text(),
        )
    }
    assert mounted == set(base_layers)  # cross-repository mounts, no bytes moved
    # the uploaded bytes are our new layers, config and manifest: no base layer
    new_bytes = sum(layer.size for layer in result.new_layers)
    assert new_bytes < result.bytes_uploaded < new_bytes + 64 * 1024
    # the pushed image is complete: skopeo can copy all of it out of the registry
    skopeo_copy(f"docker://{target}:1.0.0", f"oci:{tmp_path}/copy:x")
    inspected = skopeo_inspect(f"docker://{target}:1.0.0")
    assert inspected["Digest"] == result.digest
    assert inspected["Labels"]["org.opencontainers.image.base.name"] == base
    # a second build of the same commit changes nothing
    again = build_derivative(
        repository, derivatives["edge"], push=True, target=target, options=INSECURE
    )
    assert again.digest == result.digest


def test_multi_platform_build_from_a_multi_arch_base_gives_an_index(
    registry: RegistryServer, tmp_path: Path
) -> None:
    require_binary("skopeo", "skopeo")
    base, _ = _push_base(
        registry, tmp_path, platforms=("linux/amd64", "linux/arm64"), per_platform=True
    )
    base_index = skopeo_inspect(f"docker://{base}", raw=True)
    repo = _edge_repo(tmp_path / "repo", base=base, platforms=["linux/amd64", "linux/arm64"])
    repository, derivatives = load(repo)
    target = f"{registry.host}/fleet/edge"
    result = build_derivative(
        repository, derivatives["edge"], push=True, target=target, options=INSECURE
    )
    assert result.media_type == "application/vnd.oci.image.index.v1+json"
    index = skopeo_inspect(f"docker://{target}:1.0.0", raw=True)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    assert [p.platform for p in result.platforms] == ["linux/amd64", "linux/arm64"]
    for entry, built in zip(base_index["manifests"], result.platforms, strict=True):
        base_manifest = skopeo_inspect(
            f"docker://{base.rsplit(':', 1)[0]}@{entry['digest']}", raw=True
        )
        ours = skopeo_inspect(f"docker://{target}@{built.digest}", raw=True)
        base_digests = [layer["digest"] for layer in base_manifest["layers"]]
        assert [layer["digest"] for layer in ours["layers"]][: len(base_digests)] == base_digests
        config = json.loads(
            subprocess.run(
                ["skopeo", "inspect", "--tls-verify=false", "--config",
                 f"docker://{target}@{built.digest}"],
                check=True, capture_output=True, timeout=60,
            ).stdout
        )  # fmt: skip
        assert config["architecture"] == entry["platform"]["architecture"]
    assert result.bytes_downloaded < 16 * 1024
    # one platform out of a multi-platform base gives a plain manifest for that platform
    arm_repo = _edge_repo(tmp_path / "arm", base=base, platforms=["linux/arm64"])
    arm_repository, arm_derivatives = load(arm_repo)
    arm = build_derivative(
        arm_repository, arm_derivatives["edge"], push=True, target=f"{target}-arm", options=INSECURE
    )
    assert arm.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert arm.platforms[0].layers[:3] == result.platforms[1].layers[:3]
    assert arm.base == f"{base.rsplit(':', 1)[0]}@{base_index_digest(base)}"


def base_index_digest(reference: str) -> str:
    return str(skopeo_inspect(f"docker://{reference}")["Digest"])


def test_scratch_multi_platform_index_in_a_layout(tmp_path: Path) -> None:
    repo = _edge_repo(tmp_path / "repo", platforms=["linux/amd64", "linux/arm64"])
    repository, derivatives = load(repo)
    result = build_derivative(repository, derivatives["edge"])
    store = OCILayoutStore(repo / ".cosgitops/registry/edge")
    index = store.get_manifest("1.0.0")
    assert index.is_index and index.digest == result.digest
    children = index.children()
    assert [c.platform for c in children] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    ]
    configs = [
        json.loads(
            store.read_blob(store.get_manifest(c.digest).children()[0].digest, max_bytes=1 << 20)
        )
        for c in children
    ]
    assert [c["architecture"] for c in configs] == ["amd64", "arm64"]
    # the new layers are shared, not duplicated
    assert len(result.new_layers) == 3


def test_layout_base_is_hard_linked_and_its_os_release_extended(tmp_path: Path) -> None:
    base = write_base_layout(
        tmp_path / "base",
        [busybox_entries()],
        labels={OS_RELEASE_LABEL: 'NAME="Base OS"\nID=baseos\nVERSION_ID=3\n'},
    )
    repo = _edge_repo(tmp_path / "repo", base=base.reference)
    repository, derivatives = load(repo)
    result = build_derivative(repository, derivatives["edge"])
    target = OCILayoutStore(repo / ".cosgitops/registry/edge")
    source = OCILayoutStore(base.layout)
    for digest in base.layer_digests:
        assert target.blob_path(digest).stat().st_ino == source.blob_path(digest).stat().st_ino
    os_release = _layer_files(target, result.new_layers[-1].digest)["etc/os-release"]
    assert isinstance(os_release, bytes)
    values = parse_os_release(os_release.decode())
    assert (values["NAME"], values["ID"], values["VERSION_ID"]) == ("Base OS", "baseos", "3")
    assert values["IMAGE_TAG"] == "1.0.0"
    assert result.base == f"oci:{base.layout}@{base.digest}"


def test_registry_base_into_a_local_layout_copies_only_missing_blobs(
    registry: RegistryServer, tmp_path: Path
) -> None:
    require_binary("skopeo", "skopeo")
    base, _ = _push_base(registry, tmp_path)
    repo = _edge_repo(tmp_path / "repo", base=base)
    repository, derivatives = load(repo)
    inputs = collect_inputs(repository, derivatives["edge"])
    target = open_store(f"oci:{tmp_path}/local/edge")
    first = build_image(inputs, target, options=INSECURE)
    assert first.bytes_downloaded > 512 * 1024  # the base layers had to come over once
    skopeo_copy(f"oci:{tmp_path}/local/edge:1.0.0", f"oci:{tmp_path}/verify:x")
    second = build_image(inputs, open_store(f"oci:{tmp_path}/local/edge"), options=INSECURE)
    assert second.digest == first.digest
    assert second.bytes_downloaded < 8 * 1024


def test_base_platform_mismatch_and_single_platform_base_are_refused(
    tmp_path: Path,
) -> None:
    base = write_base_layout(tmp_path / "base", [busybox_entries()])
    repo = _edge_repo(tmp_path / "repo", base=base.reference, platforms=["linux/arm64"])
    repository, derivatives = load(repo)
    with pytest.raises(BuildError) as error:
        build_derivative(repository, derivatives["edge"])
    assert "linux/amd64 image, not linux/arm64" in str(error.value)
    multi = Derivative.from_data(
        {"metadata": {"name": "edge"},
         "spec": {"version": "1.0.0", "base": base.reference,
                  "platforms": ["linux/amd64", "linux/arm64"]}},
        repo / "derivatives/edge",
    )  # fmt: skip
    with pytest.raises(BuildError) as single:
        build_derivative(repository, multi)
    assert "single-platform" in str(single.value)


def test_builder_choice_and_targets(tmp_path: Path) -> None:
    folder = tmp_path / "derivatives/x"
    plain = Derivative.from_data({"metadata": {"name": "x"}, "spec": {"version": "1.0.0"}}, folder)
    packaged = Derivative.from_data(
        {"metadata": {"name": "x"}, "spec": {"version": "1.0.0", "packages": ["htop"]}}, folder
    )
    assert choose_builder(plain) == "oci"
    assert choose_builder(packaged) == "docker"
    assert choose_builder(plain, "docker") == "docker"
    with pytest.raises(UsageError) as error:
        choose_builder(packaged, "oci")
    assert "packages" in str(error.value)

    from cosgitops.model import Repository

    local = Repository(root=tmp_path, name="t")
    target = resolve_target(local, "x", push=True)
    assert target.reference.repository == str(tmp_path / ".cosgitops/registry/x")
    assert target.image_repo == "oci:.cosgitops/registry/x" and not target.remote
    remote = Repository(root=tmp_path, name="t", registry="ghcr.io/acme/fleet")
    pushed = resolve_target(remote, "x", push=True)
    assert str(pushed.reference) == "ghcr.io/acme/fleet/x" and pushed.remote
    kept = resolve_target(remote, "x", push=False)
    assert kept.reference.is_oci_layout and kept.image_repo == "ghcr.io/acme/fleet/x"
    with pytest.raises(UsageError):
        resolve_target(remote, "x", push=True, target="ghcr.io/acme/x:1.0")


def test_unchanged_inputs_keep_their_layer_digest_across_commits(tmp_path: Path) -> None:
    """Regression: layer mtimes followed the commit time, so every release changed every
    layer and a device downloaded unchanged overlay and cloud-config layers again."""
    root = _edge_repo(tmp_path / "repo")
    repository, derivatives = load(root)
    first = build_derivative(repository, derivatives["edge"])
    derivative_file = root / "derivatives/edge/derivative.yaml"
    derivative_file.write_text(derivative_file.read_text().replace("1.0.0", "1.0.1"))
    env = dict(os.environ, GIT_AUTHOR_DATE="2025-01-01T00:00:00Z")
    env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"]
    subprocess.run(["git", "commit", "-qam", "bump"], cwd=root, env=env, check=True)
    repository, derivatives = load(root)
    second = build_derivative(repository, derivatives["edge"])
    assert second.created != first.created
    old = [layer.digest for layer in first.platforms[0].layers]
    new = [layer.digest for layer in second.platforms[0].layers]
    assert len(old) == len(new) >= 2
    # overlay and cloud-config layers are shared; only the os-release layer differs
    assert old[:-1] == new[:-1]
    assert old[-1] != new[-1]
