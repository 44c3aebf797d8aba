"""``cosgitops init`` and ``cosgitops validate``.

Kept light: ``cosgitops validate`` runs as a pre-commit hook on every commit, so this
module imports only click, PyYAML and cosgitops' own validation code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from cosgitops.validate import KINDS, validate_paths
from cosgitops.validate.report import FORMATS, github_step_summary, render


def _color_default() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for people, json for programs, sarif for code scanning, github for "
    "workflow annotations (plus a job summary when $GITHUB_STEP_SUMMARY is set).",
)
@click.option(
    "--against",
    metavar="REF",
    help="A git ref (e.g. origin/main): derivatives changed since it must have a greater version.",
)
@click.option(
    "--as",
    "as_kind",
    type=click.Choice(KINDS),
    help="Read every file as this kind, wherever it is.",
)
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.option(
    "--color/--no-color", default=None, help="Colour the text output (default: on a TTY)."
)
def validate_command(  # noqa: PLR0917 - click passes options positionally
    paths: tuple[Path, ...],
    output_format: str,
    against: str | None,
    as_kind: str | None,
    strict: bool,
    color: bool | None,
) -> None:
    """Check derivatives, cosgitops.yaml and cloud-config files.

    PATHS are files or folders (default: the current folder). A file inside a derivative
    checks that whole derivative; cosgitops.yaml or the repository folder checks
    everything. Exit status: 0 clean (warnings allowed unless --strict), 1 problems
    found, 2 usage error.
    """
    report = validate_paths(list(paths), against=against, as_kind=as_kind)
    use_color = _color_default() if color is None else color
    click.echo(render(report, output_format, color=use_color), nl=False, color=use_color)
    if output_format == "github":
        summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_file:
            try:
                with open(summary_file, "a", encoding="utf-8") as handle:
                    handle.write(github_step_summary(report))
            except OSError as exc:
                click.echo(f"warning: cannot write the job summary: {exc}", err=True)
    # sys.exit rather than ctx.exit: click returns ctx.exit's code from a
    # standalone_mode=False main() instead of exiting, and `python -m` would drop it.
    sys.exit(0 if report.passes(strict=strict) else 1)


@click.command("init")
@click.argument(
    "directory",
    required=False,
    default=".",
    type=click.Path(path_type=Path, file_okay=False),
)
@click.option("--name", help="The repository's name (a DNS label); default: the folder's name.")
def init_command(directory: Path, name: str | None) -> None:
    """Scaffold a repository in DIRECTORY (default: here): cosgitops.yaml, an example
    derivative, the pre-commit hook and the GitHub workflows. DIRECTORY must be empty
    (or hold only .git)."""
    from cosgitops.scaffold import init_repository

    created = init_repository(directory, name=name)
    for path in created:
        click.echo(f"created {path}")
    where = str(directory)
    click.echo(
        "\nnext steps:\n"
        f"  cd {where}\n"
        "  git init && pre-commit install     # validate on every commit\n"
        "  cosgitops validate                  # check the repository now"
    )
