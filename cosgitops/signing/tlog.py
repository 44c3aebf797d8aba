"""Rekor signed entry timestamps (SETs), checked offline with the log's public key.

A SET is Rekor's signature over the RFC 8785 canonical JSON of
``{"body", "integratedTime", "logID", "logIndex"}``: proof that the entry (whose
``body`` names the signature, the signed data's hash and the signer's key) was
accepted by the log at ``integratedTime``. Pure: no network.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cosgitops.jsonbytes import rfc8785_json

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


class TlogError(ValueError):
    """A transparency-log entry is malformed, unsigned, or about something else."""


@dataclass(frozen=True)
class TlogEntry:
    body: str  # base64 of the canonicalized entry
    integrated_time: int
    log_index: int
    log_id: str  # hex sha256 of the log's DER public key
    signed_entry_timestamp: bytes

    def describe(self) -> str:
        return f"Rekor entry {self.log_index} (log {self.log_id[:12]}…)"


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise TlogError(f"{what} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TlogError(f"{what} is not base64") from exc


def _int(value: Any, what: str) -> int:
    # protojson writes 64-bit integers as strings; cosign's legacy annotation as numbers
    try:
        if isinstance(value, bool):
            raise TypeError
        return int(value)
    except (TypeError, ValueError) as exc:
        raise TlogError(f"{what} is not an integer") from exc


def parse_cosign_bundle_annotation(text: str) -> TlogEntry:
    """The ``dev.sigstore.cosign/bundle`` annotation of a legacy signature layer."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise TlogError("the Rekor bundle annotation is not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("Payload"), dict):
        raise TlogError("the Rekor bundle annotation has no Payload object")
    payload = document["Payload"]
    log_id = payload.get("logID")
    if not isinstance(log_id, str):
        raise TlogError("the Rekor bundle annotation has no logID")
    body = payload.get("body")
    if not isinstance(body, str):
        raise TlogError("the Rekor bundle annotation has no body")
    return TlogEntry(
        body=body,
        integrated_time=_int(payload.get("integratedTime"), "integratedTime"),
        log_index=_int(payload.get("logIndex"), "logIndex"),
        log_id=log_id,
        signed_entry_timestamp=_b64(document.get("SignedEntryTimestamp"), "SignedEntryTimestamp"),
    )


def parse_bundle_tlog_entry(entry: Mapping[str, Any]) -> TlogEntry:
    """One ``verificationMaterial.tlogEntries[]`` item of a Sigstore bundle."""
    promise = entry.get("inclusionPromise")
    if not isinstance(promise, dict):
        raise TlogError("the transparency log entry has no inclusion promise (SET)")
    log_id = entry.get("logId")
    if not isinstance(log_id, dict):
        raise TlogError("the transparency log entry has no logId")
    body = entry.get("canonicalizedBody")
    if not isinstance(body, str):
        raise TlogError("the transparency log entry has no canonicalizedBody")
    return TlogEntry(
        body=body,
        integrated_time=_int(entry.get("integratedTime"), "integratedTime"),
        log_index=_int(entry.get("logIndex"), "logIndex"),
        log_id=_b64(log_id.get("keyId"), "logId.keyId").hex(),
        signed_entry_timestamp=_b64(promise.get("signedEntryTimestamp"), "signedEntryTimestamp"),
    )


def log_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    from cosgitops.signing.keys import public_key_der

    return hashlib.sha256(public_key_der(public_key)).hexdigest()


def verify_set(entry: TlogEntry, rekor_keys: Sequence[ec.EllipticCurvePublicKey]) -> None:
    """Check the SET with the key whose log ID the entry names; raise :class:`TlogError`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    candidates = [key for key in rekor_keys if log_id_of(key) == entry.log_id]
    if not candidates:
        raise TlogError(
            f"the entry was logged by an unknown transparency log ({entry.log_id[:16]}…)"
        )
    try:
        message = rfc8785_json(
            {
                "body": entry.body,
                "integratedTime": entry.integrated_time,
                "logID": entry.log_id,
                "logIndex": entry.log_index,
            }
        )
    except ValueError as exc:
        raise TlogError(str(exc)) from exc
    for key in candidates:
        try:
            key.verify(entry.signed_entry_timestamp, message, ec.ECDSA(hashes.SHA256()))
            return
        except InvalidSignature:
            continue
    raise TlogError("the signed entry timestamp does not verify with the log's key")


def _entry_body(entry: TlogEntry) -> dict[str, Any]:
    try:
        body = json.loads(base64.b64decode(entry.body, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise TlogError("the log entry body is not base64 JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        raise TlogError("the log entry body has no spec")
    return body


def _same_public_key(pem_b64: Any, expected_der: bytes) -> bool:
    from cosgitops.errors import KeyFileError
    from cosgitops.signing.keys import public_key_der, public_key_from_pem

    try:
        found = public_key_from_pem(_b64(pem_b64, "publicKey"), key_name="log entry key")
    except (KeyFileError, TlogError):
        return False
    return public_key_der(found) == expected_der


def check_hashedrekord_body(
    entry: TlogEntry, *, signed_data: bytes, signature: bytes, public_key_der: bytes
) -> None:
    """The entry must record this signature, this data's hash and this signer's key."""
    body = _entry_body(entry)
    if body.get("kind") != "hashedrekord":
        raise TlogError(f"the log entry is a {body.get('kind')!r}, not a hashedrekord")
    spec = body["spec"]
    hash_value = ((spec.get("data") or {}).get("hash") or {}).get("value")
    if hash_value != hashlib.sha256(signed_data).hexdigest():
        raise TlogError("the log entry records the hash of different data")
    recorded = (spec.get("signature") or {}).get("content")
    if _b64(recorded, "signature.content") != signature:
        raise TlogError("the log entry records a different signature")
    pem = ((spec.get("signature") or {}).get("publicKey") or {}).get("content")
    if not _same_public_key(pem, public_key_der):
        raise TlogError("the log entry records a different public key")


def check_dsse_body(
    entry: TlogEntry, *, payload: bytes, signatures: Sequence[bytes], public_key_der: bytes
) -> None:
    """A ``dsse`` entry must record this envelope's payload hash and one of its signatures
    made by this signer's key."""
    body = _entry_body(entry)
    if body.get("kind") != "dsse":
        raise TlogError(f"the log entry is a {body.get('kind')!r}, not a dsse entry")
    spec = body["spec"]
    payload_hash = (spec.get("payloadHash") or {}).get("value")
    if payload_hash != hashlib.sha256(payload).hexdigest():
        raise TlogError("the log entry records the hash of a different payload")
    for recorded in spec.get("signatures") or ():
        if not isinstance(recorded, dict):
            continue
        try:
            signature = _b64(recorded.get("signature"), "signature")
        except TlogError:
            continue
        if signature in signatures and _same_public_key(recorded.get("verifier"), public_key_der):
            return
    raise TlogError("the log entry records no signature of this envelope by this key")
