"""Image references.

Two forms:

* registry: ``HOST[:PORT]/PATH[:TAG][@sha256:HEX]``; Docker Hub short names
  (``busybox``, ``library/busybox``, ``user/repo``) expand to ``docker.io/...``.
* OCI image layout on disk: ``oci:PATH[:TAG][@sha256:HEX]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from cosgitops.errors import InvalidReferenceError
from cosgitops.oci.digest import DIGEST_RE

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_HOST_RE = re.compile(
    r"^(?:localhost|\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?$"
)

Transport = Literal["registry", "oci"]


@dataclass(frozen=True)
class Reference:
    transport: Transport
    registry: str  # host[:port]; empty for oci
    repository: str  # repository path, or the layout folder for oci
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        return parse_reference(text)

    @property
    def is_oci_layout(self) -> bool:
        return self.transport == "oci"

    @property
    def name(self) -> str:
        """The reference without tag or digest."""
        if self.transport == "oci":
            return f"oci:{self.repository}"
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """Host to contact for the distribution API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def host(self) -> str:
        """Host name without the port."""
        host = self.registry
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def is_pinned(self) -> bool:
        return self.digest is not None

    @property
    def identifier(self) -> str:
        """What to ask the store for: the digest when pinned, else the tag (default ``latest``)."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=tag)

    def pinned_string(self) -> str:
        """``NAME@DIGEST`` (the tag dropped): what is signed, published and applied."""
        if self.digest is None:
            raise InvalidReferenceError(f"{self} is not pinned by digest")
        return f"{self.name}@{self.digest}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_digest(text: str, original: str) -> tuple[str, str | None]:
    if "@" not in text:
        return text, None
    rest, digest = text.rsplit("@", 1)
    if not DIGEST_RE.match(digest):
        raise InvalidReferenceError(
            f"{original!r}: {digest!r} is not a sha256 digest",
            hint="pin with @sha256: followed by 64 lowercase hex characters",
        )
    return rest, digest


def _check_tag(tag: str, original: str) -> str:
    if not _TAG_RE.match(tag):
        raise InvalidReferenceError(
            f"{original!r}: tag {tag!r} is invalid",
            hint="a tag is 1-128 characters of letters, digits, '_', '.', '-', not starting "
            "with '.' or '-'",
        )
    return tag


def parse_reference(text: str) -> Reference:
    """Parse an image reference, raising :class:`InvalidReferenceError` with a hint."""
    original = text
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReferenceError(
            f"{original!r} is not an image reference", hint="references contain no spaces"
        )
    if text.startswith("oci:"):
        body, digest = _split_digest(text[4:], original)
        tag = None
        head, sep, maybe_tag = body.rpartition(":")
        if sep and "/" not in maybe_tag and head:
            body, tag = head, _check_tag(maybe_tag, original)
        if not body or body.startswith(":"):
            raise InvalidReferenceError(
                f"{original!r} names no layout folder", hint="write oci:PATH[:TAG][@DIGEST]"
            )
        return Reference("oci", "", body, tag, digest)

    body, digest = _split_digest(text, original)
    first, slash, remainder = body.partition("/")
    if slash and (("." in first or ":" in first or first == "localhost") or first.startswith("[")):
        if not _HOST_RE.match(first):
            raise InvalidReferenceError(f"{original!r}: {first!r} is not a valid registry host")
        port = first.rpartition("]")[2].rpartition(":")[2] if ":" in first else ""
        if port and not 0 < int(port) <= 65535:
            raise InvalidReferenceError(f"{original!r}: port {port} is out of range")
        registry, path = (DOCKER_HUB if first == "index.docker.io" else first), remainder
    else:
        registry, path = DOCKER_HUB, body
    tag = None
    head, sep, maybe_tag = path.rpartition(":")
    if sep and "/" not in maybe_tag:
        path, tag = head, _check_tag(maybe_tag, original)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    components = path.split("/")
    for component in components:
        if not _PATH_COMPONENT_RE.match(component):
            raise InvalidReferenceError(
                f"{original!r}: repository path component {component!r} is invalid",
                hint="repository names use lowercase letters, digits and separators . _ __ -",
            )
    if len(path) > 255:
        raise InvalidReferenceError(f"{original!r}: repository name is longer than 255 chars")
    return Reference("registry", registry, path, tag, digest)


def check_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid tag, else raise :class:`InvalidReferenceError`."""
    return _check_tag(tag, tag)


def is_digest(identifier: str) -> bool:
    """True when a manifest identifier is a digest (``sha256:<hex>``), not a tag."""
    return bool(DIGEST_RE.match(identifier))
