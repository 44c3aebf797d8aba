"""The device agent: verified A/B upgrades of a device root, with boot assessment.

``cosgitops.device.agent`` is the entry point (status, check, upgrade, rollback,
boot_check, reset, install); the other modules each do one job and are usable alone.
"""
