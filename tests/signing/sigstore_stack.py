"""A small Sigstore instance of our own, served on 127.0.0.1, so keyless tests run the real
sigstore-python signing and verifying code offline.

One HTTP server plays every part:

* an OIDC provider: ``GET /github/token`` hands out GitHub-Actions-shaped ID tokens to
  ``id``'s ambient-credential detector (``ACTIONS_ID_TOKEN_REQUEST_URL``), and
  :meth:`SigstoreStack.token` mints tokens for any issuer/subject we trust;
* a Fulcio-like CA: ``POST /api/v2/signingCert`` checks the token's signature against
  the issuers it trusts and the CSR's proof of possession, then issues a short-lived
  code-signing certificate (SAN = the token's email, or GitHub's workflow URI) with the
  Fulcio issuer extensions and an embedded SCT from our CT log key;
* a Rekor-like log (API v1): ``POST /api/v1/log/entries`` canonicalizes hashedrekord
  and dsse entries, appends them to an RFC 6962 Merkle tree and answers with the
  inclusion proof, a signed checkpoint and a signed entry timestamp.

:attr:`SigstoreStack.trusted_root` and :attr:`SigstoreStack.trust_config` describe the
instance in Sigstore's own formats (trusted root, signing config v0.2).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from cosgitops.jsonbytes import rfc8785_json

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
SCT_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ISSUER_V1_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
VALID_FROM = "2020-01-01T00:00:00Z"


def _der_spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(_der_spki(key)).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _der_octet_string(data: bytes) -> bytes:
    return b"\x04" + _der_length(len(data)) + data


def _der_utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"\x0c" + _der_length(len(data)) + data


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _u16(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


# ---------------------------------------------------------------- Merkle tree (RFC 6962)


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    k = 1
    while k * 2 < size:
        k *= 2
    return k


def _root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node_hash(_root(leaves[:k]), _root(leaves[k:]))


def _inclusion_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """Audit path for leaf ``index``, lowest level first."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_inclusion_path(index, leaves[:k]), _root(leaves[k:])]
    return [*_inclusion_path(index - k, leaves[k:]), _root(leaves[:k])]


# ---------------------------------------------------------------- the instance


@dataclass
class Issuer:
    """An OIDC issuer the CA trusts: its URL and the key its tokens are signed with."""

    url: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )


class SigstoreStack:
    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.issuers: dict[str, Issuer] = {}
        self.github = self.add_issuer(GITHUB_ISSUER)
        self.leaves: list[bytes] = []
        self.entries: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        now = dt.datetime.now(dt.UTC)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cosgitops-test"),
                x509.NameAttribute(NameOID.COMMON_NAME, "cosgitops test fulcio"),
            ]
        )
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> SigstoreStack:
        stack = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stack.requests.append(f"GET {self.path}")
                if self.path.startswith("/github/token"):
                    if self.headers.get("Authorization") != "bearer request-token":
                        self._reply(401, {"message": "bad request token"})
                        return
                    self._reply(200, {"value": stack.github_token()})
                    return
                self._reply(404, {"message": "not found"})

            def do_POST(self) -> None:
                stack.requests.append(f"POST {self.path}")
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                try:
                    if self.path == "/api/v2/signingCert":
                        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                        self._reply(200, stack.issue_certificate(token, body))
                    elif self.path == "/api/v1/log/entries":
                        self._reply(201, stack.log_entry(body))
                    else:
                        self._reply(404, {"message": "not found"})
                except PermissionError as exc:
                    self._reply(401, {"code": 401, "message": str(exc)})
                except ValueError as exc:
                    self._reply(400, {"code": 400, "message": str(exc)})

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- OIDC ------------------------------------------------------------------------

    def add_issuer(self, url: str) -> Issuer:
        issuer = Issuer(url)
        self.issuers[url] = issuer
        return issuer

    def token(
        self,
        issuer: Issuer,
        *,
        subject: str,
        email: str | None = None,
        lifetime: int = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": issuer.url,
            "sub": subject,
            "aud": "sigstore",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            **claims,
        }
        if email is not None:
            payload["email"] = email
            payload["email_verified"] = True
        return jwt.encode(payload, issuer.key, algorithm="ES256")

    def github_token(
        self, workflow_ref: str = "acme/fleet/.github/workflows/release.yaml@refs/heads/main"
    ) -> str:
        return self.token(
            self.github,
            subject="repo:acme/fleet:ref:refs/heads/main",
            job_workflow_ref=workflow_ref,
            repository="acme/fleet",
        )

    @staticmethod
    def github_identity(
        workflow_ref: str = "acme/fleet/.github/workflows/release.yaml@refs/heads/main",
    ) -> str:
        return f"https://github.com/{workflow_ref}"

    # -- Fulcio ----------------------------------------------------------------------

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise PermissionError(f"malformed token: {exc}") from exc
        issuer = self.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise PermissionError(f"untrusted issuer {unverified.get('iss')!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, issuer.key.public_key(), algorithms=["ES256"], audience="sigstore"
            )
        except jwt.PyJWTError as exc:
            raise PermissionError(f"invalid token: {exc}") from exc
        return claims

    def issue_certificate(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        claims = self._claims(token)
        csr = x509.load_pem_x509_csr(base64.b64decode(body["certificateSigningRequest"]))
        if not csr.is_signature_valid:
            raise ValueError("the CSR's proof of possession does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ValueError("only ECDSA keys")
        if claims["iss"] == GITHUB_ISSUER:
            san: x509.GeneralName = x509.UniformResourceIdentifier(
                f"https://github.com/{claims['job_workflow_ref']}"
            )
        elif "email" in claims:
            san = x509.RFC822Name(str(claims["email"]))
        else:
            san = x509.UniformResourceIdentifier(str(claims["sub"]))
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=30))
            .not_valid_after(now + dt.timedelta(minutes=10))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                False,
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(ISSUER_V1_OID, str(claims["iss"]).encode()), False
            )
            .add_extension(
                x509.UnrecognizedExtension(ISSUER_V2_OID, _der_utf8(str(claims["iss"]))), False
            )
        )
        # The SCT signs the certificate without its SCT extension (the "precertificate").
        precert = builder.sign(self.ca_key, hashes.SHA256())
        sct = self._sct(precert.tbs_certificate_bytes, int(now.timestamp() * 1000))
        cert = builder.add_extension(
            x509.UnrecognizedExtension(SCT_OID, _der_octet_string(_u16(_u16(sct)))), False
        ).sign(self.ca_key, hashes.SHA256())
        assert cert.tbs_precertificate_bytes == precert.tbs_certificate_bytes
        chain = [c.public_bytes(serialization.Encoding.PEM).decode() for c in (cert, self.ca_cert)]
        return {"signedCertificateEmbeddedSct": {"chain": {"certificates": chain}}}

    def _sct(self, tbs: bytes, timestamp_ms: int) -> bytes:
        issuer_key_hash = _key_id(self.ca_key.public_key())
        signed = (
            b"\x00\x00"  # v1, certificate_timestamp
            + timestamp_ms.to_bytes(8, "big")
            + b"\x00\x01"  # precert_entry
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + b"\x00\x00"  # no extensions
        )
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return (
            b"\x00"
            + _key_id(self.ct_key.public_key())
            + timestamp_ms.to_bytes(8, "big")
            + b"\x00\x00"
            + b"\x04\x03"  # sha256, ecdsa
            + _u16(signature)
        )

    # -- Rekor -----------------------------------------------------------------------

    @staticmethod
    def _canonical_body(proposed: dict[str, Any]) -> dict[str, Any]:
        kind = proposed.get("kind")
        spec = proposed.get("spec") or {}
        if kind == "hashedrekord":
            return {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": spec}
        if kind == "dsse":
            content = spec["proposedContent"]
            envelope_text = content["envelope"]
            envelope = json.loads(envelope_text)
            payload = base64.b64decode(envelope["payload"])
            return {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(envelope_text.encode()).hexdigest(),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(payload).hexdigest(),
                    },
                    "signatures": [
                        {"signature": signature["sig"], "verifier": content["verifiers"][0]}
                        for signature in envelope["signatures"]
                    ],
                },
            }
        raise ValueError(f"unsupported entry kind {kind!r}")

    @property
    def log_id(self) -> str:
        return _key_id(self.rekor_key.public_key()).hex()

    def log_entry(self, proposed: dict[str, Any]) -> dict[str, Any]:
        body = rfc8785_json(self._canonical_body(proposed))
        with self._lock:
            index = len(self.leaves)
            self.leaves.append(_leaf_hash(body))
            size = len(self.leaves)
            root = _root(self.leaves)
            path = _inclusion_path(index, self.leaves)
        integrated = int(time.time())
        body_b64 = _b64(body)
        promise = rfc8785_json(
            {
                "body": body_b64,
                "integratedTime": integrated,
                "logID": self.log_id,
                "logIndex": index,
            }
        )
        set_signature = self.rekor_key.sign(promise, ec.ECDSA(hashes.SHA256()))
        key_name = "cosgitops-test-rekor"
        origin = f"{key_name} - 1"
        note = f"{origin}\n{size}\n{_b64(root)}\n"
        note_signature = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = (
            note
            + "\n"
            + f"\u2014 {key_name} {_b64(bytes.fromhex(self.log_id)[:4] + note_signature)}\n"
        )
        entry = {
            "body": body_b64,
            "integratedTime": integrated,
            "logID": self.log_id,
            "logIndex": index,
            "verification": {
                "inclusionProof": {
                    "checkpoint": checkpoint,
                    "hashes": [h.hex() for h in path],
                    "logIndex": index,
                    "rootHash": root.hex(),
                    "treeSize": size,
                },
                "signedEntryTimestamp": _b64(set_signature),
            },
        }
        self.entries.append(entry)
        return {uuid.uuid4().hex: entry}

    # -- Sigstore's descriptions of this instance -------------------------------------

    def _log_instance(self, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
        return {
            "baseUrl": self.url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": _b64(_der_spki(key.public_key())),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": VALID_FROM},
            },
            "logId": {"keyId": _b64(_key_id(key.public_key()))},
        }

    @property
    def trusted_root(self) -> dict[str, Any]:
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [self._log_instance(self.rekor_key)],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "cosgitops-test", "commonName": "fulcio"},
                    "uri": self.url,
                    "certChain": {
                        "certificates": [
                            {
                                "rawBytes": _b64(
                                    self.ca_cert.public_bytes(serialization.Encoding.DER)
                                )
                            }
                        ]
                    },
                    "validFor": {"start": VALID_FROM},
                }
            ],
            "ctlogs": [self._log_instance(self.ct_key)],
            "timestampAuthorities": [],
        }

    @property
    def trusted_root_json(self) -> bytes:
        return json.dumps(self.trusted_root).encode()

    @property
    def signing_config(self) -> dict[str, Any]:
        def service(path: str = "") -> dict[str, Any]:
            return {
                "url": self.url + path,
                "majorApiVersion": 1,
                "validFor": {"start": VALID_FROM},
                "operator": "cosgitops-test",
            }

        return {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [service()],
            "oidcUrls": [service("/oidc")],
            "rekorTlogUrls": [service()],
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaUrls": [],
            "tsaConfig": {"selector": "ANY"},
        }

    @property
    def trust_config_json(self) -> bytes:
        return json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
                "trustedRoot": self.trusted_root,
                "signingConfig": self.signing_config,
            }
        ).encode()
