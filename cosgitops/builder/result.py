"""What a build returns, whichever builder made the image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cosgitops.model import Layer, PlatformImage
from cosgitops.oci.store import Descriptor

BuilderName = Literal["oci", "docker"]


@dataclass(frozen=True)
class BuildResult:
    derivative: str
    version: str
    builder: BuilderName
    name: str  # the repository the image is in (registry/repo or oci:PATH)
    digest: str  # manifest digest, or the index digest for several platforms
    media_type: str
    tag: str
    platforms: tuple[PlatformImage, ...]  # per platform: manifest digest and all layers
    new_layers: tuple[Descriptor, ...]  # the layers this build made (not the base's)
    bytes_uploaded: int
    bytes_downloaded: int
    created: str  # RFC 3339
    revision: str  # git commit
    base: str | None = None  # the base, pinned by digest, when there is one

    @property
    def reference(self) -> str:
        """``NAME@sha256:…``: what is signed, published and applied."""
        return f"{self.name}@{self.digest}"

    @property
    def size(self) -> int:
        return sum(platform.size for platform in self.platforms)

    def to_json(self) -> dict[str, Any]:
        return {
            "derivative": self.derivative,
            "version": self.version,
            "builder": self.builder,
            "image": self.reference,
            "name": self.name,
            "digest": self.digest,
            "mediaType": self.media_type,
            "tag": self.tag,
            "platforms": [platform.to_json() for platform in self.platforms],
            "newLayers": [layer.to_json() for layer in self.new_layers],
            "bytesUploaded": self.bytes_uploaded,
            "bytesDownloaded": self.bytes_downloaded,
            "created": self.created,
            "revision": self.revision,
            "base": self.base,
        }


def model_layers(descriptors: tuple[Descriptor, ...] | list[Descriptor]) -> tuple[Layer, ...]:
    return tuple(Layer(d.digest, d.size, d.media_type) for d in descriptors)
