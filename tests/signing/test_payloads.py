"""The signed documents, byte-for-byte as cosign writes them."""

from __future__ import annotations

import json

import pytest

from cosgitops.signing import payloads

DIGEST = "sha256:" + "ab" * 32


def test_simple_signing_payload_matches_cosign_bytes(interop_payload: bytes) -> None:
    claims = payloads.parse_simple_signing(interop_payload)
    rebuilt = payloads.simple_signing_payload(claims.docker_reference, claims.digest)
    assert rebuilt == interop_payload


def test_simple_signing_payload_with_annotations() -> None:
    payload = payloads.simple_signing_payload("r.example/x", DIGEST, {"b": "2", "a": "<&>"})
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"r.example/x"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},'
        b'"optional":{"a":"\\u003c\\u0026\\u003e","b":"2"}}'
    )
    assert payloads.parse_simple_signing(payload).optional == {"a": "<&>", "b": "2"}


def test_docker_hub_reference_is_index_docker_io() -> None:
    assert (
        payloads.docker_reference("docker.io/library/busybox") == "index.docker.io/library/busybox"
    )
    assert payloads.docker_reference("127.0.0.1:5000/x") == "127.0.0.1:5000/x"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"critical":{"type":"other"}}', "payload type"),
        (
            b'{"critical":{"type":"cosign container image signature","image":{}}}',
            "is not a digest",
        ),
    ],
)
def test_malformed_simple_signing(payload: bytes, message: str) -> None:
    with pytest.raises(payloads.PayloadError, match=message):
        payloads.parse_simple_signing(payload)


def test_sign_statement_is_cosign_v3_shape() -> None:
    statement = payloads.sign_statement(DIGEST)
    assert statement == (
        b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"'
        + DIGEST.split(":")[1].encode()
        + b'"},"annotations":{}}],"predicateType":"https://sigstore.dev/cosign/sign/v1",'
        b'"predicate":{}}'
    )
    claims = payloads.parse_statement(statement)
    assert claims.subject_digests == (DIGEST,)
    assert claims.predicate_type == payloads.COSIGN_SIGN_PREDICATE


def test_sigstore_python_accepts_our_statement() -> None:
    from sigstore import dsse

    ours = payloads.sign_statement(DIGEST, {"k": "v"}, name="127.0.0.1:5000/x")
    assert json.loads(ours)["subject"][0]["name"] == "127.0.0.1:5000/x"
    assert dsse.Statement(ours)._contents == ours


def test_dsse_pae() -> None:
    assert payloads.dsse_pae("t", b"hello") == b"DSSEv1 1 t 5 hello"
