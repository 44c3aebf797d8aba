"""Image platforms (``linux/amd64``, ``linux/arm64/v8``) and picking one from an index."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cosgitops.errors import NotFoundError, UsageError
from cosgitops.oci.media import MANIFEST_TYPES
from cosgitops.oci.store import Descriptor, ManifestData


def _comparable_variant(architecture: str, variant: str | None) -> str | None:
    # arm64's only variant is v8, and indexes write it or leave it out at will
    return None if architecture == "arm64" and variant == "v8" else variant


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/amd64``, ``linux/arm64/v8``, ``linux/arm/v7``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(
                f"platform {text!r} is not OS/ARCH[/VARIANT]",
                hint="write it like linux/amd64 or linux/arm64",
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        variant = data.get("variant")
        return cls(
            str(data.get("os") or "unknown"),
            str(data.get("architecture") or "unknown"),
            str(variant) if variant else None,
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, other: Platform | Mapping[str, Any] | None) -> bool:
        """Whether ``other`` (a Platform or an index entry's ``platform`` object) is what
        this platform asks for: without a variant any variant will do, with one it must be
        the same (arm64's v8 counting as none on either side)."""
        if other is None:
            return False
        if not isinstance(other, Platform):
            if not isinstance(other, Mapping):
                return False
            other = Platform.from_json(other)
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        ours = _comparable_variant(self.architecture, self.variant)
        theirs = _comparable_variant(other.architecture, other.variant)
        return ours is None or ours == theirs


def select_platform(
    index: ManifestData | Mapping[str, Any], platform: str | Platform
) -> Descriptor:
    """The image manifest entry of an index for ``platform`` (the first that matches)."""
    wanted = Platform.parse(platform) if isinstance(platform, str) else platform
    if isinstance(index, ManifestData):
        children = index.children()
        where = f"image index {index.digest}"
    else:
        children = [Descriptor.from_json(item) for item in index.get("manifests") or []]
        where = "the image index"
    for child in children:
        if child.media_type in MANIFEST_TYPES and wanted.matches(child.platform):
            return child
    available = sorted(
        {str(Platform.from_json(c.platform)) for c in children if c.platform} - {"unknown/unknown"}
    )
    raise NotFoundError(
        f"{where} has no {wanted} image (it has: {', '.join(available) or 'no platforms'})",
        hint="build for that platform, or pick one of those listed",
    )
