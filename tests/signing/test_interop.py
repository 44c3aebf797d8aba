"""Verdicts on real cosign output, read in place from ../shared/interop/cosign/."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cosgitops.model import Identity
from cosgitops.oci.digest import sha256_digest
from cosgitops.signing import keyless, keys
from cosgitops.signing.policy import TrustedKey, VerificationPolicy
from cosgitops.signing.verify import (
    REKOR_BUNDLE_ANNOTATION,
    BundleSignature,
    LegacySignature,
    evaluate,
    verify_bundle,
    verify_legacy,
)
from tests.signing.conftest import read_containers_image_signature


def _policy(
    folder: Path, key: str, *, rekor: str | None = None, require_tlog: bool = False
) -> VerificationPolicy:
    rekor_keys = (TrustedKey(keys.load_public_key(str(folder / rekor)), rekor),) if rekor else ()
    return VerificationPolicy(
        keys=(TrustedKey(keys.load_public_key(str(folder / key)), key),),
        rekor_keys=rekor_keys,
        require_tlog=require_tlog,
    )


def _vector(folder: Path, name: str) -> tuple[str, list[LegacySignature]]:
    directory = folder / name
    digest = sha256_digest((directory / "manifest.json").read_bytes())
    signatures = []
    for path in sorted(directory.glob("signature-*")):
        signature = read_containers_image_signature(path)
        assert signature.mime_type == "application/vnd.dev.cosign.simplesigning.v1+json"
        signatures.append(LegacySignature(signature.payload, signature.annotations, path.name))
    return digest, signatures


@pytest.mark.parametrize(
    ("vector", "key", "rekor", "accepted"),
    [
        ("dir-img-cosign-valid", "cosign.pub", None, True),
        ("dir-img-cosign-valid-2", "cosign.pub", None, True),
        ("dir-img-cosign-key-rekor-valid", "cosign2.pub", "rekor.pub", True),
        ("dir-img-cosign-modified-manifest", "cosign.pub", None, False),
        ("dir-img-cosign-manifest-digest-error", "cosign.pub", None, False),
        # the wrong key
        ("dir-img-cosign-valid", "cosign2.pub", None, False),
        ("dir-img-cosign-valid-2", "cosign2.pub", None, False),
        ("dir-img-cosign-key-rekor-valid", "cosign.pub", "rekor.pub", False),
    ],
)
def test_containers_image_vectors(
    containers_image: Path, vector: str, key: str, rekor: str | None, accepted: bool
) -> None:
    digest, signatures = _vector(containers_image, vector)
    policy = _policy(containers_image, key, rekor=rekor)
    result = evaluate(f"example@{digest}", digest, signatures, policy)
    assert [verdict.accepted for verdict in result.verdicts] == [accepted] * len(signatures)
    assert result.ok is accepted
    if not accepted:
        assert all(verdict.reasons for verdict in result.verdicts)
    else:
        assert result.signer == keys.key_fingerprint(policy.keys[0].public_key)


def test_modified_manifest_reason_names_both_digests(containers_image: Path) -> None:
    digest, signatures = _vector(containers_image, "dir-img-cosign-modified-manifest")
    verdict = verify_legacy(signatures[0], digest, _policy(containers_image, "cosign.pub"))
    assert not verdict.accepted
    signed = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
    assert verdict.reasons == (f"the signed payload names {signed}, not this image ({digest})",)
    # the signature itself is cosign's and valid: only the digest binding fails
    assert verdict.key_fingerprint is not None


def test_valid_2_holds_two_distinct_valid_signatures(containers_image: Path) -> None:
    _, signatures = _vector(containers_image, "dir-img-cosign-valid-2")
    assert len(signatures) == 2
    assert signatures[0].annotations != signatures[1].annotations


def test_rekor_set_is_checked(containers_image: Path) -> None:
    digest, (signature,) = _vector(containers_image, "dir-img-cosign-key-rekor-valid")
    checked = verify_legacy(
        signature,
        digest,
        _policy(containers_image, "cosign2.pub", rekor="rekor.pub", require_tlog=True),
    )
    assert checked.accepted
    assert any("verified (signed entry timestamp)" in note for note in checked.notes)

    unchecked = verify_legacy(signature, digest, _policy(containers_image, "cosign2.pub"))
    assert unchecked.accepted
    assert any("not checked" in note for note in unchecked.notes)

    required = verify_legacy(
        signature, digest, _policy(containers_image, "cosign2.pub", require_tlog=True)
    )
    assert not required.accepted


def test_rekor_set_with_wrong_log_key_is_refused(containers_image: Path) -> None:
    digest, (signature,) = _vector(containers_image, "dir-img-cosign-key-rekor-valid")
    verdict = verify_legacy(
        signature, digest, _policy(containers_image, "cosign2.pub", rekor="cosign.pub")
    )
    assert not verdict.accepted
    assert "unknown transparency log" in verdict.reasons[0]


@pytest.mark.parametrize("field", ["SignedEntryTimestamp", "integratedTime", "logIndex", "body"])
def test_tampered_rekor_bundle_is_refused(containers_image: Path, field: str) -> None:
    digest, (signature,) = _vector(containers_image, "dir-img-cosign-key-rekor-valid")
    bundle = json.loads(signature.annotations[REKOR_BUNDLE_ANNOTATION])
    if field == "SignedEntryTimestamp":
        sig = bytearray(bundle[field].encode())
        sig[10] = ord("A") if sig[10] != ord("A") else ord("B")
        bundle[field] = sig.decode()
    elif field == "body":
        bundle["Payload"]["body"] = bundle["Payload"]["body"][:-8] + "AAAAAA=="
    else:
        bundle["Payload"][field] += 1
    tampered = dataclasses.replace(
        signature,
        annotations={**signature.annotations, REKOR_BUNDLE_ANNOTATION: json.dumps(bundle)},
    )
    verdict = verify_legacy(
        tampered, digest, _policy(containers_image, "cosign2.pub", rekor="rekor.pub")
    )
    assert not verdict.accepted
    assert verdict.reasons[0].startswith("transparency log:")


def test_rekor_entry_for_another_signature_is_refused(containers_image: Path) -> None:
    """A genuine SET, but over a log entry that records a different signature."""
    _, (rekor_signed,) = _vector(containers_image, "dir-img-cosign-key-rekor-valid")
    _, (plain,) = _vector(containers_image, "dir-img-cosign-valid")
    grafted = dataclasses.replace(
        plain,
        annotations={
            **plain.annotations,
            REKOR_BUNDLE_ANNOTATION: rekor_signed.annotations[REKOR_BUNDLE_ANNOTATION],
        },
    )
    plain_digest = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
    verdict = verify_legacy(
        grafted, plain_digest, _policy(containers_image, "cosign.pub", rekor="rekor.pub")
    )
    assert not verdict.accepted
    assert "different" in verdict.reasons[0]


# ---------------------------------------------------------------- the public-good bundle


@pytest.fixture
def public_good(interop: Path) -> tuple[bytes, object]:
    folder = interop / "cosign" / "bundle"
    trusted_root = keyless.load_trusted_root((folder / "trusted_root_pgi.json").read_bytes())
    return (folder / "oci-attestation.sigstore.json").read_bytes(), trusted_root


GITHUB_OAUTH = "https://github.com/login/oauth"


@pytest.mark.parametrize(
    "identity",
    [
        Identity(identity="cody@soyland.com", issuer=GITHUB_OAUTH),
        Identity(identity_regexp=r"^cody@soyland\.com$", issuer=GITHUB_OAUTH),
        Identity(identity="cody@soyland.com", issuer_regexp=r"^https://github\.com/"),
    ],
)
def test_public_good_bundle_verifies_offline(
    public_good: tuple[bytes, object], identity: Identity
) -> None:
    bundle, trusted_root = public_good
    outcome = keyless.verify_keyless_bundle(bundle, [identity], trusted_root)
    assert outcome.identity == "cody@soyland.com"
    assert outcome.issuer == GITHUB_OAUTH
    assert outcome.payload_type == "application/vnd.in-toto+json"


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        (Identity(identity="someone@soyland.com", issuer=GITHUB_OAUTH), "is not 'someone@"),
        (Identity(identity="cody@soyland.com", issuer="https://accounts.google.com"), "issuer"),
        (Identity(identity_regexp=r"^cody@example\.com$", issuer=GITHUB_OAUTH), "does not match"),
        (Identity(identity="cody@soyland.com", issuer_regexp=r"^https://gitlab"), "issuer"),
    ],
)
def test_public_good_bundle_fails_for_other_identities(
    public_good: tuple[bytes, object], identity: Identity, message: str
) -> None:
    bundle, trusted_root = public_good
    with pytest.raises(keyless.KeylessError, match=message):
        keyless.verify_keyless_bundle(bundle, [identity], trusted_root)


def test_public_good_bundle_is_judged_once_for_all_identities(
    public_good: tuple[bytes, object],
) -> None:
    bundle, trusted_root = public_good
    wrong = [
        Identity(identity="someone@soyland.com", issuer=GITHUB_OAUTH),
        Identity(identity="cody@soyland.com", issuer="https://accounts.google.com"),
    ]
    with pytest.raises(keyless.KeylessError) as caught:
        keyless.verify_keyless_bundle(bundle, wrong, trusted_root)
    message = str(caught.value)
    assert message.startswith("0 of 2 policies succeeded: ")
    assert "is not 'someone@soyland.com'" in message and "accounts.google.com" in message
    right = Identity(identity="cody@soyland.com", issuer=GITHUB_OAUTH)
    outcome = keyless.verify_keyless_bundle(bundle, [*wrong, right], trusted_root)
    assert outcome.identity == "cody@soyland.com"


def test_public_good_bundle_fails_against_another_trusted_root(
    public_good: tuple[bytes, object], interop: Path
) -> None:
    bundle, _ = public_good
    document = json.loads((interop / "cosign" / "bundle" / "trusted_root_pgi.json").read_bytes())
    document["certificateAuthorities"] = document["certificateAuthorities"][:1]
    document["certificateAuthorities"][0]["certChain"]["certificates"] = [
        document["certificateAuthorities"][0]["certChain"]["certificates"][0]
    ]
    other_root = keyless.load_trusted_root(json.dumps(document).encode())
    with pytest.raises(keyless.KeylessError):
        keyless.verify_keyless_bundle(
            bundle, [Identity(identity="cody@soyland.com", issuer=GITHUB_OAUTH)], other_root
        )


def test_public_good_attestation_is_not_an_image_signature(
    public_good: tuple[bytes, object],
) -> None:
    """The bundle is a genuine keyless attestation, but its predicate is not cosign's
    image-signature predicate: as an image signature it must be refused, saying why."""
    bundle, trusted_root = public_good
    digest = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
    policy = VerificationPolicy(
        identities=(Identity(identity="cody@soyland.com", issuer=GITHUB_OAUTH),)
    )
    verdict = verify_bundle(
        BundleSignature(bundle, "test"), digest, policy, trusted_root=trusted_root
    )
    assert not verdict.accepted
    assert verdict.identity == "cody@soyland.com"
    assert len(verdict.reasons) == 1
    assert "is not an image signature" in verdict.reasons[0]
