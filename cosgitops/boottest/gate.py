"""The two gates a boot attestation opens.

* Publishing (:func:`boot_test_for_release`): a release names the passing, trusted
  attestation of its image when there is one; with ``spec.release.bootTest: required``
  there must be one, or the derivative is refused.
* The device (:func:`require_boot_attestation`): with ``requireBootTest`` the agent
  refuses a release whose signed release manifest names no attestation, or names one
  that is missing, untrusted, for another digest, modified or failing. It reads the
  attestation from the registry (or layout) by the digest the manifest names and judges
  it under the same policy as the image signature, before anything is downloaded.
"""

from __future__ import annotations

from cosgitops.boottest.attestation import (
    AttestationVerdict,
    verify_attestation,
    verify_attestations,
)
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import PublishError, VerificationError
from cosgitops.model import BootTestRef, Derivative, ReleaseManifest
from cosgitops.oci.store import ImageStore
from cosgitops.signing.policy import VerificationPolicy


def boot_test_for_release(
    store: ImageStore,
    digest: str,
    derivative: Derivative,
    policy: VerificationPolicy,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> BootTestRef | None:
    """The attestation the release of ``derivative`` at ``digest`` names, or None.
    Raises :class:`PublishError` when the derivative requires one and none is accepted."""
    report = verify_attestations(store, digest, policy, limits=limits)
    best = report.best
    if best is not None:
        return best.ref()
    if not derivative.release.boot_test_required:
        return None
    raise PublishError(
        f"{derivative.name} {derivative.version} requires a passing boot test "
        f"(spec.release.bootTest: required): {report.failure_message()}",
        hint=f"run `cosgitops boot-test {derivative.name}` and fix what it reports; "
        f"{report.failure_hint()}",
    )


def require_boot_attestation(
    store: ImageStore,
    manifest: ReleaseManifest,
    policy: object,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> AttestationVerdict:
    """The accepted attestation the release manifest names, or :class:`VerificationError`."""
    assert isinstance(policy, VerificationPolicy)
    release = f"release {manifest.version} ({manifest.digest})"
    named = manifest.boot_test
    if named is None:
        raise VerificationError(
            f"{release} names no boot attestation, and this device requires a passing one "
            "(requireBootTest)",
            hint="publish releases that passed `cosgitops boot-test` (spec.release.bootTest: "
            "required); nothing was downloaded or applied",
        )
    verdict = verify_attestation(store, manifest.digest, named.attestation, policy, limits=limits)
    if not verdict.accepted:
        raise VerificationError(
            f"{release}: its boot attestation {named.attestation} is refused: "
            + "; ".join(verdict.reasons),
            hint=f"this device accepts attestations signed by {policy.describe()}; "
            "nothing was downloaded or applied",
        )
    return verdict
