"""cosign-compatible key files: generate, write, load from files and env, interop."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cosgitops.errors import KeyFileError, SigningError
from cosgitops.signing import keys


def _body_json(pem: bytes) -> dict[str, object]:
    block = keys.pem_decode(pem, what="test")
    result = json.loads(block.body)
    assert isinstance(result, dict)
    return result


def test_generated_pair_has_cosign_layout_and_round_trips() -> None:
    pair = keys.generate_keypair(b"secret")
    assert pair.private_pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert pair.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    document = _body_json(pair.private_pem)
    assert list(document) == ["kdf", "cipher", "ciphertext"]
    assert document["kdf"] == {
        "name": "scrypt",
        "params": {"N": 65536, "r": 8, "p": 1},
        "salt": document["kdf"]["salt"],  # type: ignore[index]
    }
    assert document["cipher"]["name"] == "nacl/secretbox"  # type: ignore[index]
    assert len(base64.b64decode(document["cipher"]["nonce"])) == 24  # type: ignore[index]

    private = keys.private_key_from_pem(pair.private_pem, b"secret")
    public = keys.public_key_from_pem(pair.public_pem)
    assert keys.key_fingerprint(private.public_key()) == keys.key_fingerprint(public)
    signature = private.sign(b"data", ec.ECDSA(hashes.SHA256()))
    public.verify(signature, b"data", ec.ECDSA(hashes.SHA256()))


def test_fingerprint_is_sha256_of_spki() -> None:
    import hashlib

    public = keys.public_key_from_pem(keys.generate_keypair(b"").public_pem)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert keys.key_fingerprint(public) == hashlib.sha256(der).hexdigest()


def test_write_keypair_modes_and_refuses_overwrite(tmp_path: Path) -> None:
    key_path, pub_path = keys.write_keypair(tmp_path / "cosign", b"pw")
    assert key_path == tmp_path / "cosign.key"
    assert pub_path == tmp_path / "cosign.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    before = key_path.read_bytes()
    with pytest.raises(SigningError, match="already exists"):
        keys.write_keypair(tmp_path / "cosign", b"pw")
    assert key_path.read_bytes() == before
    keys.write_keypair(tmp_path / "cosign", b"pw", overwrite=True)
    assert key_path.read_bytes() != before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_load_private_key_password_sources(tmp_path: Path) -> None:
    key_path, _ = keys.write_keypair(tmp_path / "k", b"from-env")
    os.environ["COSIGN_PASSWORD"] = "from-env"
    assert keys.load_private_key("k.key", base_dir=tmp_path)
    # an explicit argument wins over the environment
    with pytest.raises(KeyFileError, match="wrong password"):
        keys.load_private_key(str(key_path), password=b"other")
    del os.environ["COSIGN_PASSWORD"]
    # no password, no terminal (pytest's stdin is not a TTY): a clear error, no hang
    with pytest.raises(KeyFileError, match="no terminal") as info:
        keys.load_private_key(str(key_path))
    assert info.value.hint and "COSIGN_PASSWORD" in info.value.hint


def test_empty_password_from_env_means_no_password(tmp_path: Path) -> None:
    key_path, _ = keys.write_keypair(tmp_path / "dev", b"")
    os.environ["COSIGN_PASSWORD"] = ""
    assert keys.load_private_key(str(key_path))


def test_keys_from_environment_variables() -> None:
    pair = keys.generate_keypair(b"pw")
    os.environ["TEST_PRIV"] = pair.private_pem.decode()
    os.environ["TEST_PUB"] = pair.public_pem.decode()
    private = keys.load_private_key("env://TEST_PRIV", password=b"pw")
    public = keys.load_public_key("env://TEST_PUB")
    assert keys.key_fingerprint(private.public_key()) == keys.key_fingerprint(public)
    with pytest.raises(KeyFileError, match="not set"):
        keys.load_public_key("env://TEST_MISSING")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a PEM file"),
        (b"hello world\n", "not a PEM file"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a cosign"),
        (
            b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n!!!\n"
            b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
            "not valid base64",
        ),
        (keys.pem_encode(keys.SIGSTORE_PRIVATE_LABEL, b"not json"), "not JSON"),
        (keys.pem_encode(keys.SIGSTORE_PRIVATE_LABEL, b"{}"), "no kdf.name"),
        (
            keys.pem_encode(
                keys.SIGSTORE_PRIVATE_LABEL,
                json.dumps(
                    {
                        "kdf": {"name": "scrypt", "params": {"N": 1 << 30, "r": 8, "p": 1}},
                        "cipher": {"name": "nacl/secretbox"},
                    }
                ).encode(),
            ),
            "unsupported scrypt parameters",
        ),
    ],
)
def test_malformed_private_keys_are_clear_errors(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=message):
        keys.load_private_key(str(path), password=b"pw")


def test_missing_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        keys.load_public_key(str(tmp_path / "nope.pub"))
    big = tmp_path / "big.pub"
    big.write_bytes(b"x" * (keys.KEY_FILE_MAX_BYTES + 10))
    with pytest.raises(KeyFileError, match="larger than"):
        keys.load_public_key(str(big))


def test_public_key_must_be_p256(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFileError, match="P-256"):
        keys.public_key_from_pem(pem)


# ---------------------------------------------------------------- real cosign files


@pytest.mark.parametrize("name", ["pemcosignkey.pem", "pemsigstorekey.pem"])
def test_cosign_written_keys_load_with_hello(interop: Path, name: str) -> None:
    path = interop / "cosign" / "keys" / name
    key = keys.load_private_key(str(path), password=b"hello")
    assert isinstance(key.curve, ec.SECP256R1)
    # those files use cosign's legacy scrypt setting, N=32768
    assert _body_json(path.read_bytes())["kdf"]["params"]["N"] == 32768  # type: ignore[index]


def test_cosign_written_key_wrong_password(interop: Path) -> None:
    with pytest.raises(KeyFileError, match="wrong password"):
        keys.load_private_key(
            str(interop / "cosign" / "keys" / "pemsigstorekey.pem"), password=b"hell"
        )


def test_cosign_sec1_key_is_refused_cleanly(interop: Path) -> None:
    with pytest.raises(KeyFileError, match="PKCS#8"):
        keys.load_private_key(
            str(interop / "cosign" / "keys" / "pemcosigneckey.pem"), password=b"hello"
        )


def test_cosign_public_keys_load(interop: Path) -> None:
    for name in ("cosign.pub", "cosign2.pub", "rekor.pub"):
        public = keys.load_public_key(str(interop / "cosign" / "containers-image" / name))
        assert len(keys.key_fingerprint(public)) == 64
