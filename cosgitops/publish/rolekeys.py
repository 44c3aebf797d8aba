"""The keys that sign the index's roles.

Keys are cosign-format files (or ``env://VAR``) named in ``cosgitops.yaml`` under
``publish.keys`` (per top-level role, a list) and ``publish.delegationKeys`` (derivative
glob -> team key). A role with no configured key uses a DEVELOPMENT key,
``.cosgitops/keys/tuf-<role>.key`` (no password), generated when a new index is
created. Passwords: ``COSGITOPS_TUF_<ROLE>_PASSWORD`` if set (e.g. ``..._ROOT_...``),
else ``COSIGN_PASSWORD``, else a prompt.

A team key given as a ``.pub`` file can be delegated to but not signed with: the
team publishes its own derivatives with its private key.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosgitops import model
from cosgitops.errors import PublishError
from cosgitops.publish.paths import TOP_LEVEL_ROLES

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

DEV_KEY_DIR = Path(".cosgitops") / "keys"
DEV_KEY_WARNING = (
    "DEVELOPMENT KEY: the index's {roles} metadata is signed with password-less keys "
    "generated for local use ({paths}); set publish.keys in cosgitops.yaml for production"
)


def dev_key_prefix(repository_root: Path, role: str) -> Path:
    return repository_root / DEV_KEY_DIR / f"tuf-{role}"


def password_for(role: str) -> bytes | None:
    value = os.environ.get(f"COSGITOPS_TUF_{role.upper().replace('-', '_')}_PASSWORD")
    return None if value is None else value.encode("utf-8")


@dataclass
class RoleKey:
    """One key: its TUF public form and, when available, the private half."""

    source: str
    public: Any  # securesystemslib SSlibKey
    private: ec.EllipticCurvePrivateKey | None = None

    @property
    def keyid(self) -> str:
        return str(self.public.keyid)

    def signer(self) -> Any:
        if self.private is None:
            raise PublishError(
                f"only the public half of {self.source} is available: it cannot sign",
                hint="give the private key (a .key file or env://VAR) to the publisher",
            )
        from cosgitops.publish.tufapi import CryptoSigner

        return CryptoSigner(self.private, self.public)

    @classmethod
    def from_private(cls, private: ec.EllipticCurvePrivateKey, source: str) -> RoleKey:
        return cls(source, tuf_public_key(private.public_key()), private)


def tuf_public_key(public: ec.EllipticCurvePublicKey) -> Any:
    """The securesystemslib key (``ecdsa`` / ``ecdsa-sha2-nistp256``) for a P-256 key."""
    from cosgitops.publish.tufapi import SSlibKey

    return SSlibKey.from_crypto(public)


@dataclass
class KeyRing:
    """Where each role's keys come from; loads (and decrypts) each key once."""

    base_dir: Path
    sources: Mapping[str, Sequence[str]]  # top-level role -> key sources
    delegation_sources: Mapping[str, str] = field(default_factory=dict)  # glob -> source
    development: Mapping[str, Path] = field(default_factory=dict)  # role -> dev key file
    preloaded: dict[str, list[RoleKey]] = field(default_factory=dict)
    _cache: dict[str, RoleKey] = field(default_factory=dict)

    # ------------------------------------------------------------ construction

    @classmethod
    def for_repository(cls, repository: model.Repository) -> KeyRing:
        sources: dict[str, Sequence[str]] = {}
        development: dict[str, Path] = {}
        for role in TOP_LEVEL_ROLES:
            configured = tuple(repository.publish.keys.get(role) or ())
            if configured:
                sources[role] = configured
            else:
                path = dev_key_prefix(repository.root, role).with_suffix(".key")
                sources[role] = (str(path),)
                development[role] = path
        return cls(
            base_dir=repository.root,
            sources=sources,
            delegation_sources=dict(repository.publish.delegation_keys),
            development=development,
        )

    @classmethod
    def from_private_keys(
        cls,
        keys: Mapping[str, Sequence[ec.EllipticCurvePrivateKey]],
        delegation_keys: Mapping[str, ec.EllipticCurvePrivateKey] | None = None,
    ) -> KeyRing:
        """A key ring over keys already in memory (tests, embedding)."""
        ring = cls(base_dir=Path.cwd(), sources={})
        for role, private_keys in keys.items():
            ring.preloaded[role] = [
                RoleKey.from_private(key, f"<{role} key {index}>")
                for index, key in enumerate(private_keys)
            ]
        for pattern, key in (delegation_keys or {}).items():
            ring.preloaded[f"delegation:{pattern}"] = [
                RoleKey.from_private(key, f"<team key {pattern}>")
            ]
        ring.delegation_sources = {
            pattern: f"delegation:{pattern}" for pattern in delegation_keys or {}
        }
        return ring

    # ------------------------------------------------------------ development keys

    def ensure_development_keys(self, roles: Sequence[str]) -> list[Path]:
        """Create the missing development keys among ``roles``; return the new files."""
        from cosgitops.signing.keys import write_keypair

        created = []
        for role in roles:
            path = self.development.get(role)
            if path is None or path.exists():
                continue
            key_path, _ = write_keypair(path.with_suffix(""), b"")
            created.append(key_path)
        return created

    def is_development(self, role: str) -> bool:
        return role in self.development

    # ------------------------------------------------------------ loading

    def _load(self, source: str, *, role: str, password_role: str) -> RoleKey:
        cached = self._cache.get(source)
        if cached is not None:
            return cached
        from cosgitops.signing import keys as keyfiles

        if source.endswith(".pub"):
            public = keyfiles.load_public_key(source, base_dir=self.base_dir)
            loaded = RoleKey(source, tuf_public_key(public), None)
        else:
            development = any(source == str(path) for path in self.development.values())
            if development and not Path(source).exists():
                raise PublishError(
                    f"the development key for the {role} role, {source}, does not exist",
                    hint="the index was created with other keys: restore .cosgitops/keys/ or "
                    "configure publish.keys in cosgitops.yaml",
                )
            password = b"" if development else password_for(password_role)
            private = keyfiles.load_private_key(source, password=password, base_dir=self.base_dir)
            loaded = RoleKey.from_private(private, source)
        self._cache[source] = loaded
        return loaded

    def keys(self, role: str) -> list[RoleKey]:
        """Every key configured for top-level ``role`` (decrypting the private halves)."""
        if role in self.preloaded:
            return self.preloaded[role]
        sources = self.sources.get(role) or ()
        if not sources:
            raise PublishError(
                f"no key is configured for the {role} role",
                hint=f"set publish.keys.{role} in cosgitops.yaml",
            )
        return [self._load(source, role=role, password_role=role) for source in sources]

    def replace(self, role: str, keys: list[RoleKey]) -> None:
        """Use ``keys`` for ``role`` from now on (after a rotation)."""
        self.preloaded[role] = keys

    def delegation_source(self, derivative: str) -> str | None:
        for pattern, source in self.delegation_sources.items():
            if fnmatch.fnmatchcase(derivative, pattern):
                return source
        return None

    def derivative_keys(self, derivative: str) -> list[RoleKey]:
        """The team key for ``derivative`` if one matches, else the targets keys."""
        source = self.delegation_source(derivative)
        if source is None:
            return self.keys("targets")
        if source in self.preloaded:
            return self.preloaded[source]
        return [self._load(source, role=f"team key for {derivative}", password_role=derivative)]
