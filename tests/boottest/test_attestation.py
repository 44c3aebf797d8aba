"""Boot attestations in a store: signed like image signatures, attached as OCI referrers
with an artifact type of their own, found again, and judged under a trust policy; every
way an attestation can be wrong is refused with its reason."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest

from cosgitops.boottest.attestation import (
    ARTIFACT_TYPE,
    RESULT_ANNOTATION,
    attach_attestation,
    find_attestations,
    verify_attestation,
    verify_attestations,
)
from cosgitops.boottest.predicate import PREDICATE_TYPE, StepResult
from cosgitops.errors import NotFoundError
from cosgitops.oci import media
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.oci.store import Descriptor, ImageStore
from cosgitops.signing import sign_image, verify_image
from cosgitops.signing.policy import TrustedKey, VerificationPolicy
from cosgitops.signing.signers import KeySigner
from tests.boottest.helpers import synthetic_result
from tests.helpers.services import RegistryServer
from tests.oci.images import make_image, push_image


@pytest.fixture(scope="module")
def signer() -> KeySigner:
    from cosgitops.signing import keys

    return KeySigner(keys.private_key_from_pem(keys.generate_keypair(b"").private_pem, b""), "a")


@pytest.fixture(scope="module")
def stranger() -> KeySigner:
    from cosgitops.signing import keys

    return KeySigner(keys.private_key_from_pem(keys.generate_keypair(b"").private_pem, b""), "b")


@pytest.fixture
def policy(signer: KeySigner) -> VerificationPolicy:
    return VerificationPolicy(keys=(TrustedKey(signer.private_key.public_key(), "release.pub"),))


@pytest.fixture
def layout(tmp_path: Path) -> OCILayoutStore:
    return OCILayoutStore(tmp_path / "layout")


def _image(store: ImageStore, text: str = "1.1.0") -> Descriptor:
    return push_image(store, make_image([{"etc/os-release": f"VERSION={text}\n".encode()}]))


def test_an_attestation_is_attached_found_and_accepted(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    image = _image(layout)
    attached = attach_attestation(layout, synthetic_result(image.digest), signer)

    assert find_attestations(layout, image.digest) == [attached.digest]
    verdict = verify_attestation(layout, image.digest, attached.digest, policy)
    assert verdict.accepted, verdict.reasons
    assert verdict.signed and verdict.signer.startswith("key ")
    assert verdict.result is not None and verdict.result.candidate.digest == image.digest
    ref = verdict.ref()
    assert (ref.attestation, ref.result, ref.from_version) == (attached.digest, "passed", "1.0.0")

    report = verify_attestations(layout, image.digest, policy)
    assert report.ok and report.best is not None and report.best.digest == attached.digest


def test_the_referrer_is_an_attestation_not_a_signature(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    image = _image(layout)
    attached = attach_attestation(layout, synthetic_result(image.digest), signer)

    manifest = layout.get_manifest(attached.digest).json()
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["subject"]["digest"] == image.digest
    assert manifest["config"]["mediaType"] == media.OCI_EMPTY
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == media.SIGSTORE_BUNDLE_V03
    assert manifest["annotations"]["dev.sigstore.bundle.predicateType"] == PREDICATE_TYPE
    assert manifest["annotations"][RESULT_ANNOTATION] == "passed"
    bundle = json.loads(layout.read_blob(layer["digest"], max_bytes=1 << 20))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"][0]["digest"] == {"sha256": image.digest.removeprefix("sha256:")}
    predicate = statement["predicate"]
    assert predicate["result"] == "passed"
    assert predicate["environment"]["qemu"].startswith("QEMU emulator version")
    assert all(log["digest"].startswith("sha256:") for log in predicate["serialLogs"])
    assert [step["outcome"] for step in predicate["steps"]] == ["passed"] * 6

    # The image signature reader does not take it for a signature (nor the other way).
    sign_image(layout, image.digest, signer)
    signatures = verify_image(layout, image.digest, policy)
    assert signatures.ok
    assert all(attached.digest not in v.location for v in signatures.verdicts)
    assert find_attestations(layout, image.digest) == [attached.digest]


def test_the_registry_lists_it_under_the_tag_schema_fallback(
    registry: RegistryServer, signer: KeySigner, policy: VerificationPolicy
) -> None:
    from cosgitops.oci import open_store
    from cosgitops.oci.store import StoreOptions

    store = open_store(f"{registry.host}/fleet/edge-gateway", StoreOptions(insecure=True))
    image = _image(store)
    attached = attach_attestation(store, synthetic_result(image.digest), signer)
    # Debian's distribution 2.8 has no referrers API: the sha256-<hex> index lists it.
    assert store.resolve(image.digest.replace(":", "-")) is not None
    assert find_attestations(store, image.digest) == [attached.digest]
    assert verify_attestations(store, image.digest, policy).ok


def test_an_attestation_for_another_digest_is_refused(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    image, other = _image(layout, "1.1.0"), _image(layout, "1.2.0")
    # signed for `other`, then attached to `image` as it is
    attached = attach_attestation(layout, synthetic_result(other.digest), signer)
    moved = _reattach(layout, attached.bundle, image)
    verdict = verify_attestation(layout, image.digest, moved, policy)
    assert not verdict.accepted
    assert any(f"not this image ({image.digest})" in reason for reason in verdict.reasons)

    # and the other image's own attestation does not count for this one
    verdict = verify_attestation(layout, image.digest, attached.digest, policy)
    assert not verdict.accepted
    assert verdict.reasons == (
        f"it is attached to {other.digest}, not to this image ({image.digest})",
    )


def _reattach(store: ImageStore, bundle: bytes, image: Descriptor) -> str:
    """Attach ``bundle`` bytes (as they are) to ``image``."""
    digest = sha256_digest(bundle)
    store.put_blob(bundle, digest, size=len(bundle))
    store.put_blob(b"{}", media.OCI_EMPTY_DIGEST, size=2)
    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": media.OCI_EMPTY, "digest": media.OCI_EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": media.SIGSTORE_BUNDLE_V03, "digest": digest, "size": len(bundle)}],
        "subject": image.to_json(),
    }
    return store.put_manifest(json.dumps(manifest).encode(), media.OCI_MANIFEST).digest


def test_a_candidate_digest_that_disagrees_with_the_subject_is_refused(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    from cosgitops.boottest.predicate import statement

    image, other = _image(layout, "1.1.0"), _image(layout, "1.2.0")
    result = synthetic_result(other.digest)
    # the subject names this image, the signed predicate another one
    document = json.loads(statement(result, subject_name="x"))
    document["subject"][0]["digest"]["sha256"] = image.digest.removeprefix("sha256:")
    bundle = signer.sign_statement(json.dumps(document).encode())
    verdict = verify_attestation(layout, image.digest, _reattach(layout, bundle, image), policy)
    assert not verdict.accepted and verdict.signed
    assert verdict.reasons == (
        f"the attestation is for {other.digest}, not this image ({image.digest})",
    )


def test_a_key_outside_the_policy_is_refused(
    layout: OCILayoutStore, stranger: KeySigner, policy: VerificationPolicy
) -> None:
    image = _image(layout)
    attached = attach_attestation(layout, synthetic_result(image.digest), stranger)
    verdict = verify_attestation(layout, image.digest, attached.digest, policy)
    assert not verdict.accepted and not verdict.signed
    assert verdict.result is None  # an untrusted predicate is not even read
    assert "does not verify with any trusted key" in verdict.reasons[0]


def test_a_failing_attestation_is_refused(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    image = _image(layout)
    attached = attach_attestation(layout, synthetic_result(image.digest, fail_at="health"), signer)
    verdict = verify_attestation(layout, image.digest, attached.digest, policy)
    assert not verdict.accepted and verdict.signed
    assert verdict.reasons == (
        "the boot test failed at step 'health': health check 'web' exited 1",
    )
    assert verdict.result is not None and verdict.result.result == "failed"
    manifest = layout.get_manifest(attached.digest).json()
    assert manifest["annotations"][RESULT_ANNOTATION] == "failed"
    report = verify_attestations(layout, image.digest, policy)
    assert not report.ok
    assert "failed at step 'health'" in report.failure_message()


def test_a_passing_result_over_a_failed_step_is_refused(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    from cosgitops.boottest.predicate import statement

    image = _image(layout)
    failing = synthetic_result(image.digest, fail_at="upgrade")
    document = json.loads(statement(failing, subject_name="x"))
    document["predicate"]["result"] = "passed"  # signed, but a lie
    bundle = signer.sign_statement(json.dumps(document).encode())
    verdict = verify_attestation(layout, image.digest, _reattach(layout, bundle, image), policy)
    assert not verdict.accepted and verdict.signed
    assert "malformed boot-test predicate" in verdict.reasons[0]
    assert "does not match its steps (failed)" in verdict.reasons[0]


def test_a_skipped_step_proves_nothing(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    image = _image(layout)
    result = synthetic_result(image.digest)
    steps = (*result.steps[:-1], StepResult("fallback", "skipped"))
    attached = attach_attestation(layout, replace(result, steps=steps), signer)
    verdict = verify_attestation(layout, image.digest, attached.digest, policy)
    assert not verdict.accepted
    assert verdict.reasons == ("the boot test did not run every step",)


def test_a_modified_attestation_is_refused(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    image = _image(layout)
    attached = attach_attestation(layout, synthetic_result(image.digest, fail_at="health"), signer)
    bundle = json.loads(attached.bundle)
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"] = synthetic_result(image.digest).to_json()  # turn it into a pass
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    tampered = _reattach(layout, json.dumps(bundle).encode(), image)
    verdict = verify_attestation(layout, image.digest, tampered, policy)
    assert not verdict.accepted and not verdict.signed
    assert "DSSE signature does not verify" in verdict.reasons[0]

    # a bundle blob changed in the store no longer matches the digest it is named by
    layer = layout.get_manifest(attached.digest).json()["layers"][0]["digest"]
    blob = layout.path / "blobs" / "sha256" / layer.removeprefix("sha256:")
    blob.write_bytes(blob.read_bytes().replace(b"dsseEnvelope", b"dsseEnvelopf", 1))
    verdict = verify_attestation(layout, image.digest, attached.digest, policy)
    assert not verdict.accepted
    assert "digest" in verdict.reasons[0]


def test_a_missing_attestation_or_another_artifact_is_refused(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    image = _image(layout)
    missing = "sha256:" + "0" * 64
    verdict = verify_attestation(layout, image.digest, missing, policy)
    assert verdict.reasons == (f"the attestation is not in {layout.reference.name}",)

    signed = sign_image(layout, image.digest, signer)
    bundle_referrer = signed.signatures[0].manifest_digest  # an image signature, not ours
    verdict = verify_attestation(layout, image.digest, bundle_referrer, policy)
    assert not verdict.accepted
    assert "is not a boot attestation" in verdict.reasons[0]

    verdict = verify_attestation(layout, image.digest, "sha256:nothex", policy)
    assert not verdict.accepted and "digest" in verdict.reasons[0]

    assert not verify_attestations(layout, image.digest, policy).verdicts
    assert (
        "has no boot attestation"
        in verify_attestations(layout, image.digest, policy).failure_message()
    )


def test_attaching_to_an_image_that_is_not_there_is_refused(
    layout: OCILayoutStore, signer: KeySigner
) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        attach_attestation(layout, synthetic_result("sha256:" + "1" * 64), signer)


def test_the_newest_accepted_attestation_is_the_one_named(
    layout: OCILayoutStore, signer: KeySigner, stranger: KeySigner, policy: VerificationPolicy
) -> None:
    image = _image(layout)
    older = attach_attestation(
        layout, synthetic_result(image.digest, finished="2026-01-01T00:00:00Z"), signer
    )
    newer = attach_attestation(
        layout, synthetic_result(image.digest, finished="2026-02-01T00:00:00Z"), signer
    )
    attach_attestation(
        layout, synthetic_result(image.digest, finished="2026-03-01T00:00:00Z"), stranger
    )
    attach_attestation(
        layout,
        synthetic_result(image.digest, fail_at="boot-candidate", finished="2026-04-01T00:00:00Z"),
        signer,
    )
    report = verify_attestations(layout, image.digest, policy)
    assert len(report.verdicts) == 4
    assert {v.digest for v in report.accepted} == {older.digest, newer.digest}
    assert report.best is not None and report.best.digest == newer.digest


def test_only_the_newest_attestations_are_judged(
    layout: OCILayoutStore, signer: KeySigner, policy: VerificationPolicy
) -> None:
    from cosgitops.config import Limits

    image = _image(layout)
    made = [
        attach_attestation(layout, synthetic_result(image.digest), signer, created=created)
        for created in ("2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
    ]
    limits = Limits(boot_attestations_max=2)
    found = find_attestations(layout, image.digest, limits=limits)
    assert set(found) == {made[0].digest, made[2].digest}
    assert len(verify_attestations(layout, image.digest, policy, limits=limits).verdicts) == 2
    assert len(find_attestations(layout, image.digest)) == 3
