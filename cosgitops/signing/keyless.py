"""Keyless (Fulcio certificate) signatures through sigstore-python.

Verification is offline once the trusted root is known: sigstore-python checks the
certificate chain against the trusted root's Fulcio CAs at the time the transparency
log recorded the entry, the embedded SCT, the log entry (SET or inclusion proof and
checkpoint), the DSSE signature, and the identity policy.

Signing asks Fulcio for a short-lived certificate for an OIDC identity token (ambient
GitHub Actions credentials, or a token given explicitly), signs with an ephemeral key
and logs the signature in Rekor; the services come from a Sigstore *client trust
config* (trusted root + signing config), Sigstore's public-good one by default.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosgitops.errors import SigningError
from cosgitops.model import Identity

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

OIDC_ISSUER_V1_OID = "1.3.6.1.4.1.57264.1.1"
OIDC_ISSUER_V2_OID = "1.3.6.1.4.1.57264.1.8"
SAN_OTHERNAME_OID = "1.3.6.1.4.1.57264.1.7"


class KeylessError(ValueError):
    """A keyless signature did not verify; the message says why."""


@dataclass(frozen=True)
class KeylessOutcome:
    identity: str
    issuer: str
    payload_type: str
    payload: bytes


def certificate_identities(cert: Certificate) -> list[str]:
    """The SANs Fulcio writes: email, URI, or its own otherName."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    values: list[str] = list(san.get_values_for_type(x509.RFC822Name))
    values += san.get_values_for_type(x509.UniformResourceIdentifier)
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id.dotted_string == SAN_OTHERNAME_OID:
            values.append(_der_utf8(other.value) or other.value.decode("utf-8", "replace"))
    return values


def _der_utf8(data: bytes) -> str | None:
    """Decode a DER UTF8String (tag 0x0C, short or long length)."""
    if len(data) < 2 or data[0] != 0x0C:
        return None
    length = data[1]
    offset = 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[2 : 2 + count], "big")
        offset = 2 + count
    return data[offset : offset + length].decode("utf-8", "replace")


def certificate_issuer(cert: Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded (v2 extension, else the deprecated v1)."""
    from cryptography import x509

    for oid, der in ((OIDC_ISSUER_V2_OID, True), (OIDC_ISSUER_V1_OID, False)):
        try:
            extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
        except x509.ExtensionNotFound:
            continue
        value = extension.value
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        text = _der_utf8(raw) if der else raw.decode("utf-8", "replace")
        if text:
            return text
    return None


def identity_matches(identity: Identity, sans: Sequence[str], issuer: str | None) -> str | None:
    """None when the certificate satisfies ``identity``, else the reason it does not.
    Regexps search like cosign's (Go ``MatchString``): anchor them with ``^...$``."""
    if issuer is None:
        return "the certificate names no OIDC issuer"
    if identity.issuer is not None and issuer != identity.issuer:
        return f"certificate issuer {issuer!r} is not {identity.issuer!r}"
    if identity.issuer_regexp is not None and not re.search(identity.issuer_regexp, issuer):
        return f"certificate issuer {issuer!r} does not match /{identity.issuer_regexp}/"
    if identity.identity is not None and identity.identity not in sans:
        return f"certificate identity {sorted(sans)} is not {identity.identity!r}"
    if identity.identity_regexp is not None and not any(
        re.search(identity.identity_regexp, san) for san in sans
    ):
        return f"certificate identity {sorted(sans)} does not match /{identity.identity_regexp}/"
    return None


class _IdentityPolicy:
    """A sigstore-python verification policy (its ``verify(cert)`` protocol) for one
    trusted identity. It remembers why it refused, so that when sigstore's ``AnyOf`` over
    all of them fails, the message can say what each identity expected."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.refusal: str | None = None

    def verify(self, cert: Certificate) -> None:
        from sigstore.errors import VerificationError as SigstoreVerificationError

        self.refusal = identity_matches(
            self.identity, certificate_identities(cert), certificate_issuer(cert)
        )
        if self.refusal is not None:
            raise SigstoreVerificationError(self.refusal)


def load_trusted_root(data: bytes) -> Any:
    """A sigstore-python ``TrustedRoot`` from its JSON; :class:`KeylessError` if malformed.
    (``TrustedRoot.from_file`` is sigstore's public constructor, hence the file.)"""
    from sigstore.models import TrustedRoot

    with tempfile.TemporaryDirectory(prefix="cosgitops-trusted-root-") as folder:
        path = Path(folder) / "trusted_root.json"
        path.write_bytes(data)
        try:
            return TrustedRoot.from_file(str(path))
        except Exception as exc:
            raise KeylessError(f"the Sigstore trusted root is malformed: {_message(exc)}") from exc


def trusted_root_of_trust_config(data: bytes) -> bytes:
    """The ``trustedRoot`` of a Sigstore client trust config JSON, as trusted root JSON."""
    try:
        document = json.loads(data)
        trusted_root = document["trustedRoot"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise SigningError(
            f"the Sigstore client trust config has no trustedRoot: {exc}",
            hint="pass a valid trust config (trusted root + signing config) JSON",
        ) from exc
    return json.dumps(trusted_root).encode("utf-8")


def public_good_trusted_root() -> Any:
    """Sigstore public-good trusted root (a ``TrustedRoot``), refreshed through its TUF
    repository and cached by sigstore-python."""
    from sigstore.models import ClientTrustConfig

    try:
        return ClientTrustConfig.production().trusted_root
    except Exception as exc:
        from cosgitops.errors import DownloadError

        raise DownloadError(
            f"could not fetch Sigstore's trusted root: {_message(exc)}",
            hint="pass --trusted-root FILE (a trusted_root.json) to verify offline",
        ) from exc


def verify_keyless_bundle(
    bundle_json: bytes, identities: Sequence[Identity], trusted_root: Any
) -> KeylessOutcome:
    """Verify a certificate-carrying DSSE bundle against ``trusted_root`` (a sigstore
    ``TrustedRoot``), once, under one policy that accepts any of ``identities``
    (sigstore's ``AnyOf``); raise :class:`KeylessError` with sigstore's whole message
    (and, when no identity matched, what each one expected)."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore.verify.policy import AnyOf

    try:
        bundle = Bundle.from_json(bundle_json)
    except Exception as exc:
        raise KeylessError(f"not a valid Sigstore bundle: {_message(exc)}") from exc
    if not identities:
        raise KeylessError("signed keyless, but the policy trusts no keyless identity")
    try:
        verifier = Verifier(trusted_root=trusted_root)
    except SigstoreError as exc:
        raise KeylessError(f"the trusted root is unusable: {_message(exc)}") from exc
    children = [_IdentityPolicy(identity) for identity in identities]
    try:
        payload_type, payload = verifier.verify_dsse(bundle, AnyOf(list(children)))
    except Exception as exc:  # malformed input surfaces as anything, not only sigstore's
        message = _message(exc)
        if not isinstance(exc, SigstoreError):
            message = f"verification failed: {message}"
        refusals = [child.refusal for child in children if child.refusal is not None]
        if len(refusals) == len(children):  # the policy ran, and every identity refused
            message += ": " + "; ".join(dict.fromkeys(refusals))
        raise KeylessError(message) from exc
    cert = bundle.signing_certificate
    sans = certificate_identities(cert)
    return KeylessOutcome(
        identity=sans[0] if sans else "",
        issuer=certificate_issuer(cert) or "",
        payload_type=payload_type,
        payload=payload,
    )


def _message(exc: BaseException) -> str:
    """All of an exception's message on one line (sigstore and pydantic say where the
    problem is on the lines after the first)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


# ---------------------------------------------------------------- signing


def identity_token(explicit: str | None = None) -> Any:
    """An OIDC identity token: ``explicit``, else ambient CI credentials (GitHub Actions
    with ``id-token: write``). Raises :class:`SigningError` when there is none."""
    from sigstore.oidc import IdentityError, IdentityToken, detect_credential

    raw = explicit
    if raw is None:
        try:
            raw = detect_credential()
        except IdentityError as exc:
            raise SigningError(
                f"could not get ambient OIDC credentials: {exc}",
                hint="in GitHub Actions grant `permissions: id-token: write`",
            ) from exc
    if not raw:
        raise SigningError(
            "keyless signing needs an OIDC identity token and none was found",
            hint="run in GitHub Actions with `permissions: id-token: write`, or pass "
            "--identity-token",
        )
    try:
        return IdentityToken(raw)
    except IdentityError as exc:
        raise SigningError(f"the OIDC identity token is unusable: {_message(exc)}") from exc


def load_client_trust_config(data: bytes | None) -> Any:
    """A sigstore ``ClientTrustConfig`` from JSON, or Sigstore's public-good one."""
    from sigstore.models import ClientTrustConfig

    try:
        if data is None:
            return ClientTrustConfig.production()
        return ClientTrustConfig.from_json(data.decode("utf-8"))
    except Exception as exc:
        raise SigningError(
            f"could not load the Sigstore client trust config: {_message(exc)}",
            hint="pass a valid trust config (trusted root + signing config) JSON",
        ) from exc
