"""The boot test's own small fleet, on an update medium.

The guest's agent must verify and apply the candidate exactly as a device would (TUF
index, image signature, digests, layers), but the candidate is not published yet and
may not be signed yet (a pull request is never signed). So each boot test publishes its
own index: throwaway TUF keys and a throwaway cosign key, the release the devices run
today and the candidate, and the images copied unchanged (same digests) into OCI
layouts. All of it sits in a folder laid out as an update medium
(:mod:`cosgitops.device.medium`: ``public/`` and ``images/<name>/``) that is handed to
the guest; the guest's disk trusts exactly this index root and this key.

Only the trust material is the test's: every image byte, manifest and release setting
(channels, ``upgradeFrom``) is the real one. The phased rollout is opened fully (the
test device must be offered the candidate now).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cosgitops import model
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.oci.store import ImageStore

IMAGES_DIR = "images"
INDEX_DIR = "public"
LOCAL_STATE = ".cosgitops"


@dataclass(frozen=True)
class MediumImage:
    """One release to put on the medium: the image in its store, and its published
    manifest (None for the candidate, which is not published)."""

    version: str
    store: ImageStore
    digest: str
    manifest: model.ReleaseManifest | None = None


@dataclass(frozen=True)
class TestMedium:
    root: Path  # the medium: public/ (the index) and images/<name>/ (OCI layouts)
    trusted_root: Path  # the index root the guest trusts (outside the medium)
    public_key: Path  # the cosign public key the guest trusts to sign images
    manifests: tuple[model.ReleaseManifest, ...]  # as published on the medium
    repository: Path  # a repository whose index is the medium's (what `disk` installs from)

    @property
    def index(self) -> Path:
        return self.root / INDEX_DIR

    def manifest(self, version: str) -> model.ReleaseManifest:
        return next(m for m in self.manifests if m.version == version)

    def layout(self, derivative: str) -> Path:
        return self.root / IMAGES_DIR / derivative


def _tuf_keyring() -> object:
    from cryptography.hazmat.primitives.asymmetric import ec

    from cosgitops.publish.paths import TOP_LEVEL_ROLES
    from cosgitops.publish.rolekeys import KeyRing

    return KeyRing.from_private_keys(
        {role: [ec.generate_private_key(ec.SECP256R1())] for role in TOP_LEVEL_ROLES}
    )


def write_test_medium(
    folder: Path,
    repository: model.Repository,
    derivative: model.Derivative,
    images: Sequence[MediumImage],
    *,
    now: dt.datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> TestMedium:
    """Publish ``images`` (oldest first) of ``derivative`` into a new medium at
    ``folder/.cosgitops/medium``, with its keys in ``.cosgitops/keys`` and the root to
    trust in ``.cosgitops/trust``; ``folder`` becomes a repository whose index is the
    medium's and whose trust is the throwaway key."""
    from cosgitops.oci.layout import OCILayoutStore
    from cosgitops.oci.transfer import copy_image
    from cosgitops.publish.collect import collect_release
    from cosgitops.publish.publisher import publish_releases
    from cosgitops.publish.rolekeys import KeyRing
    from cosgitops.signing import key_signer, sign_image
    from cosgitops.signing.keys import write_keypair

    folder = Path(folder).absolute()
    state = folder / LOCAL_STATE  # never validated as repository content
    medium = state / "medium"
    private, public = write_keypair(state / "keys" / "boot-test-cosign", b"", overwrite=True)
    signer = key_signer(str(private), password=b"")
    layout = OCILayoutStore(medium / IMAGES_DIR / derivative.name, limits=limits)
    manifests: list[model.ReleaseManifest] = []
    for image in images:
        copy_image(image.store, image.digest, layout, tag=image.version)
        sign_image(layout, image.digest, signer, limits=limits)
        if image.manifest is not None:
            manifest = image.manifest
        else:
            manifest = collect_release(repository, derivative, layout, verify=False, limits=limits)
        # The release names the image where it is now: the medium's layout (same digest).
        manifests.append(
            replace(
                manifest,
                image=f"oci:{layout.path}@{image.digest}",
                rollout=model.Rollout(),
                rollout_start=None,
                boot_test=None,
            )
        )
    channels = {name for manifest in manifests for name in manifest.channels}
    fleet = model.Repository(
        root=folder,
        name="boot-test",
        channels={name: model.Channel(name) for name in sorted(channels)},
        publish=model.PublishSpec(dir=str(medium / INDEX_DIR)),
    )
    ring = _tuf_keyring()
    assert isinstance(ring, KeyRing)
    publish_releases(fleet, manifests, keyring=ring, now=now, limits=limits)
    trusted_root = state / "trust" / "1.root.json"
    trusted_root.parent.mkdir(parents=True, exist_ok=True)
    trusted_root.write_bytes((medium / INDEX_DIR / "metadata" / "1.root.json").read_bytes())
    _fleet_repository(folder, derivative, medium / INDEX_DIR, public)
    return TestMedium(medium, trusted_root, public, tuple(manifests), folder)


def _fleet_repository(
    root: Path, derivative: model.Derivative, public_dir: Path, public_key: Path
) -> Path:
    """A repository of one derivative whose index is the medium's and whose trust is the
    throwaway key: what ``cosgitops disk`` installs a release from."""
    import yaml

    channels: dict[str, dict[str, str]] = {name: {} for name in derivative.release.channels}
    repository = {
        "apiVersion": model.API_VERSION,
        "kind": "Repository",
        "metadata": {"name": "boot-test"},
        "spec": {
            "channels": channels,
            "signing": {
                "trust": [{"derivatives": ["*"], "keys": [public_key.relative_to(root).as_posix()]}]
            },
            "publish": {"dir": public_dir.relative_to(root).as_posix()},
        },
    }
    definition = {
        "apiVersion": model.API_VERSION,
        "kind": "Derivative",
        "metadata": {"name": derivative.name},
        "spec": {
            "version": derivative.version,
            "base": "scratch",
            "release": {"channels": list(derivative.release.channels)},
        },
    }
    folder = root / model.DERIVATIVES_DIR / derivative.name
    folder.mkdir(parents=True, exist_ok=True)
    (root / model.REPOSITORY_FILE).write_text(yaml.safe_dump(repository, sort_keys=False))
    (folder / model.DERIVATIVE_FILE).write_text(yaml.safe_dump(definition, sort_keys=False))
    return root
