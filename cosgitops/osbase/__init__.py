"""Bootable OS bases defined in Git (``bases/<name>/base.yaml``, kind: Base).

:func:`~cosgitops.osbase.build.build_base` builds one with mmdebstrap into an OCI image
that derivatives name as ``spec.base``. The image carries the cosgitops boot integration
(``overlay/``: the initramfs boot script, GRUB's configuration, the systemd units) and
the agent itself, so a derivative built on it boots from a cOS-layout disk, switches
between its A/B images through GRUB and falls back by itself.
"""
