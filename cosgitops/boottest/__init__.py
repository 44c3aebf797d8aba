"""Releases proven to boot: the boot test, its signed attestation, and the gates.

* :mod:`~cosgitops.boottest.predicate`: the in-toto statement (predicate type
  ``https://cosgitops.dev/boot-test/v1``) and its parser; pure.
* :mod:`~cosgitops.boottest.attestation`: signing an attestation the way images are
  signed, attaching it to the image as an OCI referrer, finding and judging it.
* :mod:`~cosgitops.boottest.gate`: the release gate (``spec.release.bootTest:
  required``) and the device's (``requireBootTest``).

Importing this package is cheap: the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PREDICATE_TYPE": "cosgitops.boottest.predicate",
    "BootTestResult": "cosgitops.boottest.predicate",
    "ImageRef": "cosgitops.boottest.predicate",
    "SerialLog": "cosgitops.boottest.predicate",
    "StepResult": "cosgitops.boottest.predicate",
    "ARTIFACT_TYPE": "cosgitops.boottest.attestation",
    "AttachedAttestation": "cosgitops.boottest.attestation",
    "AttestationReport": "cosgitops.boottest.attestation",
    "AttestationVerdict": "cosgitops.boottest.attestation",
    "attach_attestation": "cosgitops.boottest.attestation",
    "find_attestations": "cosgitops.boottest.attestation",
    "verify_attestation": "cosgitops.boottest.attestation",
    "verify_attestations": "cosgitops.boottest.attestation",
    "boot_test_for_release": "cosgitops.boottest.gate",
    "require_boot_attestation": "cosgitops.boottest.gate",
}

__all__ = [
    "ARTIFACT_TYPE",
    "PREDICATE_TYPE",
    "AttachedAttestation",
    "AttestationReport",
    "AttestationVerdict",
    "BootTestResult",
    "ImageRef",
    "SerialLog",
    "StepResult",
    "attach_attestation",
    "boot_test_for_release",
    "find_attestations",
    "require_boot_attestation",
    "verify_attestation",
    "verify_attestations",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
