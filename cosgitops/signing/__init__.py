"""Image signatures in cosign's formats.

* :mod:`cosgitops.signing.keys`: cosign-compatible key files (generate, load, fingerprint).

Submodules import their heavy dependencies lazily; importing this package is cheap.
"""
