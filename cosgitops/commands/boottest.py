"""``cosgitops boot-test NAME`` and ``cosgitops verify REF --boot-test``: run a boot test,
show and check an image's boot attestations (thin wrappers over cosgitops.boottest)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cosgitops.commands.common import format_option, repo_option

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


# ---------------------------------------------------------------- boot-test NAME


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def boot_test_markdown(report: Any) -> str:
    """The summary table for ``$GITHUB_STEP_SUMMARY``."""
    lines = [f"## cosgitops boot-test {report.derivative} {report.version}", ""]
    if report.result is None:
        lines.append(report.note or report.status)
        return "\n".join(lines) + "\n"
    origin = report.result.from_release
    came = "a fresh install" if origin is None else f"{origin.version}"
    lines += [f"**{report.status}** (from {came})", "", "| step | outcome | time | detail |"]
    lines.append("|---|---|---|---|")
    for step in report.result.steps:
        detail = step.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {step.name} | {step.outcome} | {_duration(step.duration_seconds)} | {detail} |"
        )
    if report.attestation is not None:
        lines += ["", f"attestation `{report.attestation.digest}`"]
    return "\n".join(lines) + "\n"


def _write_step_summary(report: Any) -> None:
    import os

    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(boot_test_markdown(report))
    except OSError as exc:
        from cosgitops.errors import UsageError

        raise UsageError(
            f"cannot append to GITHUB_STEP_SUMMARY {path}: {exc.strerror}",
            hint="unset GITHUB_STEP_SUMMARY outside GitHub Actions",
        ) from exc


@click.command("boot-test")
@click.argument("name")
@click.option(
    "--image",
    metavar="REF",
    help="Test this built image (NAME@DIGEST, oci:PATH:TAG) instead of building it.",
)
@click.option(
    "--from",
    "from_version",
    metavar="VERSION",
    help="Upgrade from this published version (default: what the channel's devices run).",
)
@click.option(
    "--accelerator",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default="auto",
    show_default=True,
    help="auto: KVM when /dev/kvm works, TCG otherwise.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Disks and serial logs go to DIR/NAME (default: .cosgitops/boot-test).",
)
@click.option(
    "--boot-timeout",
    type=click.FloatRange(min=10),
    default=900.0,
    show_default=True,
    metavar="SECONDS",
    help="How long one power-on may take to reach the point a step waits for.",
)
@click.option(
    "--no-attest",
    is_flag=True,
    help="Only run the test: sign and push nothing (pull requests).",
)
@click.option(
    "--skip-published",
    is_flag=True,
    help="Do nothing (exit 0) when this version is already published.",
)
@click.option("--key", metavar="FILE|env://VAR", help="Sign the attestation with this key.")
@click.option("--keyless", is_flag=True, help="Sign keyless through Sigstore (CI OIDC).")
@click.option("--identity-token", metavar="TOKEN", help="OIDC token for --keyless.")
@click.option(
    "--public-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Read the published index here instead of spec.publish.dir.",
)
@click.option("--insecure", is_flag=True, help="Plain HTTP to a loopback registry.")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CA bundle for the registry's TLS certificate.",
)
@repo_option
@format_option("json: the report (steps, times, attestation) as one JSON object on stdout.")
def boot_test_command(
    *,
    name: str,
    image: str | None,
    from_version: str | None,
    accelerator: str,
    work_dir: Path | None,
    boot_timeout: float,
    no_attest: bool,
    skip_published: bool,
    key: str | None,
    keyless: bool,
    identity_token: str | None,
    public_dir: Path | None,
    insecure: bool,
    ca_file: Path | None,
    repo: Path,
    output_format: str,
) -> None:
    """Boot NAME's candidate in QEMU: upgrade from the release its devices run today,
    run its health checks, and prove it falls back by itself when it fails.

    Prints each step while it runs and a table at the end; attaches a signed boot
    attestation to the image (unless --no-attest). Exits 1 naming the failed step and
    its serial log.
    """
    from cosgitops.boottest.run import BootTestOptions, boot_test
    from cosgitops.oci.store import StoreOptions
    from cosgitops.progress import terminal_progress
    from cosgitops.validate import find_repository_root

    if key and keyless:
        from cosgitops.errors import UsageError

        raise UsageError("pass at most one of --key and --keyless")
    report = boot_test(
        find_repository_root(repo),
        name,
        BootTestOptions(
            image=image,
            from_version=from_version,
            accelerator=accelerator,  # type: ignore[arg-type]
            work_dir=work_dir,
            boot_timeout=boot_timeout,
            attest=not no_attest,
            skip_published=skip_published,
            key=key,
            keyless=keyless,
            identity_token=identity_token,
            public_dir=public_dir,
        ),
        store_options=StoreOptions(insecure=insecure, ca_file=ca_file),
        progress=terminal_progress(quiet=output_format == "json"),
    )
    _write_step_summary(report)
    if report.development_key is not None and report.attestation is not None:
        click.echo(
            f"note: attestation signed with the DEVELOPMENT key {report.development_key}",
            err=True,
        )
    if output_format == "json":
        click.echo(json.dumps(report.to_json(), separators=(",", ":")))
    else:
        _print_boot_test(report)
    if not report.ok:
        step = report.failed_step
        where = f" at step {step!r}" if step else ""
        click.echo(
            f"error: boot test of {report.derivative} {report.version} failed{where}: "
            f"{report.error}",
            err=True,
        )
        if report.failed_log is not None:
            click.echo(f"  serial log: {report.failed_log}", err=True)
        if report.hint:
            click.echo(f"hint: {report.hint}", err=True)
        raise click.exceptions.Exit(1)


def _print_boot_test(report: Any) -> None:
    from cosgitops.boottest.predicate import steps_table

    if report.result is None:
        click.echo(f"{report.derivative} {report.version}: {report.status} ({report.note})")
        return
    result = report.result
    origin = result.from_release
    came = "a fresh install" if origin is None else f"{origin.version}"
    click.echo(
        f"boot-test {report.derivative} {report.version} from {came}: "
        f"{report.status.upper()} ({_duration(result.duration_seconds)})"
    )
    rows: list[tuple[str, ...]] = [("STEP", "OUTCOME", "TIME", "DETAIL")]
    rows += steps_table(result.steps)
    echo_table(rows, indent="")
    if report.attestation is not None:
        click.echo(
            f"attestation {report.attestation.digest} ({report.attestation.result.result}) "
            f"attached to {report.attestation.reference}, signed by {report.attestation.signer}"
        )
    click.echo(f"serial logs: {report.work_dir / 'serial'}")
