"""The pure judge: signature bytes and a policy in, a verdict with reasons out."""

from __future__ import annotations

import base64
import json

import pytest

from cosgitops.config import Limits
from cosgitops.errors import VerificationError
from cosgitops.model import Identity
from cosgitops.signing import payloads
from cosgitops.signing.policy import VerificationPolicy
from cosgitops.signing.signers import KeySigner, public_key_hint
from cosgitops.signing.verify import (
    SIGNATURE_ANNOTATION,
    BundleSignature,
    LegacySignature,
    UnreadableSignature,
    evaluate,
    parse_bundle,
    verify_bundle,
    verify_legacy,
)
from tests.signing.sigstore_stack import SigstoreStack

DIGEST = "sha256:" + "12" * 32
OTHER = "sha256:" + "34" * 32


def _legacy(signer: KeySigner, digest: str = DIGEST) -> LegacySignature:
    payload = payloads.simple_signing_payload("127.0.0.1:5000/app", digest)
    return LegacySignature(payload, signer.sign_payload(payload), "test layer")


def _bundle(signer: KeySigner, digest: str = DIGEST) -> BundleSignature:
    statement = payloads.sign_statement(digest, name="127.0.0.1:5000/app")
    return BundleSignature(signer.sign_statement(statement), "test referrer")


def _edit_bundle(candidate: BundleSignature, change: object) -> BundleSignature:
    document = json.loads(candidate.bundle)
    change(document)  # type: ignore[operator]
    return BundleSignature(json.dumps(document).encode(), candidate.location)


# ---------------------------------------------------------------- legacy


def test_legacy_round_trip(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    verdict = verify_legacy(_legacy(signer), DIGEST, key_policy)
    assert verdict.accepted and verdict.reasons == ()
    assert verdict.key_fingerprint == signer.fingerprint
    assert verdict.format == "legacy"


def test_legacy_tampered_payload(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    good = _legacy(signer)
    tampered = LegacySignature(
        good.payload.replace(b"127.0.0.1:5000/app", b"127.0.0.1:5000/evil"),
        good.annotations,
        good.location,
    )
    verdict = verify_legacy(tampered, DIGEST, key_policy)
    assert not verdict.accepted
    assert "does not verify with any trusted key" in verdict.reasons[0]


def test_legacy_payload_for_other_digest(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    verdict = verify_legacy(_legacy(signer, OTHER), DIGEST, key_policy)
    assert not verdict.accepted
    assert verdict.reasons == (f"the signed payload names {OTHER}, not this image ({DIGEST})",)


def test_legacy_tampered_signature(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    good = _legacy(signer)
    raw = bytearray(base64.b64decode(good.annotations[SIGNATURE_ANNOTATION]))
    raw[-1] ^= 1
    bad = LegacySignature(
        good.payload, {SIGNATURE_ANNOTATION: base64.b64encode(raw).decode()}, good.location
    )
    assert not verify_legacy(bad, DIGEST, key_policy).accepted
    missing = LegacySignature(good.payload, {}, good.location)
    assert "no valid" in verify_legacy(missing, DIGEST, key_policy).reasons[0]
    garbage = LegacySignature(good.payload, {SIGNATURE_ANNOTATION: "%%%"}, good.location)
    assert not verify_legacy(garbage, DIGEST, key_policy).accepted


def test_legacy_foreign_key(other_signer: KeySigner, key_policy: VerificationPolicy) -> None:
    verdict = verify_legacy(_legacy(other_signer), DIGEST, key_policy)
    assert not verdict.accepted
    assert verdict.key_fingerprint is None


def test_legacy_oversized_payload(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    verdict = verify_legacy(
        _legacy(signer), DIGEST, key_policy, limits=Limits(signature_max_bytes=10)
    )
    assert not verdict.accepted and "larger than" in verdict.reasons[0]


def test_key_signature_with_identity_only_policy(signer: KeySigner) -> None:
    policy = VerificationPolicy(identities=(Identity(identity="a@b", issuer="https://i"),))
    assert "trusts no key" in verify_legacy(_legacy(signer), DIGEST, policy).reasons[0]
    assert "trusts no key" in verify_bundle(_bundle(signer), DIGEST, policy).reasons[0]


# ---------------------------------------------------------------- bundle


def test_bundle_round_trip(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    candidate = _bundle(signer)
    document = json.loads(candidate.bundle)
    assert document["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert document["verificationMaterial"] == {
        "publicKey": {"hint": public_key_hint(signer.private_key.public_key())},
        "tlogEntries": [],
    }
    assert document["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    verdict = verify_bundle(candidate, DIGEST, key_policy)
    assert verdict.accepted, verdict.reasons
    assert verdict.format == "bundle"


def test_bundle_matches_the_sigstore_bundle_schema(signer: KeySigner) -> None:
    """sigstore's protobuf-derived models parse it (sigstore-python itself verifies only
    certificate bundles, so key bundles are checked by cosgitops)."""
    from sigstore_models.bundle.v1 import Bundle

    bundle = Bundle.from_json(_bundle(signer).bundle)
    assert bundle.dsse_envelope is not None
    assert bundle.verification_material.public_key is not None


def test_bundle_tampered_payload(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    forged = payloads.sign_statement(OTHER, name="127.0.0.1:5000/app")

    def swap(document: dict[str, object]) -> None:
        document["dsseEnvelope"]["payload"] = base64.b64encode(forged).decode()  # type: ignore[index]

    verdict = verify_bundle(_edit_bundle(_bundle(signer), swap), DIGEST, key_policy)
    assert not verdict.accepted
    assert any("does not verify" in reason for reason in verdict.reasons)
    assert any("names " + OTHER in reason for reason in verdict.reasons)


def test_bundle_tampered_signature(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    def flip(document: dict[str, object]) -> None:
        envelope = document["dsseEnvelope"]
        raw = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))  # type: ignore[index]
        raw[-1] ^= 1
        envelope["signatures"][0]["sig"] = base64.b64encode(raw).decode()  # type: ignore[index]

    verdict = verify_bundle(_edit_bundle(_bundle(signer), flip), DIGEST, key_policy)
    assert verdict.reasons == (
        f"the DSSE signature does not verify with any trusted key ({signer.fingerprint[:16]})",
    )


def test_bundle_for_other_digest(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    verdict = verify_bundle(_bundle(signer, OTHER), DIGEST, key_policy)
    assert verdict.reasons == (f"the signed payload names {OTHER}, not this image ({DIGEST})",)


def test_bundle_with_other_predicate(signer: KeySigner, key_policy: VerificationPolicy) -> None:
    statement = json.loads(payloads.sign_statement(DIGEST))
    statement["predicateType"] = "https://slsa.dev/provenance/v1"
    candidate = BundleSignature(signer.sign_statement(json.dumps(statement).encode()), "x")
    verdict = verify_bundle(candidate, DIGEST, key_policy)
    assert not verdict.accepted and "not an image signature" in verdict.reasons[0]


def test_bundle_payload_type_must_be_in_toto(
    signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    def retype(document: dict[str, object]) -> None:
        document["dsseEnvelope"]["payloadType"] = "text/plain"  # type: ignore[index]

    verdict = verify_bundle(_edit_bundle(_bundle(signer), retype), DIGEST, key_policy)
    assert not verdict.accepted  # PAE covers the type: the signature fails as well
    assert any("not an in-toto statement" in reason for reason in verdict.reasons)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"mediaType":"application/json"}', "unsupported bundle media type"),
        (
            b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",'
            b'"verificationMaterial":{},"messageSignature":{}}',
            "message signature",
        ),
        (
            b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",'
            b'"verificationMaterial":{},"dsseEnvelope":{"payload":"e30=","signatures":[]}}',
            "no signature",
        ),
    ],
)
def test_malformed_bundles(data: bytes, message: str, key_policy: VerificationPolicy) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bundle(data)
    verdict = verify_bundle(BundleSignature(data, "x"), DIGEST, key_policy)
    assert not verdict.accepted and message in verdict.reasons[0]


def test_keyless_bundle_without_identities_or_root(
    interop_bundle: bytes, key_policy: VerificationPolicy
) -> None:
    verdict = verify_bundle(BundleSignature(interop_bundle, "x"), DIGEST, key_policy)
    assert verdict.reasons == ("signed keyless, but the policy trusts no keyless identity",)
    identity_policy = VerificationPolicy(identities=(Identity(identity="a", issuer="b"),))
    verdict = verify_bundle(BundleSignature(interop_bundle, "x"), DIGEST, identity_policy)
    assert "no Sigstore trusted root" in verdict.reasons[0]


@pytest.fixture
def interop_bundle(interop: object) -> bytes:
    from pathlib import Path

    assert isinstance(interop, Path)
    return (interop / "cosign" / "bundle" / "oci-attestation.sigstore.json").read_bytes()


# ---------------------------------------------------------------- the result


def test_result_reports_match_and_rejections(
    signer: KeySigner, other_signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    result = evaluate(
        "r@" + DIGEST,
        DIGEST,
        [
            _bundle(other_signer),
            UnreadableSignature("bundle", "referrer sha256:x", "blob sha256:y is missing"),
            _legacy(signer),
        ],
        key_policy,
    )
    assert result.ok
    assert result.matched is result.verdicts[2]
    assert result.signer == signer.fingerprint
    assert len(result.rejected) == 2
    document = result.to_json()
    assert document["verified"] is True
    assert document["matched"]["format"] == "legacy"
    assert document["signatures"][1]["reasons"] == ["blob sha256:y is missing"]


def test_result_without_match_raises_with_every_reason(
    other_signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    result = evaluate(
        "r@" + DIGEST, DIGEST, [_bundle(other_signer), _legacy(other_signer)], key_policy
    )
    assert not result.ok and result.signer == ""
    with pytest.raises(VerificationError) as info:
        result.require()
    assert "bundle test referrer" in str(info.value)
    assert "legacy test layer" in str(info.value)
    assert info.value.hint and "key" in info.value.hint


def test_unsigned_result() -> None:
    result = evaluate("r@" + DIGEST, DIGEST, [], VerificationPolicy())
    with pytest.raises(VerificationError, match="has no signatures"):
        result.require()


# ---------------------------------------------------------------- key bundles with a log entry


def _logged_bundle(signer: KeySigner, log: SigstoreStack, *, promise: bool = True) -> bytes:
    """A key bundle whose DSSE envelope was recorded (as cosign 3 does) in a Rekor-like log."""
    from cosgitops.signing.keys import public_key_pem

    document = json.loads(_bundle(signer).bundle)
    envelope = json.dumps(document["dsseEnvelope"])
    verifier = base64.b64encode(public_key_pem(signer.private_key.public_key())).decode()
    proposed = {
        "kind": "dsse",
        "spec": {"proposedContent": {"envelope": envelope, "verifiers": [verifier]}},
    }
    (entry,) = log.log_entry(proposed).values()
    item: dict[str, object] = {
        "logIndex": str(entry["logIndex"]),
        "logId": {"keyId": base64.b64encode(bytes.fromhex(entry["logID"])).decode()},
        "kindVersion": {"kind": "dsse", "version": "0.0.1"},
        "integratedTime": str(entry["integratedTime"]),
        "canonicalizedBody": entry["body"],
    }
    if promise:
        item["inclusionPromise"] = {
            "signedEntryTimestamp": entry["verification"]["signedEntryTimestamp"]
        }
    document["verificationMaterial"]["tlogEntries"] = [item]
    return json.dumps(document).encode()


def test_key_bundle_log_entry_is_checked_with_rekor_key(
    signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    from dataclasses import replace

    from cosgitops.signing.policy import TrustedKey

    log = SigstoreStack()
    candidate = BundleSignature(_logged_bundle(signer, log), "x")
    rekor = TrustedKey(log.rekor_key.public_key(), "rekor.pub")
    checked = verify_bundle(
        candidate, DIGEST, replace(key_policy, rekor_keys=(rekor,), require_tlog=True)
    )
    assert checked.accepted, checked.reasons
    assert any("verified (signed entry timestamp)" in note for note in checked.notes)

    unchecked = verify_bundle(candidate, DIGEST, key_policy)
    assert unchecked.accepted and "not checked" in unchecked.notes[0]

    stranger = TrustedKey(SigstoreStack().rekor_key.public_key(), "other.pub")
    refused = verify_bundle(candidate, DIGEST, replace(key_policy, rekor_keys=(stranger,)))
    assert not refused.accepted and "unknown transparency log" in refused.reasons[0]

    # an entry recording another envelope (here: another signature of the same statement)
    other = BundleSignature(_logged_bundle(signer, log), "y")
    grafted = json.loads(candidate.bundle)
    grafted["verificationMaterial"]["tlogEntries"] = json.loads(other.bundle)[
        "verificationMaterial"
    ]["tlogEntries"]
    mismatch = verify_bundle(
        BundleSignature(json.dumps(grafted).encode(), "z"),
        DIGEST,
        replace(key_policy, rekor_keys=(rekor,)),
    )
    assert not mismatch.accepted and "no signature of this envelope" in mismatch.reasons[0]


def test_unchecked_log_entries_never_fail_a_signature(
    signer: KeySigner, key_policy: VerificationPolicy
) -> None:
    """Entries without a SET (Rekor v2) are only reported when no Rekor key is configured."""
    candidate = BundleSignature(_logged_bundle(signer, SigstoreStack(), promise=False), "x")
    assert verify_bundle(candidate, DIGEST, key_policy).accepted
