"""Sign and verify images in real stores: an OCI layout on disk and a real
docker-registry (distribution 2.8, no referrers API) on loopback."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cosgitops.errors import NotFoundError, VerificationError
from cosgitops.oci import media, open_store
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.oci.store import Descriptor, ImageStore, StoreOptions, referrers_tag
from cosgitops.signing.image import (
    collect_signatures,
    legacy_tag,
    sign_image,
    sign_reference,
    verify_image,
    verify_reference,
)
from cosgitops.signing.policy import VerificationPolicy
from cosgitops.signing.signers import KeySigner
from cosgitops.signing.verify import (
    SIGNATURE_ANNOTATION,
    BundleSignature,
    LegacySignature,
    SignatureFormat,
)
from tests.helpers.services import RegistryServer
from tests.oci.images import make_image, push_image


@dataclass
class StoreUnderTest:
    store: ImageStore
    reference: str  # NAME, without tag or digest
    blob_file: Callable[[str], Path]  # where a blob's bytes lie on disk (for corruption)


@pytest.fixture(params=["layout", "registry"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    if request.param == "layout":
        path = tmp_path / "layout"
        yield StoreUnderTest(
            OCILayoutStore(path), f"oci:{path}", lambda d: path / "blobs" / "sha256" / d[7:]
        )
        return
    with RegistryServer(tmp_path / "registry") as server:
        name = f"{server.host}/fleet/app"
        storage = server.folder / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256"
        yield StoreUnderTest(
            open_store(name, StoreOptions(insecure=True)),
            name,
            lambda d: storage / d[7:9] / d[7:] / "data",
        )


@pytest.fixture
def image(target: StoreUnderTest) -> Descriptor:
    return push_image(target.store, make_image([{"etc/os-release": b"NAME=test\n"}]), tag="1.0")


def _legacy_layers(store: ImageStore, digest: str) -> list[dict[str, object]]:
    manifest = store.get_manifest(legacy_tag(digest))
    layers = manifest.json()["layers"]
    assert isinstance(layers, list)
    return layers


def _bundle_referrers(store: ImageStore, digest: str) -> list[Descriptor]:
    return store.referrers(digest, artifact_type=media.SIGSTORE_BUNDLE_V03)


# ---------------------------------------------------------------- the happy path


def test_sign_then_verify_both_formats(
    target: StoreUnderTest, image: Descriptor, signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    result = sign_image(target.store, image.digest, signer)
    assert [(s.format, s.status) for s in result.signatures] == [
        ("bundle", "written"),
        ("legacy", "written"),
    ]
    assert result.reference == f"{target.reference}@{image.digest}"

    verified = verify_image(target.store, image.digest, key_policy)
    assert verified.ok
    assert [(v.format, v.accepted) for v in verified.verdicts] == [
        ("bundle", True),
        ("legacy", True),
    ]
    assert verified.matched is not None and verified.matched.format == "bundle"
    assert verified.signer == signer.fingerprint

    # each format verifies on its own
    for keep in ("bundle", "legacy"):
        candidates = [
            c
            for c in collect_signatures(target.store, image.digest)
            if isinstance(c, BundleSignature if keep == "bundle" else LegacySignature)
        ]
        assert len(candidates) == 1


def test_referrer_manifest_is_cosign_3_shaped(
    target: StoreUnderTest, image: Descriptor, signer: KeySigner
) -> None:
    sign_image(target.store, image.digest, signer, created="2026-01-02T03:04:05Z")
    (referrer,) = _bundle_referrers(target.store, image.digest)
    assert referrer.artifact_type == media.SIGSTORE_BUNDLE_V03
    manifest = target.store.get_manifest(referrer.digest).json()
    assert manifest["mediaType"] == media.OCI_MANIFEST
    assert manifest["artifactType"] == media.SIGSTORE_BUNDLE_V03
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": media.OCI_EMPTY_DIGEST,
        "size": 2,
    }
    assert manifest["subject"] == image.to_json()
    assert manifest["annotations"] == {
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
        "org.opencontainers.image.created": "2026-01-02T03:04:05Z",
    }
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == media.SIGSTORE_BUNDLE_V03
    bundle = json.loads(target.store.read_blob(layer["digest"], max_bytes=1 << 20))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["subject"][0]["digest"] == {"sha256": image.digest[7:]}
    assert statement["predicateType"] == "https://sigstore.dev/cosign/sign/v1"
    assert target.store.read_blob(media.OCI_EMPTY_DIGEST, max_bytes=10) == b"{}"


def test_legacy_signature_is_cosign_shaped(
    target: StoreUnderTest, image: Descriptor, signer: KeySigner
) -> None:
    sign_image(target.store, image.digest, signer, formats=("legacy",))
    assert legacy_tag(image.digest) in target.store.list_tags()
    assert _bundle_referrers(target.store, image.digest) == []
    (layer,) = _legacy_layers(target.store, image.digest)
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    annotations = layer["annotations"]
    assert isinstance(annotations, dict) and set(annotations) == {SIGNATURE_ANNOTATION}
    payload = target.store.read_blob(str(layer["digest"]), max_bytes=1 << 20)
    expected_name = target.store.reference.name
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"' + expected_name.encode() + b'"},'
        b'"image":{"docker-manifest-digest":"' + image.digest.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


def test_signing_twice_does_not_duplicate(
    target: StoreUnderTest,
    image: Descriptor,
    signer: KeySigner,
    other_signer: KeySigner,
    key_policy: VerificationPolicy,
) -> None:
    first = sign_image(target.store, image.digest, signer)
    again = sign_image(target.store, image.digest, signer)
    assert [s.status for s in again.signatures] == ["present", "present"]
    assert [s.manifest_digest for s in again.signatures] == [
        s.manifest_digest for s in first.signatures
    ]
    assert len(_bundle_referrers(target.store, image.digest)) == 1
    assert len(_legacy_layers(target.store, image.digest)) == 1

    # another signer adds its own signature next to the first, keeping it
    sign_image(target.store, image.digest, other_signer)
    assert len(_bundle_referrers(target.store, image.digest)) == 2
    assert len(_legacy_layers(target.store, image.digest)) == 2
    assert verify_image(target.store, image.digest, key_policy).ok
    both = VerificationPolicy(keys=(other_signer.trusted_key,))
    result = verify_image(target.store, image.digest, both)
    assert result.ok and result.signer == other_signer.fingerprint
    assert sum(v.accepted for v in result.verdicts) == 2


def test_sign_and_verify_by_tag_reference(
    target: StoreUnderTest, image: Descriptor, signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    options = StoreOptions(insecure=True)
    result = sign_reference(f"{target.reference}:1.0", signer, options=options)
    assert result.digest == image.digest  # the tag was pinned; the digest was signed
    assert verify_reference(f"{target.reference}:1.0", key_policy, options=options).ok
    assert verify_reference(f"{target.reference}@{image.digest}", key_policy, options=options).ok
    with pytest.raises(NotFoundError):
        sign_reference(f"{target.reference}:missing", signer, options=options)


# ---------------------------------------------------------------- refusals


def test_unsigned_image_fails(
    target: StoreUnderTest, image: Descriptor, key_policy: VerificationPolicy
) -> None:
    result = verify_image(target.store, image.digest, key_policy)
    assert not result.ok and result.verdicts == ()
    with pytest.raises(VerificationError, match="has no signatures"):
        result.require()


def test_missing_image_is_not_found(target: StoreUnderTest, key_policy: VerificationPolicy) -> None:
    with pytest.raises(NotFoundError):
        verify_image(target.store, "sha256:" + "0" * 64, key_policy)


def test_foreign_key_fails(
    target: StoreUnderTest,
    image: Descriptor,
    signer: KeySigner,
    other_signer: KeySigner,
) -> None:
    sign_image(target.store, image.digest, other_signer)
    result = verify_image(
        target.store, image.digest, VerificationPolicy(keys=(signer.trusted_key,))
    )
    assert not result.ok
    assert len(result.verdicts) == 2
    for verdict in result.verdicts:
        assert "does not verify with any trusted key" in verdict.reasons[0]


class _TamperingSigner:
    """A signer whose output is altered after signing: what someone with push rights but
    without the key could store."""

    def __init__(
        self,
        inner: KeySigner,
        *,
        bundle: Callable[[bytes], bytes] = lambda b: b,
        payload: Callable[[bytes], bytes] = lambda p: p,
        annotations: Callable[[dict[str, str]], dict[str, str]] = lambda a: a,
    ) -> None:
        self.inner = inner
        self._bundle, self._payload, self._annotations = bundle, payload, annotations
        self.description = inner.description
        self.signs_legacy = True

    def sign_statement(self, statement: bytes) -> bytes:
        return self._bundle(self.inner.sign_statement(statement))

    def sign_payload(self, payload: bytes) -> dict[str, str]:
        # signing other bytes than those stored == the stored payload was tampered with
        return self._annotations(self.inner.sign_payload(self._payload(payload)))

    def own_policy(self) -> VerificationPolicy:
        return self.inner.own_policy()


def _swap_statement_digest(bundle: bytes) -> bytes:
    document = json.loads(bundle)
    statement = base64.b64decode(document["dsseEnvelope"]["payload"])
    forged = json.loads(statement)
    forged["subject"][0]["digest"]["sha256"] = "ff" * 32
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(forged).encode()).decode()
    return json.dumps(document).encode()


def _flip_signature(annotations: dict[str, str]) -> dict[str, str]:
    raw = bytearray(base64.b64decode(annotations[SIGNATURE_ANNOTATION]))
    raw[8] ^= 0x40
    return {SIGNATURE_ANNOTATION: base64.b64encode(raw).decode()}


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("payload", "does not verify with any trusted key"),
        ("signature", "does not verify with any trusted key"),
        ("statement", "does not verify with any trusted key"),
    ],
)
def test_tampered_signatures_fail_with_reasons(
    target: StoreUnderTest,
    image: Descriptor,
    signer: KeySigner,
    key_policy: VerificationPolicy,
    tamper: str,
    expected: str,
) -> None:
    tampering = {
        "payload": _TamperingSigner(signer, payload=lambda p: p.replace(b"null", b"{}")),
        "signature": _TamperingSigner(signer, annotations=_flip_signature),
        "statement": _TamperingSigner(signer, bundle=_swap_statement_digest),
    }[tamper]
    formats: tuple[SignatureFormat, ...] = ("bundle",) if tamper == "statement" else ("legacy",)
    sign_image(target.store, image.digest, tampering, formats=formats)
    result = verify_image(target.store, image.digest, key_policy)
    assert not result.ok
    (verdict,) = result.verdicts
    assert expected in verdict.reasons[0]


def test_tampered_image_manifest_fails(
    target: StoreUnderTest, image: Descriptor, signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    """The tag is moved to a modified manifest and every signature is copied over to it."""
    store = target.store
    sign_image(store, image.digest, signer)
    original = store.get_manifest(image.digest).json()
    original["annotations"] = {"evil": "yes"}
    modified = json.dumps(original).encode()
    forged = store.put_manifest(modified, media.OCI_MANIFEST, tag="1.0")
    assert forged.digest != image.digest

    # copy the legacy signature image and the referrer onto the modified manifest
    sig = store.get_manifest(legacy_tag(image.digest))
    store.put_manifest(sig.data, sig.media_type, tag=legacy_tag(forged.digest))
    (referrer,) = _bundle_referrers(store, image.digest)
    moved = store.get_manifest(referrer.digest).json()
    moved["subject"] = forged.to_json()
    store.put_manifest(json.dumps(moved).encode(), media.OCI_MANIFEST)

    result = verify_reference(
        f"{target.reference}:1.0", key_policy, options=StoreOptions(insecure=True)
    )
    assert not result.ok
    assert [v.format for v in result.verdicts] == ["bundle", "legacy"]
    for verdict in result.verdicts:
        assert verdict.reasons == (
            f"the signed payload names {image.digest}, not this image ({forged.digest})",
        )


def test_referrer_moved_to_another_image_fails(
    target: StoreUnderTest, image: Descriptor, signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    """A genuine referrer of image B re-pointed (subject rewritten) at unsigned image A."""
    store = target.store
    other = push_image(store, make_image([{"etc/other": b"x"}]), tag="2.0")
    sign_image(store, other.digest, signer, formats=("bundle",))
    (referrer,) = _bundle_referrers(store, other.digest)
    moved = store.get_manifest(referrer.digest).json()
    moved["subject"] = image.to_json()
    store.put_manifest(json.dumps(moved).encode(), media.OCI_MANIFEST)

    result = verify_image(store, image.digest, key_policy)
    assert not result.ok
    (verdict,) = result.verdicts
    assert verdict.reasons == (
        f"the signed payload names {other.digest}, not this image ({image.digest})",
    )


def test_referrers_index_entry_for_another_subject_fails(
    target: StoreUnderTest, image: Descriptor, signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    """The referrers list of A names B's genuine signature manifest (subject B)."""
    store = target.store
    other = push_image(store, make_image([{"etc/other": b"y"}]), tag="2.0")
    sign_image(store, other.digest, signer, formats=("bundle",))
    (referrer,) = _bundle_referrers(store, other.digest)
    index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [referrer.to_json()]}
    store.put_manifest(json.dumps(index).encode(), media.OCI_INDEX, tag=referrers_tag(image.digest))

    result = verify_image(store, image.digest, key_policy)
    assert not result.ok
    (verdict,) = result.verdicts
    assert verdict.reasons == (f"the referrer's subject is {other.digest}, not {image.digest}",)


@pytest.mark.parametrize("what", ["bundle", "payload"])
def test_corrupted_signature_blob_fails(
    target: StoreUnderTest,
    image: Descriptor,
    signer: KeySigner,
    key_policy: VerificationPolicy,
    what: str,
) -> None:
    """Bytes changed at rest, under the same digest: the store's digest check refuses them."""
    store = target.store
    sign_image(
        store, image.digest, signer, formats=("bundle",) if what == "bundle" else ("legacy",)
    )
    if what == "bundle":
        (referrer,) = _bundle_referrers(store, image.digest)
        blob = str(store.get_manifest(referrer.digest).json()["layers"][0]["digest"])
    else:
        blob = str(_legacy_layers(store, image.digest)[0]["digest"])
    path = target.blob_file(blob)
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    path.write_bytes(bytes(data))

    result = verify_image(store, image.digest, key_policy)
    assert not result.ok
    (verdict,) = result.verdicts
    assert "does not match its digest" in verdict.reasons[0]


# ---------------------------------------------------------------- only what is needed


def test_verify_needs_only_manifest_and_signatures(
    tmp_path: Path, signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    full = OCILayoutStore(tmp_path / "full")
    image = make_image([{"big": b"x" * 100_000}])
    descriptor = push_image(full, image, tag="1.0")
    sign_image(full, descriptor.digest, signer)
    # the device's copy: the image's config and layers never arrived
    shutil.copytree(tmp_path / "full", tmp_path / "slim")
    for blob in image.blobs:
        (tmp_path / "slim" / "blobs" / "sha256" / sha256_digest(blob)[7:]).unlink()
    slim = OCILayoutStore(tmp_path / "slim")
    assert not slim.has_blob(sha256_digest(image.layers[0]))
    result = verify_image(slim, descriptor.digest, key_policy)
    assert result.ok and len(result.verdicts) == 2


def test_unreachable_registry_is_a_download_error_not_a_rejection(
    tmp_path: Path, signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    """A device must retry later, not reject the release, when the registry is down."""
    from cosgitops.config import Limits
    from cosgitops.errors import DownloadError

    options = StoreOptions(insecure=True, limits=Limits(http_retries=0, http_timeout_seconds=2))
    with RegistryServer(tmp_path / "registry") as server:
        store = open_store(f"{server.host}/fleet/app", options)
        image = push_image(store, make_image([{"a": b"b"}]), tag="1.0")
        sign_image(store, image.digest, signer)
        assert verify_image(store, image.digest, key_policy).ok
    with pytest.raises(DownloadError):
        verify_image(open_store(f"{server.host}/fleet/app", options), image.digest, key_policy)
