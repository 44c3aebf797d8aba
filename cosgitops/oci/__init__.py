"""OCI references, the image-layout store and the registry client.

Both stores implement :class:`cosgitops.oci.store.ImageStore`, so builders, signers and
the device agent work the same against a registry and against an OCI layout on disk.
Use :func:`cosgitops.oci.open_store` to get the right one for a reference.
"""
