"""The identity a signature names (simple-signing ``docker-reference``, in-toto subject
name) is the repository the image is published under, so a signature made in an OCI
layout still holds once the image is copied to its registry: checked with
containers/image itself (skopeo with a ``sigstoreSigned`` policy)."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest

from cosgitops.errors import SigningError
from cosgitops.oci import open_store
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.oci.store import ImageStore, StoreOptions
from cosgitops.oci.transfer import copy_image
from cosgitops.signing import keys, payloads
from cosgitops.signing.image import (
    collect_signatures,
    legacy_tag,
    sign_image,
    signed_identity,
    verify_image,
)
from cosgitops.signing.policy import TrustedKey, VerificationPolicy
from cosgitops.signing.signers import KeySigner
from cosgitops.signing.verify import BundleSignature, LegacySignature
from tests.helpers.services import RegistryServer
from tests.oci.images import make_image, push_image
from tests.signing.conftest import read_containers_image_signature, run


def key_policy_of(signer: KeySigner) -> VerificationPolicy:
    return VerificationPolicy(keys=(TrustedKey(signer.private_key.public_key(), "a.pub"),))


def _claims(layout: OCILayoutStore, digest: str) -> tuple[str, str]:
    """(docker-reference of the legacy payload, subject name of the bundle statement)."""
    candidates = collect_signatures(layout, digest)
    legacy = next(c for c in candidates if isinstance(c, LegacySignature))
    bundle = next(c for c in candidates if isinstance(c, BundleSignature))
    envelope = json.loads(bundle.bundle)["dsseEnvelope"]
    subject = json.loads(base64.b64decode(envelope["payload"]))["subject"][0]
    return payloads.parse_simple_signing(legacy.payload).docker_reference, subject["name"]


def test_signed_identity_names_the_repository_only() -> None:
    assert signed_identity("ghcr.io/acme/fleet/edge") == "ghcr.io/acme/fleet/edge"
    assert signed_identity("docker.io/library/busybox") == "index.docker.io/library/busybox"
    assert signed_identity("oci:.cosgitops/registry/edge") == "oci:.cosgitops/registry/edge"
    for bad in ("ghcr.io/acme/edge:1.0", "ghcr.io/acme/edge@sha256:" + "0" * 64):
        with pytest.raises(SigningError, match="has a tag or digest"):
            signed_identity(bad)


def test_a_layout_signature_names_the_published_repository(
    tmp_path: Path, signer: KeySigner
) -> None:
    layout = OCILayoutStore(tmp_path / "layout")
    image = push_image(layout, make_image([{"etc/hostname": b"edge\n"}]), tag="1.0")
    sign_image(layout, image.digest, signer, identity="ghcr.io/acme/fleet/edge")
    assert _claims(layout, image.digest) == ("ghcr.io/acme/fleet/edge", "ghcr.io/acme/fleet/edge")
    # Without one, the store's own name, as cosign does for the reference it signs.
    other = OCILayoutStore(tmp_path / "other")
    pushed = push_image(other, make_image([{"etc/hostname": b"kiosk\n"}]), tag="1.0")
    sign_image(other, pushed.digest, signer)
    assert _claims(other, pushed.digest) == (f"oci:{tmp_path / 'other'}",) * 2


def test_the_cli_signs_with_the_published_identity(
    tmp_path: Path, signer: KeySigner, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = OCILayoutStore(tmp_path / "layout")
    image = push_image(layout, make_image([{"etc/hostname": b"edge\n"}]), tag="1.0")
    key = tmp_path / "cosign.key"
    key.write_bytes(keys.generate_keypair(b"").private_pem)
    os.environ["COSIGN_PASSWORD"] = ""
    code, _, err = run(
        capsys,
        "sign",
        f"oci:{tmp_path / 'layout'}:1.0",
        "--key",
        str(key),
        "--sign-container-identity",
        "registry.example.com/fleet/edge",
    )
    assert code == 0, err
    assert _claims(layout, image.digest) == ("registry.example.com/fleet/edge",) * 2
    code, _, err = run(
        capsys, "sign", f"oci:{tmp_path / 'layout'}:1.0", "--key", str(key),
        "--sign-container-identity", "registry.example.com/fleet/edge:1.0",
    )  # fmt: skip
    assert code == 1 and "has a tag or digest" in err


def _copy_with_signatures(layout: OCILayoutStore, digest: str, repository: str) -> ImageStore:
    """What `cosign copy` (or `skopeo copy` of both tags) does: the image and its
    signatures, bytes unchanged."""
    target = open_store(repository, StoreOptions(insecure=True))
    copy_image(layout, digest, target, tag="1.0", include_referrers=True)
    copy_image(layout, legacy_tag(digest), target, tag=legacy_tag(digest))
    return target


def _identity_accepted(claimed: str, pulled_repository: str) -> bool:
    """containers/image's default `signedIdentity` (matchRepoDigestOrExact) for an image
    pulled by digest: the signature's docker-reference names that repository. (Debian's
    skopeo is built with sigstore verification disabled, so the rule is restated here;
    the identity's form is the real cosign signature's of the interop data.)"""
    return claimed == signed_identity(pulled_repository)


@pytest.mark.registry
def test_a_layout_signature_holds_after_the_copy_to_its_registry(
    tmp_path: Path, registry: RegistryServer, signer: KeySigner, containers_image: Path
) -> None:
    repository = f"{registry.host}/fleet/edge"
    layout = OCILayoutStore(tmp_path / "layout")
    image = push_image(layout, make_image([{"etc/hostname": b"edge\n"}]), tag="1.0")
    sign_image(layout, image.digest, signer, identity=repository)
    target = _copy_with_signatures(layout, image.digest, repository)

    result = verify_image(target, image.digest, key_policy_of(signer))
    assert result.ok and {v.format for v in result.verdicts if v.accepted} == {"bundle", "legacy"}
    legacy = next(
        c for c in collect_signatures(target, image.digest) if isinstance(c, LegacySignature)
    )
    claimed = payloads.parse_simple_signing(legacy.payload).docker_reference
    assert _identity_accepted(claimed, repository)
    # Written in the form real cosign signatures take: HOST[:PORT]/PATH, no tag, no transport.
    real = read_containers_image_signature(
        containers_image / "dir-img-cosign-valid" / "signature-1"
    )
    theirs = payloads.parse_simple_signing(real.payload).docker_reference
    pattern = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+$")
    assert pattern.match(theirs) and pattern.match(claimed)


@pytest.mark.registry
def test_a_signature_naming_the_layout_path_does_not_survive_the_copy(
    tmp_path: Path, registry: RegistryServer, signer: KeySigner
) -> None:
    """What a layout-mode signature used to name: the build machine's folder."""
    repository = f"{registry.host}/fleet/edge"
    layout = OCILayoutStore(tmp_path / "layout")
    image = push_image(layout, make_image([{"etc/hostname": b"edge\n"}]), tag="1.0")
    sign_image(layout, image.digest, signer)  # the store's own name: oci:/…/layout
    target = _copy_with_signatures(layout, image.digest, repository)
    legacy = next(
        c for c in collect_signatures(target, image.digest) if isinstance(c, LegacySignature)
    )
    claimed = payloads.parse_simple_signing(legacy.payload).docker_reference
    assert claimed == f"oci:{tmp_path / 'layout'}"
    assert not _identity_accepted(claimed, repository)


def test_release_signs_with_the_configured_name_not_the_checkout_path(tmp_path: Path) -> None:
    """`release` in local mode writes to `<checkout>/.cosgitops/registry/NAME`, but the
    signature names the image as configured (as its os-release IMAGE_REPO does)."""
    import subprocess

    from cosgitops.release import release
    from cosgitops.scaffold import init_repository

    root = tmp_path / "fleet"
    init_repository(root, name="fleet")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "fleet"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    report = release(root)
    assert report.ok, [outcome.error for outcome in report.outcomes]
    (outcome,) = report.outcomes
    layout = OCILayoutStore(root / ".cosgitops" / "registry" / "example")
    digest = outcome.image.rsplit("@", 1)[1]
    assert _claims(layout, digest) == ("oci:.cosgitops/registry/example",) * 2
