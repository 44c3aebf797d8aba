"""Where things live in a device root (see docs/formats.md, "The device root")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DeviceRoot:
    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def recovery_dir(self) -> Path:
        return self.root / "recovery"

    @property
    def oem_dir(self) -> Path:
        return self.root / "oem"

    @property
    def persistent_dir(self) -> Path:
        return self.root / "persistent"

    @property
    def agent_dir(self) -> Path:
        return self.root / "agent"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def config_file(self) -> Path:
        return self.agent_dir / "config.yaml"

    @property
    def metadata_dir(self) -> Path:
        return self.agent_dir / "metadata"

    @property
    def blobs_dir(self) -> Path:
        return self.agent_dir / "blobs"

    @property
    def releases_dir(self) -> Path:
        """Release manifests downloaded through TUF (verified target files)."""
        return self.agent_dir / "releases"

    @property
    def rejected_file(self) -> Path:
        return self.agent_dir / "rejected.json"

    @property
    def machine_id_file(self) -> Path:
        return self.agent_dir / "machine-id"

    @property
    def lock_file(self) -> Path:
        return self.agent_dir / "lock"

    @property
    def tmp_dir(self) -> Path:
        return self.agent_dir / "tmp"

    def partition(self, name: str) -> Path:
        """``state`` holds active and passive, ``recovery`` the recovery slot."""
        return self.recovery_dir if name == "recovery" else self.state_dir
