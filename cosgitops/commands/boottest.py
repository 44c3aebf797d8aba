"""``cosgitops verify REF --boot-test``: show and check an image's boot attestations
(thin wrappers over cosgitops.boottest)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from cosgitops.boottest.attestation import AttestationReport, AttestationVerdict
    from cosgitops.boottest.predicate import BootTestResult
    from cosgitops.oci.store import StoreOptions
    from cosgitops.signing.policy import VerificationPolicy


def _size(value: int) -> str:
    from cosgitops.progress import human_size

    return human_size(value)


def echo_table(rows: list[tuple[str, ...]], indent: str = "  ") -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo((indent + "  ".join(cells)).rstrip())


def echo_result(result: BootTestResult, indent: str = "  ") -> None:
    """The steps of a boot test and where it ran, for people."""
    from cosgitops.boottest.predicate import steps_table

    candidate = result.candidate
    origin = result.from_release
    came = "a fresh install" if origin is None else f"{origin.version} ({origin.digest[:19]})"
    channel = f" on channel {result.channel}" if result.channel else ""
    what = f"{result.derivative} {candidate.version} ({candidate.digest[:19]})"
    click.echo(f"{indent}{what} from {came}{channel}")
    rows: list[tuple[str, ...]] = [("STEP", "OUTCOME", "TIME", "DETAIL")]
    rows += steps_table(result.steps)
    echo_table(rows, indent)
    finished = f", finished {result.finished}" if result.finished else ""
    click.echo(f"{indent}total {result.duration_seconds:.1f}s{finished}")
    environment = result.environment
    parts = [
        f"{key}: {environment[key]}"
        for key in ("qemu", "firmware", "accelerator")
        if key in environment
    ]
    if parts:
        click.echo(f"{indent}{'; '.join(str(part) for part in parts)}")
    for log in result.serial_logs:
        click.echo(f"{indent}serial log {log.name}: {log.digest} ({_size(log.size)})")


def _echo_verdict(verdict: AttestationVerdict, *, matched: bool) -> None:
    if matched:
        click.echo(f"  matched: attestation {verdict.digest}, signed by {verdict.signer}")
    elif verdict.signed:
        click.echo(f"  not accepted: attestation {verdict.digest} (signed by {verdict.signer}):")
        click.echo(f"    {'; '.join(verdict.reasons)}")
    else:
        click.echo(f"  not accepted: attestation {verdict.digest}: {'; '.join(verdict.reasons)}")
    if verdict.result is not None:
        echo_result(verdict.result, indent="    ")


def echo_report(report: AttestationReport) -> None:
    best = report.best
    if best is None:
        found = len(report.verdicts)
        click.echo(f"Boot test of {report.reference}: NOT PROVEN ({found} attestation(s) found)")
    else:
        click.echo(f"Boot test of {report.reference}: {best.result.result if best.result else '?'}")
        _echo_verdict(best, matched=True)
    for verdict in report.verdicts:
        if verdict is not best:
            _echo_verdict(verdict, matched=False)


def verify_boot_test(
    reference: str,
    policy: VerificationPolicy,
    *,
    options: StoreOptions,
    output_format: str,
) -> None:
    """The image signature, then its boot attestations, under ``policy``; exit 1 unless
    both the signature and a passing attestation are accepted."""
    from cosgitops.boottest.attestation import verify_attestations
    from cosgitops.signing.image import resolve_reference, verify_image

    resolved = resolve_reference(reference, options)
    signature = verify_image(resolved.store, resolved.digest, policy, limits=options.limits)
    report = verify_attestations(resolved.store, resolved.digest, policy, limits=options.limits)
    if output_format == "json":
        out: dict[str, Any] = signature.to_json()
        out["bootTest"] = report.to_json()
        click.echo(json.dumps(out, indent=2))
        if not (signature.ok and report.ok):
            sys.exit(1)
        return
    matched = signature.require()
    click.echo(f"Verified {signature.reference}")
    click.echo(f"  signature: {matched.format} {matched.location}, signed by {matched.signer}")
    echo_report(report)
    if not report.ok:
        from cosgitops.errors import VerificationError

        raise VerificationError(report.failure_message(), hint=report.failure_hint())
