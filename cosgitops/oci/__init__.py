"""OCI references, the image-layout store and the registry client.

Both stores implement :class:`cosgitops.oci.store.ImageStore`, so builders, signers and
the device agent work the same against a registry and against an OCI layout on disk.
Use :func:`cosgitops.oci.open_store` to get the right one for a reference.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cosgitops.oci.reference import Reference
    from cosgitops.oci.store import ImageStore, StoreOptions


def open_store(reference: Reference | str, options: StoreOptions | None = None) -> ImageStore:
    """The store for a reference's repository: an OCI layout for ``oci:PATH`` (relative
    paths are taken from the current directory), else a registry client.

    The reference's tag and digest are ignored; pass ``reference.identifier`` to the
    store's methods.
    """
    from cosgitops.oci.reference import parse_reference
    from cosgitops.oci.store import StoreOptions

    if isinstance(reference, str):
        reference = parse_reference(reference)
    options = options or StoreOptions()
    if reference.is_oci_layout:
        from cosgitops.oci.layout import OCILayoutStore

        return OCILayoutStore(os.path.abspath(reference.repository), limits=options.limits)
    from cosgitops.oci.registry import RegistryStore

    return RegistryStore(reference, options)
