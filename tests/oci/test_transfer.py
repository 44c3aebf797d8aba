"""Copying images between layouts and a real registry; reading an image's manifest and config."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cosgitops.config import Limits
from cosgitops.errors import IntegrityError, NotFoundError, RemoteDataError, UsageError
from cosgitops.oci import media
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.oci.platform import Platform, select_platform
from cosgitops.oci.reference import parse_reference
from cosgitops.oci.registry import RegistryStore
from cosgitops.oci.store import ManifestData, StoreOptions
from cosgitops.oci.transfer import copy_blob, copy_image, fetch_image_manifest
from tests.helpers.services import RegistryServer, require_binary
from tests.oci.images import make_image, make_index, push_image, signature_manifest
from tests.oci.proxy import FaultProxy

FAST = Limits(http_retries=1, http_backoff_seconds=0.01)


def registry_store(host: str, repository: str) -> RegistryStore:
    return RegistryStore(
        parse_reference(f"{host}/{repository}"), StoreOptions(insecure=True, limits=FAST)
    )


def multi_platform_layout(path: Path) -> tuple[OCILayoutStore, ManifestData, dict[str, str]]:
    store = OCILayoutStore(path)
    digests = {}
    children = []
    for arch in ("amd64", "arm64"):
        image = make_image([{"etc/arch": arch.encode()}], architecture=arch)
        children.append((push_image(store, image), arch))
        digests[arch] = image.manifest_digest
    index = make_index(children)
    store.put_manifest(index, media.OCI_INDEX, tag="multi")
    return store, ManifestData.from_bytes(index, media.OCI_INDEX), digests


def test_layout_to_registry_to_layout(registry: RegistryServer, tmp_path: Path) -> None:
    source = OCILayoutStore(tmp_path / "src")
    image = make_image([{"a": os.urandom(20_000)}, {"b": b"two"}])
    push_image(source, image, tag="1.0")
    remote = registry_store(registry.host, "fleet/app")
    descriptor = copy_image(source, "1.0", remote, tag="1.0")
    assert descriptor.digest == image.manifest_digest
    assert remote.stats.bytes_uploaded == sum(len(b) for b in image.blobs) + len(image.manifest)

    back = OCILayoutStore(tmp_path / "back")
    copy_image(remote, "1.0", back, tag="copied")
    assert back.get_manifest("copied").data == image.manifest
    for blob in image.blobs:
        assert back.read_blob(sha256_digest(blob), max_bytes=1 << 20) == blob

    skopeo = require_binary("skopeo", "skopeo")
    info = json.loads(
        subprocess.run(
            [skopeo, "inspect", f"oci:{tmp_path / 'back'}:copied"],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    )
    assert info["Digest"] == image.manifest_digest

    again = registry_store(registry.host, "fleet/app")
    copy_image(source, "1.0", again, tag="1.0")
    assert again.stats.bytes_uploaded == len(image.manifest)
    assert again.stats.blobs_skipped == len(image.blobs)


def test_copy_within_a_registry_mounts_blobs(registry: RegistryServer, tmp_path: Path) -> None:
    image = make_image([{"base": os.urandom(300_000)}])
    base = registry_store(registry.host, "cos/base")
    push_image(base, image, tag="0.10")
    with FaultProxy(registry.url) as proxy:
        src = registry_store(proxy.host, "cos/base")
        dst = registry_store(proxy.host, "fleet/derived")
        copy_image(src, "0.10", dst, tag="1")
        blob_bytes = sum(
            s.request_bytes + s.response_bytes for s in proxy.seen if "/blobs/" in s.path
        )
    assert dst.stats.blobs_mounted == len(image.blobs)
    assert dst.stats.bytes_uploaded == len(image.manifest)
    assert src.stats.bytes_downloaded == len(image.manifest)
    assert blob_bytes == 0
    assert dst.get_manifest("1").digest == image.manifest_digest


def test_multi_platform_index_copy_and_platform_selection(
    registry: RegistryServer, tmp_path: Path
) -> None:
    layout, index, digests = multi_platform_layout(tmp_path / "multi")
    remote = registry_store(registry.host, "fleet/multi")
    assert copy_image(layout, "multi", remote, tag="1").digest == index.digest

    with FaultProxy(registry.url) as proxy:
        reader = registry_store(proxy.host, "fleet/multi")
        manifest, config = fetch_image_manifest(reader, "1", "linux/arm64")
        blob_paths = [s.path for s in proxy.seen if "/blobs/" in s.path]
    assert manifest.digest == digests["arm64"]
    assert config["architecture"] == "arm64"
    # only the config blob was read, no layer
    assert blob_paths == [f"/v2/fleet/multi/blobs/{manifest.children()[0].digest}"]

    manifest, config = fetch_image_manifest(layout, "multi")
    assert manifest.digest == digests["amd64"] and config["architecture"] == "amd64"
    single, _ = fetch_image_manifest(layout, digests["arm64"], "linux/amd64")
    assert single.digest == digests["arm64"]  # a plain image is taken as it is
    with pytest.raises(NotFoundError, match="has: linux/amd64, linux/arm64"):
        fetch_image_manifest(remote, "1", "linux/s390x")


def test_select_platform_and_platform_parsing() -> None:
    index = ManifestData.from_bytes(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": media.OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": media.OCI_MANIFEST,
                        "digest": sha256_digest(b"att"),
                        "size": 1,
                        "platform": {"os": "unknown", "architecture": "unknown"},
                    },
                    {
                        "mediaType": media.OCI_MANIFEST,
                        "digest": sha256_digest(b"armv7"),
                        "size": 1,
                        "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
                    },
                    {
                        "mediaType": media.OCI_MANIFEST,
                        "digest": sha256_digest(b"arm64"),
                        "size": 1,
                        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                    },
                ],
            }
        ).encode(),
        media.OCI_INDEX,
    )
    assert select_platform(index, "linux/arm64").digest == sha256_digest(b"arm64")
    assert select_platform(index, "linux/arm64/v8").digest == sha256_digest(b"arm64")
    assert select_platform(index, "linux/arm/v7").digest == sha256_digest(b"armv7")
    with pytest.raises(NotFoundError, match=r"linux/arm/v6 image \(it has: linux/arm/v7"):
        select_platform(index, "linux/arm/v6")
    assert Platform.parse("linux/arm/v7") == Platform("linux", "arm", "v7")
    assert str(Platform.parse("linux/amd64")) == "linux/amd64"
    for bad in ("linux", "linux/", "a/b/c/d", ""):
        with pytest.raises(UsageError):
            Platform.parse(bad)


def test_fetch_image_manifest_refuses_non_images_and_big_configs(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    image = make_image([{"a": b"1"}])
    push_image(store, image, tag="img")
    store.put_manifest(
        json.dumps({"schemaVersion": 2, "mediaType": "application/x-other", "x": 1}).encode(),
        "application/x-other",
        tag="other",
    )
    with pytest.raises(RemoteDataError, match="not an image manifest"):
        fetch_image_manifest(store, "other")
    with pytest.raises(RemoteDataError, match="over the limit"):
        fetch_image_manifest(store, "img", limits=Limits(config_max_bytes=10))


def test_copy_with_referrers(registry: RegistryServer, tmp_path: Path) -> None:
    source = OCILayoutStore(tmp_path / "signed")
    subject = push_image(source, make_image([{"a": b"signed"}]), tag="1")
    sig, payload = signature_manifest(subject, b'{"bundle": true}')
    source.put_blob(media.OCI_EMPTY_BYTES, media.OCI_EMPTY_DIGEST, size=2)
    source.put_blob(payload, sha256_digest(payload), size=len(payload))
    signature = source.put_manifest(sig, media.OCI_MANIFEST)

    remote = registry_store(registry.host, "fleet/signed")
    copy_image(source, "1", remote, tag="1", include_referrers=True)
    assert [d.digest for d in remote.referrers(subject.digest)] == [signature.digest]

    back = OCILayoutStore(tmp_path / "back")
    copy_image(remote, "1", back, include_referrers=True)
    assert [d.digest for d in back.referrers(subject.digest)] == [signature.digest]


def test_tampered_layout_blob_is_not_uploaded(registry: RegistryServer, tmp_path: Path) -> None:
    source = OCILayoutStore(tmp_path / "src")
    image = make_image([{"a": os.urandom(5000)}])
    push_image(source, image, tag="1")
    layer = sha256_digest(image.layers[0])
    path = source.blob_path(layer)
    data = bytearray(path.read_bytes())
    data[50] ^= 0xFF
    path.write_bytes(bytes(data))
    remote = registry_store(registry.host, "fleet/tampered")
    with pytest.raises(IntegrityError):
        copy_image(source, "1", remote, tag="1")
    assert not remote.has_blob(layer)
    assert remote.resolve("1") is None
    # between layouts the blob is hard-linked, not re-hashed: the next read refuses it
    target = OCILayoutStore(tmp_path / "dst")
    descriptor = ManifestData.from_bytes(image.manifest, media.OCI_MANIFEST).children()[1]
    assert copy_blob(source, target, descriptor) == "mounted"
    with pytest.raises(IntegrityError):
        target.read_blob(layer, max_bytes=1 << 20)
