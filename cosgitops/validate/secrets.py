"""Finding private keys in files (pure scanning plus one bounded file read).

A PEM block whose label ends in ``PRIVATE KEY`` (PKCS#8, RSA, EC, OpenSSH, cosign's
``ENCRYPTED COSIGN PRIVATE KEY`` / ``ENCRYPTED SIGSTORE PRIVATE KEY``, PGP's
``PRIVATE KEY BLOCK``) counts when its BEGIN line is followed by a matching END line,
so prose that merely mentions the marker is not flagged.

A block with no key inside is a placeholder (documentation examples, Kairos' among them,
write the BEGIN line straight followed by its END line, or ``...`` between them): fewer
base64 characters than the shortest PEM private key has (an Ed25519 PKCS#8 key, 64).
It is found too, marked ``placeholder``: nothing secret leaked, but it is no key either.
"""

from __future__ import annotations

import os
import re
import stat
from typing import NamedTuple

_NEEDLE = b"PRIVATE KEY"
_BEGIN_RE = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----")
_MAX_BLOCK_BYTES = 64 * 1024  # an END line further away than this is not the same key
_SHORTEST_KEY = 64  # base64 characters in the smallest PEM private key (Ed25519, PKCS#8)
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(byte for byte in range(256) if byte not in _BASE64)


class KeyFinding(NamedTuple):
    label: str  # e.g. "ENCRYPTED SIGSTORE PRIVATE KEY"
    line: int  # 1-based
    column: int  # 1-based
    placeholder: bool = False  # a block with no key in it


def find_private_keys(data: bytes) -> list[KeyFinding]:
    """Every PEM private key block in ``data``."""
    if _NEEDLE not in data:
        return []
    findings = []
    for match in _BEGIN_RE.finditer(data):
        label = match.group(1)
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, match.end(), match.end() + _MAX_BLOCK_BYTES)
        if end < 0:
            continue
        body = data[match.end() : end].translate(None, _NOT_BASE64)
        start = match.start()
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        findings.append(KeyFinding(label.decode("ascii"), line, column, len(body) < _SHORTEST_KEY))
    return findings


def scan_file(path: str | os.PathLike[str], max_bytes: int) -> list[KeyFinding]:
    """Scan the first ``max_bytes`` of a regular file; anything else yields nothing
    (opening a FIFO or a device could block or never end)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return []
        with open(path, "rb") as handle:
            data = handle.read(max_bytes)
    except OSError:
        return []
    return find_private_keys(data)
