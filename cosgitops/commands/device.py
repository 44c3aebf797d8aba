"""``cosgitops device ...``: the on-device agent, a thin wrapper over cosgitops.device."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cosgitops.errors import UsageError
from cosgitops.progress import human_size

ROOT_ENV = "COSGITOPS_DEVICE_ROOT"


def _root_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--root",
        required=True,
        envvar=ROOT_ENV,
        type=click.Path(file_okay=False, path_type=Path),
        help=f"The device root (also from ${ROOT_ENV}).",
    )(function)


def _format_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json for machines.",
    )(function)


def _medium_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--medium",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="Take the index and the images from this update medium (a folder holding "
        "public/ and images/) instead of the configured index and registry.",
    )(function)


def _reboot_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--reboot",
        is_flag=True,
        help="On a system booted from a cosgitops disk: reboot when the outcome asks for it.",
    )(function)


def _agent(root: Path, *, quiet: bool = True, medium: Path | None = None) -> Any:
    from cosgitops.cli import set_crash_dir
    from cosgitops.config import DEFAULT_LIMITS
    from cosgitops.device.agent import DeviceAgent
    from cosgitops.device.medium import UpdateMedium
    from cosgitops.progress import terminal_progress

    agent = DeviceAgent(
        root,
        progress=terminal_progress(quiet=quiet),
        medium=UpdateMedium.at(medium) if medium is not None else None,
    )
    # a crash on a device is reported inside its root, where the admin looks
    if agent.device.agent_dir.is_dir() and not agent.device.agent_dir.is_symlink():
        set_crash_dir(
            str(agent.device.agent_dir / "crash"), keep=DEFAULT_LIMITS.device_crash_reports_kept
        )
    return agent


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def _short(digest: str | None) -> str:
    return (digest or "")[:19]


@click.group("device")
def device_group() -> None:
    """The on-device agent: verified A/B upgrades of a device root, with boot assessment.

    \b
    A device root mirrors the cOS layout: state/ (active and passive slots),
    recovery/, oem/ and persistent/ (never touched), agent/ (config, trusted index
    metadata, layer cache, rejected releases).
    """


# ---------------------------------------------------------------- set-up


def _setup_options(function: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--index",
            "index_url",
            required=True,
            help="Where the release index is published: http(s):// URL, file:// or a folder.",
        ),
        click.option(
            "--trusted-root",
            required=True,
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="The index's root metadata to trust (public/metadata/1.root.json).",
        ),
        click.option("--derivative", required=True, help="The derivative this device runs."),
        click.option("--channel", default="stable", show_default=True, help="Channel to follow."),
        click.option(
            "--key",
            "keys",
            multiple=True,
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="cosign public key trusted to sign images (repeatable).",
        ),
        click.option("--certificate-identity", "identity", help="Keyless signer identity."),
        click.option("--certificate-oidc-issuer", "issuer", help="Keyless signer's OIDC issuer."),
        click.option(
            "--sigstore-trusted-root",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="Sigstore trusted root JSON for keyless signatures.",
        ),
        click.option(
            "--require-boot-test",
            is_flag=True,
            help="Refuse releases without a passing boot attestation signed by a trusted signer.",
        ),
        click.option(
            "--signed-identity",
            type=click.Choice(["repository", "digest"]),
            default="repository",
            show_default=True,
            help="What a signature must bind: the release's repository too, or the digest only.",
        ),
        click.option("--platform", help="OS/ARCH of the device (default: this machine)."),
        click.option(
            "--slot-format",
            type=click.Choice(["dir", "squashfs"]),
            default="dir",
            show_default=True,
            help="Store slots as folders or squashfs images.",
        ),
        click.option(
            "--slot-backend",
            type=click.Choice(["folder", "cos-disk"]),
            default="folder",
            show_default=True,
            help="folder: a device root on disk; cos-disk: a system booted from a cosgitops "
            "disk (squashfs images switched by GRUB).",
        ),
        click.option(
            "--apply",
            "apply_method",
            type=click.Choice(["builtin", "elemental"]),
            default="builtin",
            show_default=True,
            help="builtin A/B slots, or hand the verified image to `elemental upgrade`.",
        ),
        click.option(
            "--insecure-registry",
            is_flag=True,
            help="Plain HTTP to the registry (loopback hosts only).",
        ),
        click.option(
            "--registry-ca",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="CA bundle for the registry's TLS.",
        ),
        click.option(
            "--index-ca",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="CA bundle for an https index.",
        ),
        click.option(
            "--check",
            "checks",
            multiple=True,
            metavar="NAME=COMMAND",
            help="Health check run at boot in the active slot (repeatable).",
        ),
        click.option(
            "--check-timeout",
            type=float,
            default=60.0,
            show_default=True,
            help="Seconds each health check may take.",
        ),
        click.option(
            "--max-attempts",
            type=click.IntRange(1, 100),
            default=3,
            show_default=True,
            help="Failed boots before rolling back.",
        ),
        click.option(
            "--machine-id", help="Seed of the phased-rollout wariness (default: /etc/machine-id)."
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _setup_from(options: dict[str, Any]) -> Any:
    from cosgitops.device.agent import DeviceSetup
    from cosgitops.device.config import HealthCheck, TrustedIdentity

    checks = []
    for text in options["checks"]:
        name, sep, command = text.partition("=")
        if not sep or not name.strip() or not command.strip():
            raise UsageError(
                f"--check {text!r} is not NAME=COMMAND", hint="e.g. --check 'web=curl -f localhost'"
            )
        checks.append(HealthCheck(name.strip(), command.strip(), options["check_timeout"]))
    identities: tuple[TrustedIdentity, ...] = ()
    if options["identity"] or options["issuer"]:
        if not (options["identity"] and options["issuer"]):
            raise UsageError("--certificate-identity and --certificate-oidc-issuer go together")
        identities = (TrustedIdentity(identity=options["identity"], issuer=options["issuer"]),)
    if not options["keys"] and not identities:
        raise UsageError(
            "the device must trust someone to sign its images",
            hint="pass --key cosign.pub, or --certificate-identity with --certificate-oidc-issuer",
        )
    return DeviceSetup(
        index_url=options["index_url"],
        derivative=options["derivative"],
        trusted_root=options["trusted_root"],
        channel=options["channel"],
        keys=tuple(options["keys"]),
        identities=identities,
        sigstore_trusted_root=options["sigstore_trusted_root"],
        require_boot_test=options["require_boot_test"],
        signed_identity=options["signed_identity"],
        platform=options["platform"],
        slot_format=options["slot_format"],
        slot_backend=options["slot_backend"],
        apply_method=options["apply_method"],
        registry_insecure=options["insecure_registry"],
        registry_ca=options["registry_ca"],
        index_ca=options["index_ca"],
        checks=tuple(checks),
        max_attempts=options["max_attempts"],
        machine_id=options["machine_id"],
    )


@device_group.command("init")
@_root_option
@_setup_options
def init_command(root: Path, **options: Any) -> None:
    """Set up a device root (config, trusted index root) without installing a release."""
    config = _agent(root).init(_setup_from(options))
    click.echo(f"device root {root} follows {config.derivative} on channel {config.channel}")
    click.echo("next: cosgitops device upgrade --root " + str(root))


@device_group.command("install")
@_root_option
@_setup_options
@click.option("--version", help="Install this version instead of the newest on the channel.")
@click.option("--no-recovery", is_flag=True, help="Do not also install it as the recovery slot.")
@_format_option
def install_command(
    root: Path, version: str | None, no_recovery: bool, output_format: str, **options: Any
) -> None:
    """Set up a device root and install its first release (active and recovery slots)."""
    agent = _agent(root, quiet=output_format == "json")
    report = agent.install(_setup_from(options), version=version, recovery=not no_recovery)
    _render_upgrade(report, output_format)


# ---------------------------------------------------------------- everyday commands


@device_group.command("status")
@_root_option
@click.option("--verify", is_flag=True, help="Also re-hash every slot against its record.")
@_format_option
def status_command(root: Path, verify: bool, output_format: str) -> None:
    """Slots, versions, digests, boot assessment and rejected releases."""
    status = _agent(root).status(verify=verify)
    data = status.to_json()
    from cosgitops.stages.report import load_records

    data["stages"] = load_records()  # the last run of each cloud-config stage on this system
    if output_format == "json":
        _emit_json(data)
    else:
        who = f" ({data['derivative']}, channel {data['channel']})" if data["derivative"] else ""
        click.echo(f"device {data['root']}{who}")
        for name in ("active", "passive", "recovery"):
            slot = data[name]
            if slot is None:
                click.echo(f"  {name:<9} -")
                continue
            note = ""
            if name == "active" and data["pending"]:
                note = (
                    f"  (awaiting boot assessment, {data['bootAttempts']} of "
                    f"{data['maxAttempts']} boots used)"
                )
            if data["verified"] and name in data["verified"]:
                verdict = data["verified"][name]
                note += "  verified" if verdict is True else f"  NOT VERIFIED: {verdict}"
            click.echo(f"  {name:<9} {slot['version']:<12} {_short(slot['digest'])}{note}")
        for item in data["rejected"]:
            click.echo(
                f"  rejected  {item['version']:<12} {_short(item['digest'])}  {item['reason']}"
            )
        failed = data["failed"]
        if failed:
            click.echo(
                f"  the last {failed['operation']} of {failed['version'] or '?'} failed "
                f"({failed['at']}): {failed['message']}"
            )
            if failed["hint"]:
                click.echo(f"    hint: {failed['hint']}")
        interrupted = data["interrupted"]
        if interrupted and not (failed and failed["at"] >= interrupted["started"]):
            click.echo(
                f"  an interrupted {interrupted['operation']} of {interrupted['version']} "
                "was cleaned up; run it again"
            )
        for problem in data["problems"]:
            click.echo(f"  problem: {problem}")
        if data["busy"]:
            click.echo("  another agent is working on this device right now")
        for stage, run in data["stages"].items():
            click.echo(f"  stage     {stage:<12} {_stage_summary(run)}")
    if verify and status.verified and any(v is not True for v in status.verified.values()):
        sys.exit(1)


def _stage_summary(run: dict[str, Any]) -> str:
    if "unreadable" in run:
        return f"record unreadable: {run['unreadable']}"
    counts = ", ".join(f"{n} {status}" for status, n in run["counts"].items() if n)
    summary = f"{'ok' if run['ok'] else 'FAILED'} at {run['started']} ({counts or 'no steps'})"
    return summary + "".join(f"\n              {error}" for error in run["errors"][:3])


@device_group.command("check")
@_root_option
@click.option("--version", help="Consider only this version.")
@click.option("--force", is_flag=True, help="Allow downgrades, yanked or rejected releases.")
@_format_option
def check_command(root: Path, version: str | None, force: bool, output_format: str) -> None:
    """Refresh the index and say what an upgrade would do, and why."""
    report = _agent(root).check(version=version, force=force)
    if output_format == "json":
        _emit_json(report.to_json())
        return
    click.echo(report.choice.summary)
    for verdict in report.choice.verdicts:
        mark = "+" if verdict.eligible else "-"
        why = f"  ({'; '.join(verdict.reasons)})" if verdict.reasons else ""
        click.echo(f"  {mark} {verdict.version}{why}")
    for problem in report.problems:
        click.echo(f"  ! {problem}")
    click.echo(
        f"index: {report.index.requests} request(s), {report.index.bytes} bytes, "
        f"{report.seconds:.2f}s"
    )


def _signer(signer: str) -> str:
    # key fingerprints are 64 hex characters; 16 identify a key for a person
    is_fingerprint = len(signer) == 64 and all(c in "0123456789abcdef" for c in signer)
    return f"key {signer[:16]}" if is_fingerprint else signer


def _render_upgrade(report: Any, output_format: str) -> None:
    if output_format == "json":
        _emit_json(report.to_json())
        return
    if report.installed is None:
        click.echo(report.summary)
        return
    where = "recovery slot" if report.slot == "recovery" else "active slot"
    click.echo(
        f"{report.action}: {report.installed.version} ({_short(report.installed.digest)}) "
        f"is now the {where}; signed by {_signer(report.signer)}"
    )
    click.echo(
        f"downloaded {len(report.cache.downloaded)} layer(s), "
        f"{human_size(report.cache.bytes_downloaded)} of {human_size(report.image_bytes)}; "
        f"reused {len(report.cache.reused)} cached layer(s)"
    )
    if report.pending:
        click.echo("boot assessment pending: run `cosgitops device boot-check` after reboot")


@device_group.command("upgrade")
@_root_option
@click.option("--version", help="Move to exactly this version.")
@click.option("--force", is_flag=True, help="Allow downgrades, yanked or rejected releases.")
@click.option("--recovery", is_flag=True, help="Upgrade the recovery slot instead.")
@_medium_option
@_reboot_option
@_format_option
def upgrade_command(
    *,
    root: Path,
    version: str | None,
    force: bool,
    recovery: bool,
    medium: Path | None,
    reboot: bool,
    output_format: str,
) -> None:
    """Verify and apply the release the policy chooses (download only missing layers)."""
    agent = _agent(root, quiet=output_format == "json", medium=medium)
    report = agent.upgrade(version=version, force=force, recovery=recovery)
    _render_upgrade(report, output_format)
    if reboot and report.installed is not None and not recovery:
        agent.reboot()


@device_group.command("watch")
@_root_option
@click.option(
    "--interval",
    type=float,
    help="Seconds between looks (default: the config's updates.intervalSeconds).",
)
@click.option("--once", is_flag=True, help="Look once, then exit.")
@click.option("--no-reboot", is_flag=True, help="Apply, but do not reboot into the release.")
@_medium_option
def watch_command(
    root: Path, interval: float | None, once: bool, no_reboot: bool, medium: Path | None
) -> None:
    """The update service: look for releases (the index, or an update medium attached to
    a booted device), apply them and reboot into them. Runs until stopped."""
    agent = _agent(root, medium=medium)
    report = agent.watch(interval=interval, once=once, reboot=False if no_reboot else None)
    if once and report is not None:
        _render_upgrade(report, "text")


@device_group.command("reboot")
@_root_option
@click.option("--recovery", is_flag=True, help="Boot the recovery image once.")
def reboot_command(root: Path, recovery: bool) -> None:
    """Reboot a system booted from a cosgitops disk (the recovery image once, with
    --recovery)."""
    _agent(root).reboot(recovery=recovery)


@device_group.command("boot-check")
@_root_option
@_reboot_option
@_format_option
def boot_check_command(root: Path, reboot: bool, output_format: str) -> None:
    """Run the health checks of a pending release: commit, count a failure, or roll back.

    Exit 1 when a check failed (whether or not the device rolled back).
    """
    agent = _agent(root)
    report = agent.boot_check()
    if output_format == "json":
        _emit_json(report.to_json())
    else:
        for check in report.checks:
            click.echo(f"  {check.describe()}")
        version = report.release.version if report.release else "?"
        messages = {
            "nothing-pending": f"{version} is committed; nothing to assess",
            "committed": f"{version} passed its health checks and is committed",
            "retry": f"{version} failed boot {report.attempts} of {report.max_attempts}",
            "rolled-back": f"{version} failed {report.attempts} boots: rolled back to "
            f"{report.rolled_back_to.version if report.rolled_back_to else '?'}; "
            f"{version} will not be offered again",
            "fell-back": report.message,
            "recovery": report.message,
            "reboot-needed": report.message,
        }
        click.echo(messages.get(report.outcome) or report.message or report.outcome)
        if report.message and report.outcome in ("retry", "rolled-back"):
            click.echo(report.message)
    if reboot and report.needs_reboot:
        agent.reboot()
    if not report.ok:
        sys.exit(1)


@device_group.command("rollback")
@_root_option
@_format_option
def rollback_command(root: Path, output_format: str) -> None:
    """Make the passive slot active again; the current release is not offered again."""
    report = _agent(root).rollback()
    if output_format == "json":
        _emit_json(report.to_json())
    else:
        left = report.left.version if report.left else "?"
        click.echo(f"rolled back from {left} to {report.active.version}")


@device_group.command("reset")
@_root_option
@_reboot_option
@_format_option
def reset_command(root: Path, reboot: bool, output_format: str) -> None:
    """Restore the active slot from the recovery slot (oem/ and persistent/ are kept)."""
    agent = _agent(root)
    report = agent.reset()
    if reboot:
        click.echo(f"reset to {report.active.version}; rebooting")
        agent.reboot()
    if output_format == "json":
        _emit_json(report.to_json())
    else:
        click.echo(f"reset: active slot restored from recovery ({report.active.version})")


# ---------------------------------------------------------------- cloud-config stages

from cosgitops.commands.stages import run_stage_command  # noqa: E402

device_group.add_command(run_stage_command)
