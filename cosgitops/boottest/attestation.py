"""Boot attestations in an image store: signing and attaching one to the image it
proves, finding them again, and judging them under a trust policy.

An attestation is a Sigstore bundle v0.3 (DSSE over the in-toto statement of
:mod:`cosgitops.boottest.predicate`), signed exactly as image signatures are (a cosign
key, or keyless through Sigstore), in an OCI 1.1 artifact manifest whose ``subject`` is
the image and whose ``artifactType`` is :data:`ARTIFACT_TYPE`: so the image signature
reader, which looks for cosign's bundle artifact type only, never mistakes it for a
signature, and registries without the referrers API list it under the tag-schema
fallback (``sha256-<hex>``) like any other referrer.

It is accepted only when all of this holds: the referrer is the manifest asked for (by
digest) and refers to this image; its bundle's DSSE signature verifies under the
policy (a trusted key, or a trusted keyless identity through sigstore-python); the
statement's predicate type is ours and its subject is exactly this digest; the signed
predicate names the same candidate digest; and it passed (every step ran and passed).
Each refusal says which of these failed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cosgitops.boottest.predicate import (
    PREDICATE_TYPE,
    BootTestResult,
    PredicateError,
    parse_statement,
    statement,
)
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import CosgitopsError, DownloadError, NotFoundError
from cosgitops.model import BootTestRef
from cosgitops.oci import media
from cosgitops.oci.digest import check_digest_format, sha256_digest
from cosgitops.oci.store import ImageStore
from cosgitops.signing.policy import VerificationPolicy
from cosgitops.signing.signers import ImageSigner

ARTIFACT_TYPE = "application/vnd.cosgitops.boot-test.v1+json"
RESULT_ANNOTATION = "dev.cosgitops.boot-test.result"  # a listing hint; never trusted
BUNDLE_CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
BUNDLE_PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
CREATED_ANNOTATION = "org.opencontainers.image.created"


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class AttachedAttestation:
    reference: str  # NAME@DIGEST of the image it is attached to
    digest: str  # the referrer manifest: what a release manifest names
    bundle_digest: str
    bundle: bytes = field(repr=False)
    result: BootTestResult = field(repr=False)
    signer: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "attestation": self.digest,
            "bundle": self.bundle_digest,
            "result": self.result.result,
            "signer": self.signer,
        }


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def subject_name(store: ImageStore, identity: str | None = None) -> str:
    """The statement's subject name: the repository the image is published under
    (``identity``; default: the store's), named as image signatures name it. Verifiers
    match the subject by digest; the name is for people (and sigstore requires one)."""
    from cosgitops.signing.image import signed_identity

    return signed_identity(identity or store.reference.name)


def sign_attestation(result: BootTestResult, signer: ImageSigner, *, name: str) -> bytes:
    """The Sigstore bundle (JSON bytes) of ``result``, signed by ``signer``."""
    return signer.sign_statement(statement(result, subject_name=name))


def attach_attestation(
    store: ImageStore,
    result: BootTestResult,
    signer: ImageSigner,
    *,
    created: str | None = None,
    bundle: bytes | None = None,
    identity: str | None = None,
) -> AttachedAttestation:
    """Sign ``result`` (unless ``bundle`` is given already signed) and attach it to the
    candidate image in ``store`` as a referrer. ``identity``: the repository the image
    is published under, when the store is not it (a build layout)."""
    digest = check_digest_format(result.candidate.digest)
    image = store.resolve(digest)
    if image is None:
        raise NotFoundError(
            f"{store.reference.name}@{digest} does not exist",
            hint="push the candidate image before attaching its boot attestation",
        )
    if bundle is None:
        bundle = sign_attestation(result, signer, name=subject_name(store, identity))
    bundle_digest = sha256_digest(bundle)
    store.put_blob(media.OCI_EMPTY_BYTES, media.OCI_EMPTY_DIGEST, size=len(media.OCI_EMPTY_BYTES))
    store.put_blob(bundle, bundle_digest, size=len(bundle))
    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": media.OCI_EMPTY,
            "digest": media.OCI_EMPTY_DIGEST,
            "size": len(media.OCI_EMPTY_BYTES),
        },
        "layers": [
            {"mediaType": media.SIGSTORE_BUNDLE_V03, "digest": bundle_digest, "size": len(bundle)}
        ],
        "subject": {"mediaType": image.media_type, "digest": image.digest, "size": image.size},
        "annotations": {
            BUNDLE_CONTENT_ANNOTATION: "dsse-envelope",
            BUNDLE_PREDICATE_ANNOTATION: PREDICATE_TYPE,
            RESULT_ANNOTATION: result.result,
            CREATED_ANNOTATION: created or _now_rfc3339(),
        },
    }
    data = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
    written = store.put_manifest(data, media.OCI_MANIFEST)
    return AttachedAttestation(
        reference=f"{store.reference.name}@{digest}",
        digest=written.digest,
        bundle_digest=bundle_digest,
        bundle=bundle,
        result=result,
        signer=signer.description,
    )


# ---------------------------------------------------------------- judging


@dataclass(frozen=True)
class AttestationVerdict:
    """One attestation, judged: signed by someone trusted, for this digest, passed?"""

    digest: str  # the referrer manifest
    accepted: bool  # trusted, for this image, and passed
    reasons: tuple[str, ...] = ()  # why not; empty when accepted
    signed: bool = False  # the signature verified under the policy
    signer: str = ""
    result: BootTestResult | None = None  # the signed predicate (None when unreadable)
    notes: tuple[str, ...] = ()
    created: str = ""  # the referrer's annotation (unsigned; for ordering listings)

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.passed

    def ref(self) -> BootTestRef:
        """What a release manifest records for this (accepted) attestation."""
        assert self.result is not None
        origin = self.result.from_release
        return BootTestRef(
            attestation=self.digest,
            result=self.result.result,
            signer=self.signer,
            from_version=None if origin is None else origin.version,
            from_digest=None if origin is None else origin.digest,
            finished=self.result.finished,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "attestation": self.digest,
            "accepted": self.accepted,
            "signed": self.signed,
            "signer": self.signer or None,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "created": self.created or None,
            "predicate": None if self.result is None else self.result.to_json(),
        }


@dataclass(frozen=True)
class AttestationReport:
    reference: str  # NAME@DIGEST of the image
    digest: str
    verdicts: tuple[AttestationVerdict, ...]
    policy: str = ""

    @property
    def accepted(self) -> tuple[AttestationVerdict, ...]:
        return tuple(verdict for verdict in self.verdicts if verdict.accepted)

    @property
    def best(self) -> AttestationVerdict | None:
        """The accepted attestation that finished last (its signed finish time)."""
        accepted = self.accepted
        if not accepted:
            return None
        return max(accepted, key=lambda v: (v.result.finished if v.result else "", v.created))

    @property
    def ok(self) -> bool:
        return self.best is not None

    def failure_message(self) -> str:
        if not self.verdicts:
            return f"{self.reference} has no boot attestation"
        lines = [f"no boot attestation of {self.reference} is accepted ({len(self.verdicts)}):"]
        for verdict in self.verdicts:
            lines.append(f"  {verdict.digest}: {'; '.join(verdict.reasons)}")
        return "\n".join(lines)

    def failure_hint(self) -> str:
        if not self.verdicts:
            return "run `cosgitops boot-test NAME` on this image first"
        return f"a passing attestation must be signed by {self.policy or 'a trusted signer'}"

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "reference": self.reference,
            "digest": self.digest,
            "verified": self.ok,
            "matched": None if best is None else best.to_json(),
            "attestations": [verdict.to_json() for verdict in self.verdicts],
            "policy": self.policy,
        }


def _trusted_root(policy: VerificationPolicy) -> Any:
    """The sigstore TrustedRoot keyless attestations need (None without identities)."""
    if not policy.identities:
        return None
    from cosgitops.signing import keyless

    data = policy.trusted_root
    if data is None:
        data = keyless.public_good_trusted_root()
    try:
        return keyless.load_trusted_root(data)
    except keyless.KeylessError:
        return None  # the keyless check then says there is no usable trusted root


def _read_bundle(
    store: ImageStore, attestation: str, image_digest: str, limits: Limits
) -> tuple[bytes, str]:
    """The bundle bytes and the created annotation of the referrer ``attestation``;
    :class:`PredicateError` when it is not a boot attestation of ``image_digest``."""
    manifest = store.get_manifest(attestation)  # verified against the digest
    value = manifest.json()
    if manifest.is_index or value.get("artifactType") != ARTIFACT_TYPE:
        raise PredicateError(
            f"it is not a boot attestation (artifactType {value.get('artifactType')!r})"
        )
    subject = manifest.subject()
    if subject != image_digest:
        raise PredicateError(f"it is attached to {subject}, not to this image ({image_digest})")
    layers = [d for d in manifest.children()[1:] if d.media_type == media.SIGSTORE_BUNDLE_V03]
    if len(layers) != 1:
        raise PredicateError(f"it holds {len(layers)} Sigstore bundles, not one")
    if layers[0].size > limits.signature_max_bytes:
        raise PredicateError(f"its bundle is larger than {limits.signature_max_bytes} bytes")
    annotations = value.get("annotations")
    created = annotations.get(CREATED_ANNOTATION, "") if isinstance(annotations, dict) else ""
    blob = store.read_blob(layers[0].digest, max_bytes=limits.signature_max_bytes)
    return blob, str(created)


def judge_bundle(
    bundle: bytes,
    image_digest: str,
    policy: VerificationPolicy,
    *,
    attestation: str = "",
    trusted_root: Any = None,
    created: str = "",
    limits: Limits = DEFAULT_LIMITS,
) -> AttestationVerdict:
    """Judge one attestation bundle for ``image_digest`` (pure: no store access)."""
    from cosgitops.signing.verify import BundleSignature, parse_bundle, verify_bundle

    if trusted_root is None:
        trusted_root = _trusted_root(policy)
    signature = verify_bundle(
        BundleSignature(bundle, f"attestation {attestation}"),
        image_digest,
        policy,
        trusted_root=trusted_root,
        limits=limits,
        predicate_type=PREDICATE_TYPE,
    )
    if not signature.accepted:
        return AttestationVerdict(
            attestation, False, signature.reasons, signer=signature.signer, created=created
        )
    # Signed by someone trusted, for this digest: now its content counts.
    try:
        claims = parse_statement(parse_bundle(bundle).payload)
    except (PredicateError, ValueError) as exc:
        return AttestationVerdict(
            attestation,
            False,
            (f"malformed boot-test predicate: {exc}",),
            signed=True,
            signer=signature.signer,
            created=created,
        )
    result = claims.result
    reasons: list[str] = []
    if result.candidate.digest != image_digest:
        reasons.append(
            f"the attestation is for {result.candidate.digest}, not this image ({image_digest})"
        )
    if not result.passed:
        failed = result.failed_step
        if failed is not None:
            why = f": {failed.detail}" if failed.detail else ""
            reasons.append(f"the boot test failed at step {failed.name!r}{why}")
        else:
            reasons.append("the boot test did not run every step")
    return AttestationVerdict(
        attestation,
        not reasons,
        tuple(reasons),
        signed=True,
        signer=signature.signer,
        result=result,
        notes=signature.notes,
        created=created,
    )


def verify_attestation(
    store: ImageStore,
    image_digest: str,
    attestation: str,
    policy: VerificationPolicy,
    *,
    trusted_root: Any = None,
    limits: Limits = DEFAULT_LIMITS,
) -> AttestationVerdict:
    """Read the attestation ``attestation`` (a referrer manifest digest) from ``store`` and
    judge it for ``image_digest``. A transfer failure raises :class:`DownloadError`."""
    try:
        check_digest_format(attestation)
    except CosgitopsError as exc:
        return AttestationVerdict(attestation, False, (str(exc),))
    try:
        bundle, created = _read_bundle(store, attestation, image_digest, limits)
    except DownloadError:
        raise
    except NotFoundError:
        return AttestationVerdict(
            attestation, False, (f"the attestation is not in {store.reference.name}",)
        )
    except (PredicateError, CosgitopsError) as exc:
        return AttestationVerdict(attestation, False, (str(exc),))
    return judge_bundle(
        bundle,
        image_digest,
        policy,
        attestation=attestation,
        trusted_root=trusted_root,
        created=created,
        limits=limits,
    )


def find_attestations(
    store: ImageStore, image_digest: str, *, limits: Limits = DEFAULT_LIMITS
) -> list[str]:
    """The digests of the boot attestations attached to ``image_digest``: all of them, or
    the ``limits.boot_attestations_max`` newest (by their unsigned created annotation)."""
    referrers = [
        descriptor
        for descriptor in store.referrers(image_digest, artifact_type=ARTIFACT_TYPE)
        if descriptor.artifact_type == ARTIFACT_TYPE
    ]
    digests = list(dict.fromkeys(descriptor.digest for descriptor in referrers))
    if len(digests) <= limits.boot_attestations_max:
        return digests
    created = {
        descriptor.digest: str((descriptor.annotations or {}).get(CREATED_ANNOTATION, ""))
        for descriptor in referrers
    }
    newest = sorted(digests, key=lambda digest: created[digest], reverse=True)
    keep = set(newest[: limits.boot_attestations_max])
    return [digest for digest in digests if digest in keep]


def verify_attestations(
    store: ImageStore,
    image_digest: str,
    policy: VerificationPolicy,
    *,
    only: Sequence[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> AttestationReport:
    """Judge every boot attestation of ``image_digest`` (or just those in ``only``)."""
    digests = (
        list(only) if only is not None else find_attestations(store, image_digest, limits=limits)
    )
    trusted_root = _trusted_root(policy) if digests else None
    verdicts = tuple(
        verify_attestation(
            store, image_digest, digest, policy, trusted_root=trusted_root, limits=limits
        )
        for digest in digests
    )
    return AttestationReport(
        reference=f"{store.reference.name}@{image_digest}",
        digest=image_digest,
        verdicts=verdicts,
        policy=policy.describe(),
    )
