"""cosign-compatible key files.

The private key file is what ``cosign generate-key-pair`` writes: a PEM block labelled
``ENCRYPTED SIGSTORE PRIVATE KEY`` (older cosign: ``ENCRYPTED COSIGN PRIVATE KEY``)
whose body is JSON ``{"kdf": scrypt, "cipher": nacl/secretbox, "ciphertext"}`` sealing a
PKCS#8 ECDSA P-256 key. The public key is a plain SubjectPublicKeyInfo PEM.

Keys are read from a file path or from ``env://VAR`` (the PEM text in an environment
variable, as CI secrets are passed). The password comes from the caller, else
``COSIGN_PASSWORD`` (set but empty means "no password", as in cosign), else an
unechoed prompt when a person is at the terminal.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosgitops.config import DEFAULT_LIMITS
from cosgitops.errors import KeyFileError, SigningError
from cosgitops.fsutil import atomic_write_bytes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

SIGSTORE_PRIVATE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PRIVATE_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
PRIVATE_LABELS = (SIGSTORE_PRIVATE_LABEL, COSIGN_PRIVATE_LABEL)
PUBLIC_LABEL = "PUBLIC KEY"
PASSWORD_ENV = "COSIGN_PASSWORD"  # noqa: S105 - a variable name, not a password
ENV_PREFIX = "env://"

# cosign (through go-securesystemslib) writes and accepts exactly these scrypt settings:
# legacy, standard (what it writes today) and OWASP's. Accepting only these also bounds
# the memory an attacker-supplied key file can make us spend.
SCRYPT_SETTINGS: tuple[tuple[int, int, int], ...] = ((32768, 8, 1), (65536, 8, 1), (131072, 8, 1))
WRITE_SCRYPT = (65536, 8, 1)
_SCRYPT_KEY_BYTES = 32
_SALT_BYTES = 32
_NONCE_BYTES = 24
_SCRYPT_MAXMEM = 256 * 1024 * 1024
KEY_FILE_MAX_BYTES = DEFAULT_LIMITS.key_file_max_bytes
# Embedded defaults: a password-less pair generated on first use, repo-relative.
DEVELOPMENT_KEY = ".cosgitops/keys/cosign.key"
DEVELOPMENT_PUBLIC_KEY = ".cosgitops/keys/cosign.pub"

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)\r?\n?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class KeyPair:
    """A freshly generated pair: both halves as the bytes of their files."""

    private_pem: bytes
    public_pem: bytes


@dataclass(frozen=True)
class PemBlock:
    label: str
    body: bytes


# ---------------------------------------------------------------- PEM helpers


def pem_encode(label: str, body: bytes) -> bytes:
    text = base64.b64encode(body).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode(
        "ascii"
    )


def pem_decode(data: bytes, *, what: str) -> PemBlock:
    """The first PEM block in ``data``; :class:`KeyFileError` if there is none."""
    match = _PEM_RE.search(data)
    if match is None:
        raise KeyFileError(
            f"{what} is not a PEM file (no -----BEGIN ...----- block)",
            hint="pass a key written by `cosgitops keygen` or `cosign generate-key-pair`",
        )
    label = match.group(1).decode("ascii")
    body_text = b"".join(match.group(2).split())
    try:
        body = base64.b64decode(body_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{what}: PEM body is not valid base64 ({exc})") from exc
    return PemBlock(label, body)


# ---------------------------------------------------------------- sources


def _read_source(source: str, *, base_dir: Path | None, what: str) -> tuple[bytes, str]:
    """The bytes behind ``source`` (path or ``env://VAR``) and a name for messages."""
    if source.startswith(ENV_PREFIX):
        variable = source[len(ENV_PREFIX) :]
        if not variable:
            raise KeyFileError(f"{source!r} names no environment variable", hint="write env://NAME")
        value = os.environ.get(variable)
        if value is None:
            raise KeyFileError(
                f"environment variable {variable} (for the {what}) is not set",
                hint=f"export {variable} with the PEM text of the key",
            )
        data = value.encode("utf-8")
        name = f"${variable}"
    else:
        path = Path(source).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            with path.open("rb") as handle:
                data = handle.read(KEY_FILE_MAX_BYTES + 1)
        except FileNotFoundError as exc:
            raise KeyFileError(
                f"{what} {path} does not exist",
                hint="create a pair with `cosgitops keygen` or fix the path",
            ) from exc
        except OSError as exc:
            raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from exc
        name = str(path)
    if len(data) > KEY_FILE_MAX_BYTES:
        raise KeyFileError(f"{what} {name} is larger than {KEY_FILE_MAX_BYTES} bytes")
    return data, name


def resolve_password(password: bytes | None, *, key_name: str) -> bytes:
    """The password to use: argument, else ``COSIGN_PASSWORD``, else a prompt on a TTY."""
    if password is not None:
        return password
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env.encode("utf-8")
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        try:
            return getpass.getpass(f"Enter password for private key {key_name}: ").encode("utf-8")
        except (EOFError, KeyboardInterrupt) as exc:
            raise KeyFileError(f"no password entered for {key_name}") from exc
    raise KeyFileError(
        f"the private key {key_name} needs a password and there is no terminal to ask on",
        hint=f"set {PASSWORD_ENV} (empty for a key without password)",
    )


# ---------------------------------------------------------------- encryption


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=_SCRYPT_KEY_BYTES
    )


def encrypt_private_bytes(plaintext: bytes, password: bytes) -> bytes:
    """Seal ``plaintext`` the way cosign does; the result is the PEM body (JSON)."""
    import nacl.secret

    salt = secrets.token_bytes(_SALT_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    n, r, p = WRITE_SCRYPT
    box = nacl.secret.SecretBox(_scrypt(password, salt, n, r, p))
    sealed = box.encrypt(plaintext, nonce).ciphertext

    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    document = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)},
        "ciphertext": b64(sealed),
    }
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def _field(document: Any, *path: str) -> Any:
    value = document
    for name in path:
        if not isinstance(value, dict) or name not in value:
            raise KeyFileError(f"encrypted key has no {'.'.join(path)}")
        value = value[name]
    return value


def _b64_field(document: Any, *path: str) -> bytes:
    value = _field(document, *path)
    if not isinstance(value, str):
        raise KeyFileError(f"encrypted key field {'.'.join(path)} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"encrypted key field {'.'.join(path)} is not base64") from exc


def decrypt_private_bytes(body: bytes, password: bytes, *, key_name: str) -> bytes:
    """Open a cosign-sealed PEM body; :class:`KeyFileError` for a wrong password."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{key_name}: the encrypted key body is not JSON") from exc
    if _field(document, "kdf", "name") != "scrypt":
        raise KeyFileError(f"{key_name}: unsupported key derivation {document['kdf']['name']!r}")
    if _field(document, "cipher", "name") != "nacl/secretbox":
        raise KeyFileError(f"{key_name}: unsupported cipher {document['cipher']['name']!r}")
    params = _field(document, "kdf", "params")
    try:
        setting = (int(params["N"]), int(params["r"]), int(params["p"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"{key_name}: malformed scrypt parameters") from exc
    if setting not in SCRYPT_SETTINGS:
        raise KeyFileError(
            f"{key_name}: unsupported scrypt parameters N={setting[0]} r={setting[1]} "
            f"p={setting[2]}",
            hint="cosign writes N=32768, 65536 or 131072 with r=8 p=1; re-encrypt the key",
        )
    salt = _b64_field(document, "kdf", "salt")
    nonce = _b64_field(document, "cipher", "nonce")
    sealed = _b64_field(document, "ciphertext")
    if len(nonce) != _NONCE_BYTES:
        raise KeyFileError(f"{key_name}: the secretbox nonce is not {_NONCE_BYTES} bytes")
    import nacl.exceptions
    import nacl.secret

    box = nacl.secret.SecretBox(_scrypt(password, salt, *setting))
    try:
        return bytes(box.decrypt(sealed, nonce))
    except nacl.exceptions.CryptoError as exc:
        raise KeyFileError(
            f"wrong password for private key {key_name} (or the file is corrupt)",
            hint=f"check {PASSWORD_ENV} or the password you typed",
        ) from exc


def _is_pkcs8(der: bytes) -> bool:
    """PKCS#8 PrivateKeyInfo is SEQUENCE { INTEGER, SEQUENCE AlgorithmIdentifier, ... };
    SEC1 ECPrivateKey puts an OCTET STRING where the AlgorithmIdentifier would be."""
    if len(der) < 4 or der[0] != 0x30:
        return False
    index = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    if index + 2 > len(der) or der[index] != 0x02:
        return False
    index += 2 + der[index + 1]
    return index < len(der) and der[index] == 0x30


# ---------------------------------------------------------------- public API


def generate_keypair(password: bytes) -> KeyPair:
    """A new ECDSA P-256 pair, the private half sealed like cosign's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    sealed = encrypt_private_bytes(pkcs8, password)
    return KeyPair(
        private_pem=pem_encode(SIGSTORE_PRIVATE_LABEL, sealed),
        public_pem=public_key_pem(private_key.public_key()),
    )


def write_keypair(prefix: Path, password: bytes, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (mode 0600) and ``PREFIX.pub``; refuse to replace existing keys."""
    prefix = Path(prefix)
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    if not overwrite:
        for path in (key_path, pub_path):
            if path.exists():
                raise SigningError(
                    f"{path} already exists; not overwriting a key",
                    hint="choose another --output-key-prefix or remove the old pair first",
                )
    pair = generate_keypair(password)
    atomic_write_bytes(key_path, pair.private_pem, mode=0o600)
    atomic_write_bytes(pub_path, pair.public_pem, mode=0o644)
    return key_path, pub_path


def ensure_development_keypair(root: Path) -> tuple[Path, Path, bool]:
    """The repository's password-less development pair under ``.cosgitops/keys/``,
    generated if missing; returns (private, public, created). For one-machine use only."""
    key_path = root / DEVELOPMENT_KEY
    pub_path = root / DEVELOPMENT_PUBLIC_KEY
    if key_path.exists() and pub_path.exists():
        return key_path, pub_path, False
    if key_path.exists() or pub_path.exists():
        raise SigningError(
            f"only one half of the development key pair exists under {key_path.parent}",
            hint="remove the leftover file so a fresh pair can be generated",
        )
    written = write_keypair(key_path.with_suffix(""), b"")
    return written[0], written[1], True


def private_key_from_pem(
    data: bytes, password: bytes, *, key_name: str = "private key"
) -> ec.EllipticCurvePrivateKey:
    """Decrypt a cosign private key file's bytes (pure: no environment, no prompt)."""
    block = _private_block(data, key_name)
    der = decrypt_private_bytes(block.body, password, key_name=key_name)
    if not _is_pkcs8(der):
        raise KeyFileError(
            f"{key_name} does not hold a PKCS#8 key (it looks like a SEC1 EC key, "
            "which cosign refuses too)",
            hint="re-create the pair with `cosgitops keygen`",
        )
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{key_name}: the decrypted key is not valid PKCS#8: {exc}") from exc
    return _require_p256_private(key, key_name)


def _private_block(data: bytes, key_name: str) -> PemBlock:
    block = pem_decode(data, what=key_name)
    if block.label not in PRIVATE_LABELS:
        raise KeyFileError(
            f"{key_name} is a {block.label!r} PEM block, not a cosign encrypted private key",
            hint="cosign keys are labelled 'ENCRYPTED SIGSTORE PRIVATE KEY'; "
            "create one with `cosgitops keygen`",
        )
    return block


def _require_p256_private(key: object, key_name: str) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(
            f"{key_name} is not an ECDSA P-256 key",
            hint="cosgitops signs with ECDSA P-256 (cosign's default); use `cosgitops keygen`",
        )
    return key


def load_private_key(
    source: str, *, password: bytes | None = None, base_dir: Path | None = None
) -> ec.EllipticCurvePrivateKey:
    """Load a cosign private key from a path (relative to ``base_dir``) or ``env://VAR``."""
    data, name = _read_source(source, base_dir=base_dir, what="private key")
    # Check the label before asking for a password, so a wrong file fails without a prompt.
    _private_block(data, name)
    return private_key_from_pem(data, resolve_password(password, key_name=name), key_name=name)


def public_key_from_pem(data: bytes, *, key_name: str = "public key") -> ec.EllipticCurvePublicKey:
    """Parse a PEM SubjectPublicKeyInfo holding an ECDSA P-256 key (pure)."""
    block = pem_decode(data, what=key_name)
    if block.label != PUBLIC_LABEL:
        raise KeyFileError(
            f"{key_name} is a {block.label!r} PEM block, not a PUBLIC KEY",
            hint="pass the .pub file of the pair (cosign.pub)",
        )
    return public_key_from_der(block.body, key_name=key_name)


def public_key_from_der(der: bytes, *, key_name: str = "public key") -> ec.EllipticCurvePublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{key_name} is not a valid public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(
            f"{key_name} is not an ECDSA P-256 public key",
            hint="cosgitops verifies ECDSA P-256 signatures (cosign's default)",
        )
    return key


def load_public_key(source: str, *, base_dir: Path | None = None) -> ec.EllipticCurvePublicKey:
    """Load a PEM public key from a path (relative to ``base_dir``) or ``env://VAR``."""
    data, name = _read_source(source, base_dir=base_dir, what="public key")
    return public_key_from_pem(data, key_name=name)


def public_key_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return pem_encode(PUBLIC_LABEL, public_key_der(public_key))


def key_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """Stable id of a public key: lowercase hex sha256 of its DER SubjectPublicKeyInfo."""
    return hashlib.sha256(public_key_der(public_key)).hexdigest()
