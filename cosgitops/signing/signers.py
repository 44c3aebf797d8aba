"""Who signs: a cosign key (:class:`KeySigner`) or a keyless identity (:class:`KeylessSigner`).

A signer turns the documents of :mod:`cosgitops.signing.payloads` into what cosign
stores: a Sigstore bundle (both kinds) and the annotations of a legacy simple-signing
layer (keys only). It also knows the policy that accepts its own signatures, which is
how signing twice is recognised and skipped.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cosgitops.errors import CosgitopsError, DownloadError, SigningError
from cosgitops.model import Identity
from cosgitops.oci import media
from cosgitops.signing import payloads
from cosgitops.signing.policy import TrustedKey, VerificationPolicy

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


class ImageSigner(Protocol):
    @property
    def description(self) -> str:
        """Who signs, for output: ``key <fingerprint>`` or ``identity <SAN>``."""
        ...

    @property
    def signs_legacy(self) -> bool:
        """Whether this signer also writes the legacy ``.sig`` format."""
        ...

    def sign_statement(self, statement: bytes) -> bytes:
        """A Sigstore bundle (JSON bytes) holding a DSSE envelope over ``statement``."""
        ...

    def sign_payload(self, payload: bytes) -> dict[str, str]:
        """The annotations of a legacy layer whose blob is ``payload``."""
        ...

    def own_policy(self) -> VerificationPolicy:
        """A policy that accepts exactly this signer's signatures."""
        ...


def public_key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """cosign's bundle key hint: base64 of sha256 of the DER SubjectPublicKeyInfo."""
    from cosgitops.signing.keys import public_key_der

    return base64.b64encode(hashlib.sha256(public_key_der(public_key)).digest()).decode("ascii")


@dataclass(frozen=True)
class KeySigner:
    private_key: ec.EllipticCurvePrivateKey
    source: str = ""

    @property
    def trusted_key(self) -> TrustedKey:
        return TrustedKey(self.private_key.public_key(), self.source)

    @property
    def fingerprint(self) -> str:
        return self.trusted_key.fingerprint

    @property
    def description(self) -> str:
        return self.trusted_key.describe()

    @property
    def signs_legacy(self) -> bool:
        return True

    def _sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    def sign_statement(self, statement: bytes) -> bytes:
        signature = self._sign(payloads.dsse_pae(payloads.IN_TOTO_PAYLOAD_TYPE, statement))
        bundle = {
            "mediaType": media.SIGSTORE_BUNDLE_V03,
            "verificationMaterial": {
                "publicKey": {"hint": public_key_hint(self.private_key.public_key())},
                # not logged in Rekor (no network needed); the field is required by
                # sigstore's bundle models, so it is written even when empty
                "tlogEntries": [],
            },
            "dsseEnvelope": {
                "payload": base64.b64encode(statement).decode("ascii"),
                "payloadType": payloads.IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(signature).decode("ascii")}],
            },
        }
        return json.dumps(bundle, separators=(",", ":")).encode("utf-8")

    def sign_payload(self, payload: bytes) -> dict[str, str]:
        from cosgitops.signing.verify import SIGNATURE_ANNOTATION

        return {SIGNATURE_ANNOTATION: base64.b64encode(self._sign(payload)).decode("ascii")}

    def own_policy(self) -> VerificationPolicy:
        return VerificationPolicy(keys=(self.trusted_key,))


class KeylessSigner:
    """Signs through sigstore-python: Fulcio certificate for the OIDC token, Rekor entry.

    ``trust_config`` is a sigstore ``ClientTrustConfig`` (trusted root + signing config);
    ``identity_token`` a sigstore ``IdentityToken``. Use :func:`keyless_signer`.
    """

    def __init__(
        self, trust_config: Any, identity_token: Any, *, trusted_root: bytes | None = None
    ) -> None:
        from sigstore.sign import SigningContext

        self._trust_config = trust_config
        self._token = identity_token
        # The trust config's trusted root JSON (None: Sigstore's public-good instance),
        # so that own_policy() verifies against the instance this signer uses.
        self._trusted_root = trusted_root
        try:
            self._context = SigningContext.from_trust_config(trust_config)
        except Exception as exc:
            raise SigningError(f"the Sigstore signing config is unusable: {exc}") from exc
        self._signer: Any = None

    @property
    def identity(self) -> str:
        return str(self._token.identity)

    @property
    def issuer(self) -> str:
        return str(self._token.issuer)

    @property
    def description(self) -> str:
        if self._signer is not None:  # once certified, say what verifiers will see
            identity, issuer = self.certificate_identity()
            return f"identity {identity} (issuer {issuer})"
        return f"identity {self.identity} (issuer {self.issuer})"

    @property
    def signs_legacy(self) -> bool:
        return False

    def _sigstore_signer(self) -> Any:
        if self._signer is None:
            from sigstore.sign import Signer

            try:
                self._signer = Signer(self._token, self._context, cache=True)
            except Exception as exc:
                raise _sigstore_failure("could not get a signing certificate", exc) from exc
        return self._signer

    def sign_statement(self, statement: bytes) -> bytes:
        from sigstore import dsse
        from sigstore.errors import Error as SigstoreError

        signer = self._sigstore_signer()
        try:
            envelope_statement = dsse.Statement(statement)
        except SigstoreError as exc:
            raise SigningError(f"sigstore refused the statement: {exc}") from exc
        try:
            bundle = signer.sign_dsse(envelope_statement)
        except Exception as exc:
            raise _sigstore_failure("keyless signing failed", exc) from exc
        return str(bundle.to_json()).encode("utf-8")

    def sign_payload(self, payload: bytes) -> dict[str, str]:
        raise SigningError("keyless signatures are written in the Sigstore bundle format only")

    def certificate_identity(self) -> tuple[str, str]:
        """(SAN, issuer) of the signing certificate, as verifiers will see them (for a
        GitHub Actions token the SAN is the workflow URI, not the token's subject)."""
        from cosgitops.signing import keyless

        cert = self._sigstore_signer()._signing_cert()
        sans = keyless.certificate_identities(cert)
        issuer = keyless.certificate_issuer(cert)
        if not sans or issuer is None:
            raise SigningError("the signing certificate names no identity or no issuer")
        return sans[0], issuer

    def own_policy(self) -> VerificationPolicy:
        identity, issuer = self.certificate_identity()
        return VerificationPolicy(
            identities=(Identity(identity=identity, issuer=issuer),),
            trusted_root=self._trusted_root,
        )


def _sigstore_failure(what: str, exc: BaseException) -> CosgitopsError:
    """A transport failure (retry may help) or a refusal, with the server's words."""
    import requests

    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return DownloadError(f"{what}: {exc}", hint="check the Sigstore service URLs")
    detail = str(exc)
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if response is not None:
        detail = f"HTTP {response.status_code}: {response.text.strip()[:300]}"
    return SigningError(
        f"{what}: {type(exc).__name__}{': ' + detail if detail else ''}",
        hint="check the identity token (issuer, audience 'sigstore', expiry) and the "
        "Sigstore instance configuration",
    )


def key_signer(source: str, *, password: bytes | None = None, base_dir: Any = None) -> KeySigner:
    """A signer for the cosign private key at ``source`` (path or ``env://VAR``)."""
    from cosgitops.signing.keys import load_private_key

    return KeySigner(load_private_key(source, password=password, base_dir=base_dir), source)


def keyless_signer(
    *, identity_token: str | None = None, trust_config: bytes | None = None
) -> KeylessSigner:
    """A keyless signer: the token given, else ambient CI credentials; the Sigstore
    instance from ``trust_config`` JSON, else Sigstore's public-good instance."""
    from cosgitops.signing import keyless

    return KeylessSigner(
        keyless.load_client_trust_config(trust_config),
        keyless.identity_token(identity_token),
        trusted_root=(
            keyless.trusted_root_of_trust_config(trust_config) if trust_config is not None else None
        ),
    )
