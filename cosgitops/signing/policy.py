"""Who is trusted to sign an image: public keys and keyless (Fulcio) identities.

A signature is accepted when it verifies under *any* key or identity of the policy.
:func:`policy_for` builds the policy for one derivative from ``cosgitops.yaml``
(``spec.signing.trust``); ``release`` signs under it and the device agent verifies with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosgitops.errors import ConfigError
from cosgitops.model import Identity, Repository

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class TrustedKey:
    """A public key and where it came from (for messages)."""

    public_key: ec.EllipticCurvePublicKey
    source: str = ""

    @property
    def fingerprint(self) -> str:
        from cosgitops.signing.keys import key_fingerprint

        return key_fingerprint(self.public_key)

    def describe(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"key {self.fingerprint[:16]}{where}"


def describe_identity(identity: Identity) -> str:
    who = identity.identity or f"~/{identity.identity_regexp}/"
    issuer = identity.issuer or f"~/{identity.issuer_regexp}/"
    return f"identity {who} (issuer {issuer})"


def check_identity(identity: Identity) -> Identity:
    """An identity rule must name a subject and an issuer, exactly or by regexp."""
    if not (identity.identity or identity.identity_regexp):
        raise ConfigError(
            "a keyless identity needs identity or identityRegexp",
            hint="set --certificate-identity (or -regexp) to the signer's certificate SAN",
        )
    if not (identity.issuer or identity.issuer_regexp):
        raise ConfigError(
            "a keyless identity needs issuer or issuerRegexp",
            hint="set --certificate-oidc-issuer, e.g. https://token.actions.githubusercontent.com",
        )
    for pattern in (identity.identity_regexp, identity.issuer_regexp):
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"invalid regular expression {pattern!r}: {exc}") from exc
    return identity


@dataclass(frozen=True)
class VerificationPolicy:
    keys: tuple[TrustedKey, ...] = ()
    identities: tuple[Identity, ...] = ()
    # Transparency-log keys for checking Rekor SETs on key-based signatures. Without
    # them a logged signature is still accepted on its key, and the result says the
    # log entry was not checked; require_tlog refuses signatures without a checked entry.
    rekor_keys: tuple[TrustedKey, ...] = ()
    require_tlog: bool = False
    # Sigstore trusted root JSON for keyless identities; None means Sigstore's public-good
    # instance (fetched through its TUF repository when verifying).
    trusted_root: bytes | None = field(default=None, repr=False)
    # The repository a signature must name as the image's identity (the simple-signing
    # docker-reference, the in-toto subject name), in signed_identity() form; None: a
    # signature binds the digest only. Without it an image signed for one repository,
    # copied with its signatures into another, verifies there too.
    signed_identity: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.keys and not self.identities

    def describe(self) -> str:
        parts = [key.describe() for key in self.keys]
        parts += [describe_identity(identity) for identity in self.identities]
        return ", ".join(parts) if parts else "nobody"

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": [{"fingerprint": k.fingerprint, "source": k.source} for k in self.keys],
            "identities": [
                {
                    "identity": i.identity,
                    "identityRegexp": i.identity_regexp,
                    "issuer": i.issuer,
                    "issuerRegexp": i.issuer_regexp,
                }
                for i in self.identities
            ],
            "rekorKeys": [k.fingerprint for k in self.rekor_keys],
            "requireTlog": self.require_tlog,
            "signedIdentity": self.signed_identity,
        }


def key_policy(
    sources: Sequence[str], *, base_dir: Path | None = None, rekor_keys: Sequence[str] = ()
) -> VerificationPolicy:
    """A policy trusting the public keys at ``sources`` (paths or ``env://VAR``)."""
    from cosgitops.signing.keys import load_public_key

    return VerificationPolicy(
        keys=tuple(
            TrustedKey(load_public_key(source, base_dir=base_dir), source) for source in sources
        ),
        rekor_keys=tuple(
            TrustedKey(load_public_key(source, base_dir=base_dir), source) for source in rekor_keys
        ),
    )


def identity_policy(
    identities: Sequence[Identity], *, trusted_root: bytes | None = None
) -> VerificationPolicy:
    return VerificationPolicy(
        identities=tuple(check_identity(identity) for identity in identities),
        trusted_root=trusted_root,
    )


def policy_for(
    repository: Repository, derivative: str, *, trusted_root: bytes | None = None
) -> VerificationPolicy:
    """The policy for ``derivative``: every key and identity of the trust rules whose
    ``derivatives`` globs match it. Keys are read relative to the repository root.

    With no trust rules at all, the repository's own signing key is trusted (the
    development key when ``spec.signing.key`` is unset): its public half is the ``.pub``
    beside the ``.key`` file.
    """
    from cosgitops.signing.keys import load_public_key

    rules = repository.signing.rules_for(derivative)
    if not repository.signing.trust:
        return _default_policy(repository, derivative, trusted_root)
    if not rules:
        raise ConfigError(
            f"no trust rule in cosgitops.yaml covers derivative {derivative!r}",
            hint="add a spec.signing.trust entry whose derivatives globs match it",
        )
    keys: list[TrustedKey] = []
    seen: set[str] = set()
    identities: list[Identity] = []
    for rule in rules:
        for source in rule.keys:
            key = TrustedKey(load_public_key(source, base_dir=repository.root), source)
            if key.fingerprint not in seen:
                seen.add(key.fingerprint)
                keys.append(key)
        for identity in rule.identities:
            if identity not in identities:
                identities.append(check_identity(identity))
    policy = VerificationPolicy(
        keys=tuple(keys), identities=tuple(identities), trusted_root=trusted_root
    )
    if policy.is_empty:
        raise ConfigError(
            f"the trust rules for derivative {derivative!r} name no key and no identity",
            hint="list public keys under keys: or keyless signers under identities:",
        )
    return policy


def _default_policy(
    repository: Repository, derivative: str, trusted_root: bytes | None
) -> VerificationPolicy:
    from cosgitops.signing.keys import DEVELOPMENT_KEY, load_public_key

    key = repository.signing.key or DEVELOPMENT_KEY
    if repository.signing.keyless or key.startswith("env://") or not key.endswith(".key"):
        raise ConfigError(
            f"cosgitops.yaml has no spec.signing.trust rule for derivative {derivative!r}",
            hint="add spec.signing.trust with the public keys or identities devices must trust",
        )
    public = key[: -len(".key")] + ".pub"
    return VerificationPolicy(
        keys=(TrustedKey(load_public_key(public, base_dir=repository.root), public),),
        trusted_root=trusted_root,
    )
