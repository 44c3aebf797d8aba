"""``cosgitops device run-stage``: apply one cloud-config stage, a thin wrapper over
cosgitops.stages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

_MARK = {"applied": "+", "unchanged": "=", "skipped": "~", "filtered": "-", "failed": "!"}


@click.command("run-stage")
@click.argument("stage")
@click.option(
    "--root",
    default="/",
    show_default=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The system root to apply it to: files under it, commands and users inside "
    "`chroot ROOT` (this is not the device root of the other device commands).",
)
@click.option(
    "--config-dir",
    "config_dirs",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Also read the cloud-config files in this folder (or this file), after "
    "/system/oem, /oem and /usr/local/cloud-config of the root (repeatable).",
)
@click.option(
    "--only-config-dirs",
    is_flag=True,
    help="Read only the --config-dir folders, not the root's own.",
)
@click.option(
    "--disk",
    "disks",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A disk or disk image where layout steps look for partition labels (repeatable).",
)
@click.option("--no-record", is_flag=True, help="Do not record this run for `device status`.")
@click.option(
    "--console-event",
    is_flag=True,
    help='Also print one line `COSGITOPS {"event": "stage", ...}` on stdout (the units '
    "write it to the console themselves, with COSGITOPS_CONSOLE_EVENTS=1).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: every step's outcome as one JSON object.",
)
def run_stage_command(  # noqa: PLR0917 - click passes options positionally
    stage: str,
    root: Path,
    config_dirs: tuple[Path, ...],
    only_config_dirs: bool,
    disks: tuple[Path, ...],
    no_record: bool,
    console_event: bool,
    output_format: str,
) -> None:
    """Apply the cloud-config steps of STAGE, as yip does on cOS, Elemental and Kairos.

    \b
    STAGE runs STAGE.before, STAGE and STAGE.after: rootfs, initramfs, fs, boot,
    network, reconcile, after-install, after-upgrade, after-reset, ...
    A failed step is reported with its file and line and the stage goes on; the
    command exits 1 when any step failed or a file could not be read.
    """
    from cosgitops.stages.runner import run_stage

    text_output = output_format == "text"
    report = run_stage(
        stage,
        root=root,
        config_dirs=config_dirs,
        default_dirs=not only_config_dirs,
        disks=disks,
        record=not no_record,
        on_step=_print_step if text_output else None,
    )
    if text_output:
        _print_summary(report)
    else:
        click.echo(json.dumps(report.to_json(), indent=2))
    from cosgitops.device import events

    fields = report.event()
    kind = fields.pop("event")
    events.emit(kind, **fields)  # to the console, when the unit asks (COSGITOPS_CONSOLE_EVENTS)
    if console_event:
        click.echo(events.format_event(kind, fields))
    if report.internal_errors:
        click.echo(
            f"error: internal error (a bug in cosgitops) in {len(report.internal_errors)} "
            f"step(s); the traceback is in {report.record or 'the JSON output'}",
            err=True,
        )
        sys.exit(3)
    if not report.ok:
        sys.exit(1)


def _print_step(step: Any) -> None:
    where = f"{step.file}:{step.line}"
    line = f"{_MARK[step.status]} {step.stage:<12} {where}  {step.name}"
    if step.status == "failed":
        click.echo(f"{line}\n    error: {step.location}: {step.error}")
        if step.hint:
            click.echo(f"    hint: {step.hint}")
        return
    detail = step.reason or "; ".join(k.detail for k in step.kinds if k.detail)
    click.echo(f"{line}" + (f"  ({detail})" if detail else ""))


def _print_summary(report: Any) -> None:
    for problem in report.problems:
        click.echo(f"! {problem.location}: error[{problem.rule}] {problem.message} (not run)")
        if problem.hint:
            click.echo(f"    hint: {problem.hint}")
    counts = report.counts()
    parts = [f"{counts[name]} {name}" for name in counts if counts[name]]
    where = "" if report.live else f" on {report.root}"
    verdict = "ok" if report.ok else "FAILED"
    click.echo(
        f"stage {report.stage}{where}: {verdict}, {len(report.steps)} steps"
        + (f" ({', '.join(parts)})" if parts else "")
        + f" from {len(report.files)} files in {report.seconds:.2f}s"
    )
    if report.record_error:
        click.echo(f"warning: {report.record_error}")
