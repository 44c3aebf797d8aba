"""Registry client for the distribution API v2 (being written)."""

from __future__ import annotations

from cosgitops.errors import UsageError
from cosgitops.oci.reference import Reference
from cosgitops.oci.store import StoreOptions, TransferStats


class RegistryStore:
    def __init__(self, reference: Reference, options: StoreOptions | None = None) -> None:
        self.reference = reference
        self.stats = TransferStats()
        raise UsageError("the registry client is not available yet")
