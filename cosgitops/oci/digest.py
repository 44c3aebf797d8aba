"""Content digests (``sha256:<64 hex>``)."""

from __future__ import annotations

import hashlib
import re

from cosgitops.errors import IntegrityError, InvalidReferenceError

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest_format(digest: str) -> str:
    """Return ``digest`` if it is a well-formed sha256 digest, else raise."""
    if not DIGEST_RE.match(digest):
        raise InvalidReferenceError(
            f"{digest!r} is not a sha256 digest",
            hint="a digest looks like sha256: followed by 64 lowercase hex characters",
        )
    return digest


def verify_bytes(data: bytes, digest: str, *, what: str = "blob") -> bytes:
    """Return ``data`` if it hashes to ``digest``; raise IntegrityError otherwise."""
    actual = sha256_digest(data)
    if actual != digest:
        raise IntegrityError(
            f"{what} content does not match its digest: expected {digest}, got {actual}",
            hint="the source is corrupt or has been tampered with; nothing was used",
        )
    return data


class Digester:
    """Incremental sha256 over streamed bytes."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
