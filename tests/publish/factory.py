"""Builders shared by the publish tests: repositories, release manifests, keys and a
stock python-tuf client pointed at a served index."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from cosgitops import model
from cosgitops.publish.rolekeys import KeyRing

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
ROLES = ("root", "targets", "snapshot", "timestamp")


def repository(root: Path, **publish: Any) -> model.Repository:
    spec: dict[str, Any] = {"channels": {"stable": {}, "beta": {}, "edge": {}}}
    if publish:
        spec["publish"] = publish
    return model.Repository.from_data({"metadata": {"name": "fleet"}, "spec": spec}, root)


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest(
    derivative: str,
    version: str,
    *,
    channels: Sequence[str] = ("stable",),
    upgrade_from: str | None = None,
    rollout: model.Rollout | None = None,
    platforms: Sequence[str] = ("linux/amd64",),
    build: str = "",
    display_name: str = "",
    created: str = "2024-05-01T12:00:00Z",
) -> model.ReleaseManifest:
    """A release manifest whose digests follow from its name, version and ``build``."""
    images = tuple(
        model.PlatformImage(
            platform,
            digest_of(f"{derivative} {version} {platform} {build}"),
            (
                model.Layer(digest_of(f"base {platform}"), 50_000_000, LAYER_TYPE),
                model.Layer(digest_of(f"{derivative} {version} {build}"), 12_345, LAYER_TYPE),
            ),
        )
        for platform in platforms
    )
    index_digest = digest_of(f"{derivative} {version} index {build}")
    return model.ReleaseManifest(
        derivative=derivative,
        version=version,
        image=f"registry.example.com/fleet/{derivative}@{index_digest}",
        platforms=images,
        created=created,
        commit=hashlib.sha1(f"{derivative}{version}{build}".encode()).hexdigest(),
        channels=tuple(channels),
        upgrade_from=upgrade_from,
        rollout=rollout or model.Rollout(),
        notes=f"{derivative} {version}",
        signer="sha256:" + "ab" * 32,
        display_name=display_name,
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def role_keys() -> dict[str, list[ec.EllipticCurvePrivateKey]]:
    return {role: [new_key()] for role in ROLES}


def keyring(keys: dict[str, list[ec.EllipticCurvePrivateKey]], **team: Any) -> KeyRing:
    return KeyRing.from_private_keys(keys, team or None)


class Client:
    """python-tuf's stock ngclient Updater over HTTP, with a persistent local cache
    (like a device's), bootstrapped from the published ``1.root.json``."""

    def __init__(
        self,
        public_dir: Path,
        url: str,
        workdir: Path,
        bootstrap: bytes | None = None,
        fetcher: Any = None,
    ):
        self.fetcher = fetcher
        self.public_dir = public_dir
        self.url = url.rstrip("/")
        self.workdir = workdir
        self.metadata_dir = workdir / "metadata"
        self.targets_dir = workdir / "targets"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.bootstrap = bootstrap or (public_dir / "metadata" / "1.root.json").read_bytes()

    def updater(self) -> Any:
        from tuf.ngclient.updater import Updater

        return Updater(
            str(self.metadata_dir),
            f"{self.url}/metadata/",
            str(self.targets_dir),
            f"{self.url}/targets/",
            fetcher=self.fetcher,
            bootstrap=self.bootstrap,
        )

    def refresh(self) -> Any:
        updater = self.updater()
        updater.refresh()
        return updater

    def fetch(self, target_path: str) -> tuple[Any, bytes]:
        """(TargetFile, verified bytes) of ``target_path``; AssertionError if unknown."""
        updater = self.refresh()
        info = updater.get_targetinfo(target_path)
        assert info is not None, f"{target_path} is not in the index"
        path = updater.download_target(info)
        return info, Path(path).read_bytes()
