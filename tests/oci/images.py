"""Small, real OCI images made in memory for the OCI tests."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass

from cosgitops.oci import media
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.store import Descriptor, ImageStore, ManifestData


def layer_bytes(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip tar of ``files`` and its diff_id (digest of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256_digest(tar_bytes)


@dataclass
class TestImage:
    __test__ = False

    config: bytes
    layers: list[bytes]
    manifest: bytes

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]


def make_image(
    layer_files: list[dict[str, bytes]],
    *,
    architecture: str = "amd64",
    annotations: dict[str, str] | None = None,
) -> TestImage:
    layers, diff_ids = [], []
    for files in layer_files:
        blob, diff_id = layer_bytes(files)
        layers.append(blob)
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        sort_keys=True,
    ).encode()
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": Descriptor(media.OCI_CONFIG, sha256_digest(config), len(config)).to_json(),
        "layers": [
            Descriptor(media.OCI_LAYER_GZIP, sha256_digest(b), len(b)).to_json() for b in layers
        ],
    }
    if annotations:
        manifest["annotations"] = annotations
    return TestImage(config, layers, json.dumps(manifest, sort_keys=True).encode())


def push_image(store: ImageStore, image: TestImage, tag: str | None = None) -> Descriptor:
    for blob in image.blobs:
        store.put_blob(blob, sha256_digest(blob), size=len(blob))
    return store.put_manifest(image.manifest, media.OCI_MANIFEST, tag=tag)


def make_index(children: list[tuple[Descriptor, str]]) -> bytes:
    """An OCI image index over (manifest descriptor, architecture) pairs."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_INDEX,
            "manifests": [
                {**d.to_json(), "platform": {"os": "linux", "architecture": arch}}
                for d, arch in children
            ],
        },
        sort_keys=True,
    ).encode()


def signature_manifest(subject: ManifestData | Descriptor, payload: bytes) -> tuple[bytes, bytes]:
    """An OCI 1.1 artifact manifest (empty config, one layer) whose subject is ``subject``."""
    descriptor = subject.descriptor if isinstance(subject, ManifestData) else subject
    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": media.SIGSTORE_BUNDLE_V03,
        "config": Descriptor(media.OCI_EMPTY, media.OCI_EMPTY_DIGEST, 2).to_json(),
        "layers": [
            Descriptor(media.SIGSTORE_BUNDLE_V03, sha256_digest(payload), len(payload)).to_json()
        ],
        "subject": Descriptor(descriptor.media_type, descriptor.digest, descriptor.size).to_json(),
        "annotations": {"dev.sigstore.bundle.predicateType": "test"},
    }
    return json.dumps(manifest, sort_keys=True).encode(), payload
