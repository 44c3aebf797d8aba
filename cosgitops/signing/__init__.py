"""Image signatures in cosign's formats.

* :mod:`~cosgitops.signing.keys`: cosign-compatible key files (generate, load, fingerprint).
* :mod:`~cosgitops.signing.payloads`: the signed documents, byte-for-byte as cosign writes.
* :mod:`~cosgitops.signing.signers`: who signs (a key, or a keyless Sigstore identity).
* :mod:`~cosgitops.signing.policy`: who is trusted, from ``cosgitops.yaml``.
* :mod:`~cosgitops.signing.verify`: the pure judge (signature bytes + policy -> verdict).
* :mod:`~cosgitops.signing.image`: signing and verifying images in an OCI store.

The names below are the API other parts use. Heavy libraries (cryptography, sigstore)
are imported inside the functions that need them, so importing this package is cheap.
"""

from cosgitops.signing.image import (
    SignResult,
    WrittenSignature,
    collect_signatures,
    legacy_tag,
    sign_image,
    sign_reference,
    signed_identity,
    verify_image,
    verify_reference,
)
from cosgitops.signing.policy import (
    TrustedKey,
    VerificationPolicy,
    identity_policy,
    key_policy,
    policy_for,
)
from cosgitops.signing.signers import (
    ImageSigner,
    KeylessSigner,
    KeySigner,
    key_signer,
    keyless_signer,
)
from cosgitops.signing.verify import SignatureVerdict, VerificationResult

__all__ = [
    "ImageSigner",
    "KeySigner",
    "KeylessSigner",
    "SignResult",
    "SignatureVerdict",
    "TrustedKey",
    "VerificationPolicy",
    "VerificationResult",
    "WrittenSignature",
    "collect_signatures",
    "identity_policy",
    "key_policy",
    "key_signer",
    "keyless_signer",
    "legacy_tag",
    "policy_for",
    "sign_image",
    "sign_reference",
    "signed_identity",
    "verify_image",
    "verify_reference",
]
