"""Fixtures for the signing tests: real cosign data, keys, and stores with an image."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from cosgitops.signing import keys
from cosgitops.signing.policy import TrustedKey, VerificationPolicy
from cosgitops.signing.signers import KeySigner


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the real CLI entry point in-process: (exit code, stdout, stderr)."""
    from cosgitops.cli import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


CONTAINERS_IMAGE_PREFIX = b"\x00sigstore-json\n"


@dataclass(frozen=True)
class ContainersImageSignature:
    """One ``signature-N`` file of containers/image's ``dir:`` transport."""

    mime_type: str
    payload: bytes
    annotations: dict[str, str]


def read_containers_image_signature(path: Path) -> ContainersImageSignature:
    raw = path.read_bytes()
    assert raw.startswith(CONTAINERS_IMAGE_PREFIX)
    document = json.loads(raw[len(CONTAINERS_IMAGE_PREFIX) :])
    return ContainersImageSignature(
        document["mimeType"], base64.b64decode(document["payload"]), document["annotations"]
    )


@pytest.fixture
def containers_image(interop: Path) -> Path:
    return interop / "cosign" / "containers-image"


@pytest.fixture
def interop_payload(containers_image: Path) -> bytes:
    return read_containers_image_signature(
        containers_image / "dir-img-cosign-valid" / "signature-1"
    ).payload


@pytest.fixture(scope="session")
def signer() -> KeySigner:
    # scrypt makes key generation slow-ish; one key pair serves every test
    return KeySigner(keys.private_key_from_pem(keys.generate_keypair(b"").private_pem, b""), "a")


@pytest.fixture(scope="session")
def other_signer() -> KeySigner:
    return KeySigner(keys.private_key_from_pem(keys.generate_keypair(b"").private_pem, b""), "b")


@pytest.fixture
def key_policy(signer: KeySigner) -> VerificationPolicy:
    return VerificationPolicy(keys=(TrustedKey(signer.private_key.public_key(), "a.pub"),))
