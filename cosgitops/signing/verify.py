"""Judging signatures: pure functions from signature bytes and a policy to a verdict.

The I/O that finds the signatures (referrers, the legacy ``.sig`` tag) lives in
:mod:`cosgitops.signing.image`; this module never touches a store or the network
(keyless bundles are checked against an in-memory trusted root).

Every candidate gets a :class:`SignatureVerdict` saying whether it was accepted, who
signed it, and every reason it was not, so ``verify`` can print why each signature
failed and not just "no".
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import VerificationError
from cosgitops.oci import media
from cosgitops.signing import payloads, tlog
from cosgitops.signing.policy import TrustedKey, VerificationPolicy

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

SignatureFormat = Literal["bundle", "legacy"]

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
REKOR_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_MEDIA_TYPES = (
    media.SIGSTORE_BUNDLE_V03,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class LegacySignature:
    """One simple-signing layer of a ``sha256-<hex>.sig`` manifest."""

    payload: bytes
    annotations: Mapping[str, str]
    location: str


@dataclass(frozen=True)
class BundleSignature:
    """One Sigstore bundle attached as a referrer."""

    bundle: bytes
    location: str


@dataclass(frozen=True)
class UnreadableSignature:
    """A signature that could not even be read (missing blob, digest mismatch, ...)."""

    format: SignatureFormat
    location: str
    reason: str


Candidate = LegacySignature | BundleSignature | UnreadableSignature


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class SignatureVerdict:
    format: SignatureFormat
    location: str
    accepted: bool
    reasons: tuple[str, ...] = ()  # why it was rejected; empty when accepted
    signer: str = ""  # "key <fingerprint>" or "identity <SAN> (issuer <URL>)"
    key_fingerprint: str | None = None
    identity: str | None = None
    issuer: str | None = None
    notes: tuple[str, ...] = ()  # what else was (or was not) checked

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "location": self.location,
            "accepted": self.accepted,
            "signer": self.signer or None,
            "keyFingerprint": self.key_fingerprint,
            "identity": self.identity,
            "issuer": self.issuer,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class VerificationResult:
    reference: str  # NAME@DIGEST
    digest: str
    verdicts: tuple[SignatureVerdict, ...]
    policy: str = ""  # who was trusted, for messages

    @property
    def matched(self) -> SignatureVerdict | None:
        """The accepted signature (bundles are listed first, so they win)."""
        return next((verdict for verdict in self.verdicts if verdict.accepted), None)

    @property
    def ok(self) -> bool:
        return self.matched is not None

    @property
    def rejected(self) -> tuple[SignatureVerdict, ...]:
        return tuple(verdict for verdict in self.verdicts if not verdict.accepted)

    @property
    def signer(self) -> str:
        """Who signed (key fingerprint or keyless identity); empty when nothing matched."""
        matched = self.matched
        if matched is None:
            return ""
        return matched.key_fingerprint or matched.identity or matched.signer

    def require(self) -> SignatureVerdict:
        """The matched verdict, or :class:`VerificationError` explaining every rejection."""
        matched = self.matched
        if matched is not None:
            return matched
        raise VerificationError(self.failure_message(), hint=self.failure_hint())

    def failure_message(self) -> str:
        if not self.verdicts:
            return f"{self.reference} has no signatures"
        lines = [f"no signature of {self.reference} is trusted ({len(self.verdicts)} checked):"]
        for verdict in self.verdicts:
            lines.append(f"  {verdict.format} {verdict.location}: {'; '.join(verdict.reasons)}")
        return "\n".join(lines)

    def failure_hint(self) -> str:
        if not self.verdicts:
            return "sign it with `cosgitops sign` (or cosign) first"
        return f"the policy trusts {self.policy or 'nobody'}"

    def to_json(self) -> dict[str, Any]:
        matched = self.matched
        return {
            "reference": self.reference,
            "digest": self.digest,
            "verified": self.ok,
            "matched": matched.to_json() if matched else None,
            "signatures": [verdict.to_json() for verdict in self.verdicts],
            "policy": self.policy,
        }


# ---------------------------------------------------------------- helpers


def _verify_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _find_key(
    keys: Sequence[TrustedKey], signatures: Sequence[bytes], data: bytes
) -> tuple[TrustedKey, bytes] | None:
    for key in keys:
        for signature in signatures:
            if _verify_ecdsa(key.public_key, signature, data):
                return key, signature
    return None


def _decode_b64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass
class _Findings:
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_tlog(
    findings: _Findings,
    entries: Sequence[Callable[[], tlog.TlogEntry]],
    policy: VerificationPolicy,
    check_body: Callable[[tlog.TlogEntry], None],
) -> None:
    """Transparency-log evidence for a key-based signature: checked when the policy has
    Rekor keys, required when it says so. ``entries`` parse lazily: an entry nobody
    checks (no Rekor key) cannot make a signature fail."""
    if not entries:
        if policy.require_tlog:
            findings.reasons.append("no transparency log entry, and the policy requires one")
        return
    if not policy.rekor_keys:
        findings.notes.append(
            "transparency log entry present but not checked (no Rekor key in the policy)"
        )
        if policy.require_tlog:
            findings.reasons.append("a transparency log entry is required but no Rekor key is set")
        return
    rekor_keys = [key.public_key for key in policy.rekor_keys]
    for parse in entries:
        try:
            entry = parse()
            tlog.verify_set(entry, rekor_keys)
            check_body(entry)
        except tlog.TlogError as exc:
            findings.reasons.append(f"transparency log: {exc}")
            return
        findings.notes.append(f"{entry.describe()} verified (signed entry timestamp)")


def _identity_reason(names: Sequence[str], policy: VerificationPolicy) -> str | None:
    """Why the identity a signature names is not the one the policy requires, if so."""
    expected = policy.signed_identity
    if expected is None or expected in names:
        return None
    if expected.startswith("oci:") and _layout_name(expected) in {
        _layout_name(name) for name in names if name.startswith("oci:")
    }:
        # An OCI layout has no fixed place (signed as oci:.cosgitops/registry/edge, read
        # from /srv/fleet/.cosgitops/registry/edge): its repository name is what binds.
        return None
    named = ", ".join(repr(name) for name in names) if names else "no repository"
    return (
        f"the signature names {named} as the image's identity, not {expected!r} (an image "
        "signed for another repository and copied here)"
    )


def _layout_name(identity: str) -> str:
    return identity.removeprefix("oci:").rstrip("/").rsplit("/", 1)[-1]


def _digest_reason(claimed: Sequence[str], digest: str) -> str | None:
    if digest in claimed:
        return None
    named = ", ".join(claimed) if claimed else "no digest"
    return f"the signed payload names {named}, not this image ({digest})"


# ---------------------------------------------------------------- legacy


def verify_legacy(
    candidate: LegacySignature,
    digest: str,
    policy: VerificationPolicy,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> SignatureVerdict:
    """A cosign simple-signing signature: ECDSA over the payload bytes by a trusted key,
    the payload naming exactly ``digest``, and its Rekor SET when the policy can check it."""
    findings = _Findings()
    location = candidate.location
    matched_key: TrustedKey | None = None
    if len(candidate.payload) > limits.signature_max_bytes:
        findings.reasons.append(f"the payload is larger than {limits.signature_max_bytes} bytes")
        return _verdict("legacy", location, findings, None)

    signature = _decode_b64(candidate.annotations.get(SIGNATURE_ANNOTATION))
    if signature is None:
        findings.reasons.append(f"the layer has no valid {SIGNATURE_ANNOTATION} annotation")
    elif CERTIFICATE_ANNOTATION in candidate.annotations and not policy.keys:
        findings.reasons.append(
            "a keyless signature in the legacy format; cosgitops verifies keyless signatures "
            "in the Sigstore bundle format only"
        )
    elif not policy.keys:
        findings.reasons.append("signed with a key, but the policy trusts no key")
    else:
        found = _find_key(policy.keys, [signature], candidate.payload)
        if found is None:
            tried = ", ".join(key.fingerprint[:16] for key in policy.keys)
            findings.reasons.append(f"the signature does not verify with any trusted key ({tried})")
        else:
            matched_key = found[0]

    try:
        claims = payloads.parse_simple_signing(candidate.payload)
    except payloads.PayloadError as exc:
        findings.reasons.append(f"malformed payload: {exc}")
    else:
        reason = _digest_reason([claims.digest], digest)
        if reason:
            findings.reasons.append(reason)
        identity = _identity_reason([claims.docker_reference], policy)
        if identity:
            findings.reasons.append(identity)

    if matched_key is not None and signature is not None and not findings.reasons:
        annotation = candidate.annotations.get(REKOR_BUNDLE_ANNOTATION)
        entries = [partial(tlog.parse_cosign_bundle_annotation, annotation)] if annotation else []
        key_der = _key_der(matched_key)
        _check_tlog(
            findings,
            entries,
            policy,
            lambda entry: tlog.check_hashedrekord_body(
                entry,
                signed_data=candidate.payload,
                signature=signature,
                public_key_der=key_der,
            ),
        )
    return _verdict("legacy", location, findings, matched_key)


def _key_der(key: TrustedKey) -> bytes:
    from cosgitops.signing.keys import public_key_der

    return public_key_der(key.public_key)


def _verdict(
    format_: SignatureFormat,
    location: str,
    findings: _Findings,
    key: TrustedKey | None,
    *,
    identity: str | None = None,
    issuer: str | None = None,
) -> SignatureVerdict:
    accepted = not findings.reasons and (key is not None or identity is not None)
    if key is not None:
        signer = key.describe()
    elif identity is not None:
        signer = f"identity {identity} (issuer {issuer})"
    else:
        signer = ""
    return SignatureVerdict(
        format=format_,
        location=location,
        accepted=accepted,
        reasons=tuple(findings.reasons) if not accepted else (),
        signer=signer,
        key_fingerprint=key.fingerprint if key is not None else None,
        identity=identity,
        issuer=issuer,
        notes=tuple(findings.notes),
    )


# ---------------------------------------------------------------- bundle


@dataclass(frozen=True)
class ParsedBundle:
    document: Mapping[str, Any]
    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]
    public_key_hint: str | None
    has_certificate: bool
    tlog_entries: tuple[Mapping[str, Any], ...]


def parse_bundle(data: bytes) -> ParsedBundle:
    """Pull the parts of a Sigstore bundle we check; ValueError when malformed."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("the bundle is not JSON") from exc
    if not isinstance(document, dict):
        raise ValueError("the bundle is not a JSON object")
    media_type = document.get("mediaType")
    if media_type not in BUNDLE_MEDIA_TYPES:
        raise ValueError(f"unsupported bundle media type {media_type!r}")
    material = document.get("verificationMaterial")
    if not isinstance(material, dict):
        raise ValueError("the bundle has no verificationMaterial")
    envelope = document.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        if "messageSignature" in document:
            raise ValueError(
                "the bundle holds a message signature, not a DSSE image signature statement"
            )
        raise ValueError("the bundle has no dsseEnvelope")
    payload = _decode_b64(envelope.get("payload"))
    if payload is None:
        raise ValueError("the DSSE payload is not base64")
    signatures = []
    for item in envelope.get("signatures") or ():
        signature = _decode_b64(item.get("sig")) if isinstance(item, dict) else None
        if signature is not None:
            signatures.append(signature)
    if not signatures:
        raise ValueError("the DSSE envelope carries no signature")
    public_key = material.get("publicKey")
    entries = material.get("tlogEntries") or []
    if not isinstance(entries, list):
        raise ValueError("tlogEntries is not a list")
    return ParsedBundle(
        document=document,
        payload_type=str(envelope.get("payloadType", "")),
        payload=payload,
        signatures=tuple(signatures),
        public_key_hint=str(public_key.get("hint", "")) if isinstance(public_key, dict) else None,
        has_certificate="certificate" in material or "x509CertificateChain" in material,
        tlog_entries=tuple(entry for entry in entries if isinstance(entry, dict)),
    )


def _check_statement(
    findings: _Findings,
    payload_type: str,
    payload: bytes,
    digest: str,
    policy: VerificationPolicy,
    *,
    predicate_type: str = payloads.COSIGN_SIGN_PREDICATE,
) -> None:
    if payload_type != payloads.IN_TOTO_PAYLOAD_TYPE:
        findings.reasons.append(f"DSSE payload type {payload_type!r} is not an in-toto statement")
        return
    try:
        claims = payloads.parse_statement(payload)
    except payloads.PayloadError as exc:
        findings.reasons.append(f"malformed statement: {exc}")
        return
    if claims.predicate_type != predicate_type:
        what = "an image signature" if predicate_type == payloads.COSIGN_SIGN_PREDICATE else "the"
        findings.reasons.append(
            f"predicate type {claims.predicate_type!r} is not {what} ({predicate_type})"
        )
    reason = _digest_reason(claims.subject_digests, digest)
    if reason:
        findings.reasons.append(reason)
        return
    identity = _identity_reason(claims.subject_names.get(digest, ()), policy)
    if identity:
        findings.reasons.append(identity)


def verify_bundle(
    candidate: BundleSignature,
    digest: str,
    policy: VerificationPolicy,
    *,
    trusted_root: Any = None,
    limits: Limits = DEFAULT_LIMITS,
    predicate_type: str = payloads.COSIGN_SIGN_PREDICATE,
) -> SignatureVerdict:
    """A Sigstore bundle: DSSE over an in-toto statement naming ``digest`` with predicate
    ``predicate_type`` (an image signature, ``https://sigstore.dev/cosign/sign/v1``, unless
    told otherwise: attestations are checked the same way), signed by a trusted key
    (public-key material) or by a trusted identity (certificate material, via
    sigstore-python and ``trusted_root``, a sigstore ``TrustedRoot``)."""
    findings = _Findings()
    location = candidate.location
    if len(candidate.bundle) > limits.signature_max_bytes:
        findings.reasons.append(f"the bundle is larger than {limits.signature_max_bytes} bytes")
        return _verdict("bundle", location, findings, None)
    try:
        parsed = parse_bundle(candidate.bundle)
    except ValueError as exc:
        findings.reasons.append(str(exc))
        return _verdict("bundle", location, findings, None)

    if parsed.has_certificate:
        return _verify_keyless(
            candidate, parsed, digest, policy, trusted_root, predicate_type=predicate_type
        )

    matched_key: TrustedKey | None = None
    if not policy.keys:
        findings.reasons.append("signed with a key, but the policy trusts no key")
    else:
        pae = payloads.dsse_pae(parsed.payload_type, parsed.payload)
        found = _find_key(policy.keys, parsed.signatures, pae)
        if found is None:
            tried = ", ".join(key.fingerprint[:16] for key in policy.keys)
            findings.reasons.append(
                f"the DSSE signature does not verify with any trusted key ({tried})"
            )
        else:
            matched_key = found[0]
    _check_statement(
        findings, parsed.payload_type, parsed.payload, digest, policy, predicate_type=predicate_type
    )

    if matched_key is not None and not findings.reasons:
        bundle_entries = [partial(tlog.parse_bundle_tlog_entry, raw) for raw in parsed.tlog_entries]
        key_der = _key_der(matched_key)
        pae = payloads.dsse_pae(parsed.payload_type, parsed.payload)

        def check_body(entry: tlog.TlogEntry) -> None:
            # Rekor v1 logs DSSE as a dsse entry; as a hashedrekord over the PAE otherwise.
            try:
                tlog.check_dsse_body(
                    entry,
                    payload=parsed.payload,
                    signatures=parsed.signatures,
                    public_key_der=key_der,
                )
            except tlog.TlogError as dsse_error:
                for signature in parsed.signatures:
                    try:
                        tlog.check_hashedrekord_body(
                            entry, signed_data=pae, signature=signature, public_key_der=key_der
                        )
                        return
                    except tlog.TlogError:
                        continue
                raise dsse_error

        _check_tlog(findings, bundle_entries, policy, check_body)
    return _verdict("bundle", location, findings, matched_key)


def _verify_keyless(
    candidate: BundleSignature,
    parsed: ParsedBundle,
    digest: str,
    policy: VerificationPolicy,
    trusted_root: Any,
    *,
    predicate_type: str,
) -> SignatureVerdict:
    from cosgitops.signing import keyless

    findings = _Findings()
    if not policy.identities:
        findings.reasons.append("signed keyless, but the policy trusts no keyless identity")
        return _verdict("bundle", candidate.location, findings, None)
    if trusted_root is None:
        findings.reasons.append("no Sigstore trusted root to check a keyless signature against")
        return _verdict("bundle", candidate.location, findings, None)
    try:
        outcome = keyless.verify_keyless_bundle(candidate.bundle, policy.identities, trusted_root)
    except keyless.KeylessError as exc:
        findings.reasons.append(str(exc))
        return _verdict("bundle", candidate.location, findings, None)
    _check_statement(
        findings,
        outcome.payload_type,
        outcome.payload,
        digest,
        policy,
        predicate_type=predicate_type,
    )
    findings.notes.append("certificate chain, SCT and transparency log verified by sigstore")
    return _verdict(
        "bundle",
        candidate.location,
        findings,
        None,
        identity=outcome.identity,
        issuer=outcome.issuer,
    )


# ---------------------------------------------------------------- all together


def evaluate(
    reference: str,
    digest: str,
    candidates: Sequence[Candidate],
    policy: VerificationPolicy,
    *,
    trusted_root: Any = None,
    limits: Limits = DEFAULT_LIMITS,
) -> VerificationResult:
    """Judge every candidate; the result says which (if any) matched and why others not."""
    verdicts: list[SignatureVerdict] = []
    for candidate in candidates:
        if isinstance(candidate, UnreadableSignature):
            verdicts.append(
                SignatureVerdict(
                    format=candidate.format,
                    location=candidate.location,
                    accepted=False,
                    reasons=(candidate.reason,),
                )
            )
        elif isinstance(candidate, LegacySignature):
            verdicts.append(verify_legacy(candidate, digest, policy, limits=limits))
        else:
            verdicts.append(
                verify_bundle(candidate, digest, policy, trusted_root=trusted_root, limits=limits)
            )
    return VerificationResult(
        reference=reference, digest=digest, verdicts=tuple(verdicts), policy=policy.describe()
    )
