"""``cosgitops release`` and ``cosgitops demo``: thin wrappers over cosgitops.release and
cosgitops.demo."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cosgitops.commands.common import format_option, repo_option
from cosgitops.progress import human_size

_FORMAT_OPTION = format_option("json: the report as one JSON object on stdout.")


@click.command("release")
@click.option(
    "--since", metavar="REF", help="Only derivatives changed since this git ref (default: all)."
)
@click.option("--only", "only", multiple=True, metavar="NAME", help="Only this derivative.")
@click.option("--key", metavar="FILE|env://VAR", help="Sign with this cosign key.")
@click.option("--keyless", is_flag=True, help="Sign keyless through Sigstore (CI OIDC).")
@click.option("--identity-token", metavar="TOKEN", help="OIDC token for --keyless.")
@click.option("--insecure", is_flag=True, help="Plain HTTP to a loopback registry.")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CA bundle for the registry's TLS certificate.",
)
@click.option(
    "--public-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Publish the index here instead of spec.publish.dir.",
)
@repo_option
@_FORMAT_OPTION
def release_command(
    *,
    since: str | None,
    only: tuple[str, ...],
    key: str | None,
    keyless: bool,
    identity_token: str | None,
    insecure: bool,
    ca_file: Path | None,
    public_dir: Path | None,
    repo: Path,
    output_format: str,
) -> None:
    """Build, push, sign and publish every derivative whose version is not published yet.

    Idempotent: re-running on the same commit changes nothing. Exits 1 naming the
    derivatives that failed; the others are published when complete.
    """
    from cosgitops.oci.store import StoreOptions
    from cosgitops.progress import terminal_progress
    from cosgitops.release import release
    from cosgitops.validate import find_repository_root

    report = release(
        find_repository_root(repo),
        since=since,
        only=only,
        key=key,
        keyless=keyless,
        identity_token=identity_token,
        public_dir=public_dir,
        options=StoreOptions(insecure=insecure, ca_file=ca_file),
        progress=terminal_progress(quiet=output_format == "json"),
    )
    if report.development_key is not None:
        click.echo(
            f"note: signed with the DEVELOPMENT key {report.development_key} (password-less, "
            "for one machine); configure spec.signing in cosgitops.yaml for a real fleet",
            err=True,
        )
    if report.publish is not None:
        for note in report.publish.development_notes():
            click.echo(note, err=True)
        for warning in report.publish.warnings:
            click.echo(f"warning: {warning}", err=True)
    if output_format == "json":
        click.echo(json.dumps(report.to_json(), separators=(",", ":")))
    else:
        _print_table(report)
    if not report.ok:
        names = ", ".join(f"{o.name} {o.version}" for o in report.failed)
        click.echo(f"error: release failed for {names}", err=True)
        for outcome in report.failed:
            click.echo(f"  {outcome.name}: {outcome.error}", err=True)
            if outcome.hint:
                click.echo(f"  hint: {outcome.hint}", err=True)
        raise click.exceptions.Exit(1)


def _print_table(report: object) -> None:
    from cosgitops.release import ReleaseReport, boot_test_summary

    assert isinstance(report, ReleaseReport)
    if not report.outcomes:
        click.echo("nothing to release")
        return
    rows = [("DERIVATIVE", "VERSION", "STATUS", "DIGEST", "SIGNATURE", "BOOT TEST", "CHANNELS")]
    for outcome in report.outcomes:
        digest = outcome.image.rsplit("@", 1)[1][:19] if "@" in outcome.image else "-"
        rows.append(
            (
                outcome.name,
                outcome.version,
                outcome.status,
                digest,
                (outcome.signer or "-")[:40],
                boot_test_summary(outcome.boot_test),
                ",".join(outcome.channels) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if report.publish is not None:
        state = "updated" if report.publish.changed else "unchanged"
        click.echo(
            f"index {report.publish.public_dir}: {state} "
            f"(timestamp v{report.publish.timestamp_version})"
        )


@click.command("demo")
@click.argument(
    "directory",
    required=False,
    default="cosgitops-demo",
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--force", is_flag=True, help="Replace DIRECTORY if it exists.")
@click.option(
    "--boot",
    is_flag=True,
    help="The real-OS variant: build a Debian base, write a cOS disk, boot it in QEMU and "
    "upgrade, commit and fall back for real (root, mmdebstrap, QEMU; about 10 minutes).",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="LINE",
    help="With --boot: apt source lines for the base (a local mirror) instead of Debian's.",
)
@click.option(
    "--wheelhouse",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="With --boot: install the agent into the base from this folder of wheels.",
)
@click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default="auto",
    show_default=True,
    help="With --boot: QEMU's accelerator (auto: KVM when it works, else TCG).",
)
@_FORMAT_OPTION
def demo_command(
    *,
    directory: Path,
    force: bool,
    boot: bool,
    mirrors: tuple[str, ...],
    wheelhouse: Path | None,
    accel: str,
    output_format: str,
) -> None:
    """Run the whole commit -> release -> device upgrade -> rollback loop, offline.

    Leaves DIRECTORY/repo (the git repository), DIRECTORY/public (the signed index) and
    DIRECTORY/device (the device root) for inspection. With --boot the device is a QEMU
    guest booted from a cOS disk: DIRECTORY/disk.img and DIRECTORY/serial/ stay too.
    """
    if boot:
        from cosgitops.demoboot import render, run_boot_demo

        say = None if output_format == "json" else click.echo
        booted = run_boot_demo(
            directory,
            force=force,
            narrate=say,
            mirrors=mirrors or None,
            wheelhouse=wheelhouse,
            accel=accel,
        )
        if output_format == "json":
            click.echo(json.dumps(booted.to_json(), separators=(",", ":")))
        else:
            render(booted)(click.echo)
        return
    from cosgitops.demo import run_demo

    narrate = None if output_format == "json" else click.echo
    result = run_demo(directory, force=force, narrate=narrate)
    if output_format == "json":
        click.echo(json.dumps(result.to_json(), separators=(",", ":")))
        return
    click.echo("")
    click.echo(f"done in {result.seconds:.1f}s. Look around:")
    click.echo(f"  {result.repo}     git log, derivatives/, .cosgitops/registry/")
    click.echo(f"  {result.public}   metadata/ (TUF), targets/, channels/ (Elemental)")
    click.echo(f"  {result.device}   cosgitops device status --root {result.device}")
    click.echo(
        f"upgrade 1.0.0 -> 1.1.0 downloaded {human_size(result.upgrade_bytes)} "
        f"of a {human_size(result.image_size)} image"
    )
