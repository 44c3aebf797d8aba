"""A small real fleet for device tests: images pushed to a real store (a docker-registry
on loopback or an OCI layout), signed in cosign's formats, published in a real TUF index
that the device reads over HTTP (StaticServer) or from the folder itself."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops import model
from cosgitops.device.agent import DeviceAgent, DeviceSetup
from cosgitops.device.config import HealthCheck
from cosgitops.oci import media, open_store
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.store import Descriptor, ImageStore, StoreOptions
from tests.device.tarbuild import Entry, directory, file, gzip_layer

DERIVATIVE = "edge-gateway"
BROKEN_MARKER = "etc/cosgitops-broken"
HEALTH_CHECK = HealthCheck("no broken marker", f"test ! -e {BROKEN_MARKER}", 10.0)


def base_layer(size: int = 256 * 1024) -> list[Entry]:
    """The 'base image': a few system files and an incompressible blob."""
    blob = bytes((i * 2654435761 >> 13) & 0xFF for i in range(size))  # deterministic noise
    return [
        directory("etc"),
        file("etc/hostname", "device\n"),
        directory("usr"),
        directory("usr/lib"),
        file("usr/lib/firmware.bin", os.urandom(0) + blob),
        file("usr/bin/app", "#!/bin/sh\necho app\n", mode=0o755),
    ]


def overlay_layer(version: str, *, broken: bool = False, extra: bytes = b"") -> list[Entry]:
    entries = [
        directory("etc"),
        file("etc/motd", f"release {version}\n"),
        file("etc/os-release", f'NAME="Edge Gateway"\nVERSION="{version}"\n'),
    ]
    if extra:
        entries.append(file("usr/share/overlay.bin", extra))
    if broken:
        entries.append(file(BROKEN_MARKER, "this release fails its health check\n"))
    return entries


@dataclass
class PushedImage:
    digest: str
    layers: tuple[model.Layer, ...]
    layer_bytes: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass
class Fleet:
    root: Path
    image_name: str  # NAME (no tag/digest) devices pull from
    store_options: StoreOptions = field(default_factory=StoreOptions)
    password: bytes = b""
    keys: dict[str, Any] = field(default_factory=dict)
    published: list[model.ReleaseManifest] = field(default_factory=list)

    def __post_init__(self) -> None:
        from cosgitops.signing.keys import write_keypair
        from tests.publish import factory

        self.repo_root = self.root / "repo"
        self.repo_root.mkdir(parents=True, exist_ok=True)
        self.repository = factory.repository(self.repo_root)
        self.keys = factory.role_keys()
        self.ring = factory.keyring(self.keys)
        self.cosign_key, self.cosign_pub = write_keypair(
            self.root / "keys" / "cosign", self.password
        )

    @property
    def public_dir(self) -> Path:
        return self.repo_root / "public"

    @property
    def trusted_root(self) -> Path:
        return self.public_dir / "metadata" / "1.root.json"

    def store(self) -> ImageStore:
        return open_store(self.image_name, self.store_options)

    def push(
        self,
        layers: Sequence[list[Entry] | bytes],
        *,
        sign: bool = True,
        diff_ids: Sequence[str] | None = None,
    ) -> PushedImage:
        """Push an image of ``layers`` (entry lists, or ready gzip blobs); ``diff_ids``
        overrides the config's (the uncompressed digests by default)."""
        store = self.store()
        blobs = [item if isinstance(item, bytes) else gzip_layer(item) for item in layers]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {
                    "type": "layers",
                    "diff_ids": list(diff_ids)
                    if diff_ids is not None
                    else [sha256_digest(gzip.decompress(b)) for b in blobs],
                },
            },
            sort_keys=True,
        ).encode()
        for blob in [config, *blobs]:
            store.put_blob(blob, sha256_digest(blob), size=len(blob))
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": media.OCI_MANIFEST,
                "config": Descriptor(
                    media.OCI_CONFIG, sha256_digest(config), len(config)
                ).to_json(),
                "layers": [
                    Descriptor(media.OCI_LAYER_GZIP, sha256_digest(b), len(b)).to_json()
                    for b in blobs
                ],
            },
            sort_keys=True,
        ).encode()
        descriptor = store.put_manifest(manifest, media.OCI_MANIFEST)
        if sign:
            self.sign(descriptor.digest)
        layer_models = tuple(
            model.Layer(sha256_digest(b), len(b), media.OCI_LAYER_GZIP) for b in blobs
        )
        return PushedImage(descriptor.digest, layer_models, tuple(blobs))

    def sign(self, digest: str, key: Path | None = None) -> None:
        from cosgitops.signing import key_signer, sign_image

        signer = key_signer(str(key or self.cosign_key), password=self.password)
        sign_image(self.store(), digest, signer)

    def manifest(
        self,
        version: str,
        image: PushedImage,
        *,
        channels: Sequence[str] = ("stable",),
        upgrade_from: str | None = None,
        rollout: model.Rollout | None = None,
    ) -> model.ReleaseManifest:
        return model.ReleaseManifest(
            derivative=DERIVATIVE,
            version=version,
            image=f"{self.image_name}@{image.digest}",
            platforms=(model.PlatformImage("linux/amd64", image.digest, image.layers),),
            created="2026-01-01T00:00:00Z",
            commit="0" * 40,
            channels=tuple(channels),
            upgrade_from=upgrade_from,
            rollout=rollout or model.Rollout(),
        )

    def publish(self, *manifests: model.ReleaseManifest, now: dt.datetime | None = None) -> None:
        from cosgitops.publish.publisher import publish_releases

        publish_releases(self.repository, list(manifests), keyring=self.ring, now=now)
        self.published.extend(manifests)

    def release(
        self, version: str, layers: Sequence[list[Entry] | bytes], **kw: Any
    ) -> tuple[model.ReleaseManifest, PushedImage]:
        image = self.push(layers)
        manifest = self.manifest(version, image, **kw)
        self.publish(manifest)
        return manifest, image

    def setup(self, index_url: str, **kw: Any) -> DeviceSetup:
        values: dict[str, Any] = {
            "index_url": index_url,
            "derivative": DERIVATIVE,
            "trusted_root": self.trusted_root,
            "keys": (self.cosign_pub,),
            "registry_insecure": self.store_options.insecure,
            "checks": (HEALTH_CHECK,),
            "max_attempts": 2,
            "machine_id": "test-machine",
            "platform": "linux/amd64",
        }
        values.update(kw)
        return DeviceSetup(**values)


def slot_files(agent: DeviceAgent, slot: str = "active") -> dict[str, bytes]:
    """Every regular file in a slot, by path (through the state, not the link)."""
    state = agent.journal.load()
    record = state.slot(slot)
    assert record is not None, f"no {slot} slot"
    out: dict[str, bytes] = {}
    with agent.slots.view(record) as tree:
        for path in sorted(tree.rglob("*")):
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(tree))] = path.read_bytes()
    return out
