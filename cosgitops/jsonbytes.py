"""The exact bytes of the JSON documents cosgitops hashes or checks signatures over.

Two rules, because two different things depend on them:

* :func:`rfc8785_json` is RFC 8785, the JSON Canonicalization Scheme (through the
  ``rfc8785`` package): the form another party recomputes independently, such as the
  payload of a Rekor signed entry timestamp. Use it wherever a signature covers JSON
  that someone else serializes.
* :func:`image_json` is the form of the image configs, manifests and indexes the
  builders write: keys sorted by code point, no whitespace, UTF-8, Python's number
  forms. An image's digest is the hash of these bytes, so this rule never changes:
  changing it would change the digest of every image rebuilt from the same inputs
  (reproducible builds) without changing its content. It is *not* RFC 8785 and must
  not be swapped for it: the two differ on floats (``1.0`` stays ``1.0`` here, is
  ``1`` there), on the order of keys outside the Basic Multilingual Plane (code points
  here, UTF-16 units there), and RFC 8785 refuses integers beyond 2**53.

Documents whose bytes must match what another tool writes (cosign's payloads, Go's
``encoding/json`` order) are serialized where they are made, not here.
"""

from __future__ import annotations

import json
from typing import Any


def rfc8785_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON; :class:`ValueError` for what it cannot represent
    (NaN, infinities, integers beyond the IEEE 754 safe range, non-JSON types)."""
    import rfc8785

    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"cannot canonicalize as RFC 8785 JSON: {exc}") from exc


def image_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes of an image document, and so its
    digest. The same document always has the same bytes, on every version of cosgitops."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
