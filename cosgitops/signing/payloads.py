"""The documents cosign signs, byte-for-byte as cosign writes them, and their parsers.

* the legacy *simple signing* payload (``critical`` / ``optional``), signed directly;
* the in-toto v1 statement with predicate type ``https://sigstore.dev/cosign/sign/v1``,
  wrapped in a DSSE envelope inside a Sigstore bundle.

Everything here is pure: bytes in, values or :class:`PayloadError` out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cosgitops.oci.digest import DIGEST_RE

SIMPLE_SIGNING_TYPE = "cosign container image signature"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1"
IN_TOTO_STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"

# Go's encoding/json escapes these inside strings (HTML safety); cosign's bytes carry them.
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


class PayloadError(ValueError):
    """A signed document is malformed or does not say what it must."""


def go_json(value: Any) -> bytes:
    """Compact JSON as Go's ``json.Marshal`` writes it (keys in the order given)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escape in _GO_ESCAPES.items():
        text = text.replace(char, escape)
    return text.encode("utf-8")


def docker_reference(repository_name: str) -> str:
    """The ``docker-reference`` cosign writes for a repository (go-containerregistry names
    Docker Hub ``index.docker.io``)."""
    if repository_name.startswith("docker.io/"):
        return "index.docker.io/" + repository_name[len("docker.io/") :]
    return repository_name


# ---------------------------------------------------------------- simple signing


def simple_signing_payload(
    reference: str, digest: str, optional: Mapping[str, str] | None = None
) -> bytes:
    """The legacy payload; ``"optional":null`` when there are no annotations, as cosign."""
    document = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": SIMPLE_SIGNING_TYPE,
        },
        "optional": dict(sorted(optional.items())) if optional else None,
    }
    return go_json(document)


@dataclass(frozen=True)
class SimpleSigningClaims:
    docker_reference: str
    digest: str
    optional: Mapping[str, Any]


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} is not a JSON object")
    return value


def parse_simple_signing(payload: bytes) -> SimpleSigningClaims:
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("the simple-signing payload is not JSON") from exc
    critical = _object(_object(document, "payload").get("critical"), "critical")
    kind = critical.get("type")
    if kind != SIMPLE_SIGNING_TYPE:
        raise PayloadError(f"payload type is {kind!r}, not {SIMPLE_SIGNING_TYPE!r}")
    image = _object(critical.get("image"), "critical.image")
    digest = image.get("docker-manifest-digest")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise PayloadError(f"critical.image.docker-manifest-digest {digest!r} is not a digest")
    identity = _object(critical.get("identity"), "critical.identity")
    reference = identity.get("docker-reference")
    optional = document.get("optional") or {}
    return SimpleSigningClaims(
        docker_reference=reference if isinstance(reference, str) else "",
        digest=digest,
        optional=optional if isinstance(optional, dict) else {},
    )


# ---------------------------------------------------------------- in-toto statement


def sign_statement(
    digest: str, annotations: Mapping[str, str] | None = None, *, name: str | None = None
) -> bytes:
    """The statement ``cosign sign`` (v3, bundle format) signs for an image digest.

    cosign leaves the subject unnamed; sigstore-python refuses to sign a statement whose
    subject has no name, so we name it after the repository when given one (verifiers,
    cosign's included, match the subject by digest only).
    """
    algorithm, _, hex_value = digest.partition(":")
    subject: dict[str, Any] = {} if name is None else {"name": name}
    subject["digest"] = {algorithm: hex_value}
    subject["annotations"] = dict(sorted((annotations or {}).items()))
    document = {
        "_type": IN_TOTO_STATEMENT_V1,
        "subject": [subject],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    }
    return go_json(document)


@dataclass(frozen=True)
class StatementClaims:
    predicate_type: str
    subject_digests: tuple[str, ...]  # "sha256:<hex>"
    subject_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # digest -> names


def parse_statement(payload: bytes) -> StatementClaims:
    try:
        document = _object(json.loads(payload), "statement")
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("the in-toto statement is not JSON") from exc
    kind = document.get("_type")
    if kind not in (IN_TOTO_STATEMENT_V1, IN_TOTO_STATEMENT_V01):
        raise PayloadError(f"statement _type {kind!r} is not an in-toto statement")
    subjects = document.get("subject")
    if not isinstance(subjects, list):
        raise PayloadError("statement has no subject list")
    digests: list[str] = []
    names: dict[str, tuple[str, ...]] = {}
    for subject in subjects:
        item = _object(subject, "subject")
        name = item.get("name")
        for algorithm, value in item.get("digest", {}).items():
            if isinstance(value, str):
                digests.append(f"{algorithm}:{value}")
                if isinstance(name, str) and name:
                    key = f"{algorithm}:{value}"
                    names[key] = (*names.get(key, ()), name)
    predicate_type = document.get("predicateType")
    return StatementClaims(
        predicate_type=predicate_type if isinstance(predicate_type, str) else "",
        subject_digests=tuple(digests),
        subject_names=names,
    )


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what a DSSE signature covers."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)
