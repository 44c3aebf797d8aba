"""The python-tuf and securesystemslib names the publisher uses, in one place.

Their public modules (``tuf.api.metadata``, ``securesystemslib.signer``) re-export
these classes without ``__all__``, which ``mypy --strict`` flags at every import; this
module takes the flag once. It imports tuf, so import it inside functions only.
"""

from __future__ import annotations

from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]
from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import (  # type: ignore[attr-defined]
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

__all__ = [
    "CryptoSigner",
    "DelegatedRole",
    "Delegations",
    "JSONSerializer",
    "LengthOrHashMismatchError",
    "MetaFile",
    "Metadata",
    "Root",
    "SSlibKey",
    "Snapshot",
    "TargetFile",
    "Targets",
    "Timestamp",
]
