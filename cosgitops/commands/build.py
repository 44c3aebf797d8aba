"""``cosgitops plan``, ``render`` and ``build``: thin wrappers over cosgitops.builder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from cosgitops.commands.common import load_repository_at, repo_option
from cosgitops.errors import UsageError

if TYPE_CHECKING:
    from cosgitops.builder import BuilderChoice
    from cosgitops.model import Derivative


def _derivative(derivatives: dict[str, Derivative], name: str) -> Derivative:
    if name not in derivatives:
        known = ", ".join(sorted(derivatives)) or "none"
        raise UsageError(
            f"there is no derivative named {name!r}",
            hint=f"derivatives in this repository: {known}",
        )
    return derivatives[name]


@click.command("plan")
@click.option("--since", metavar="REF", help="Plan what changed since this git ref.")
@click.option("--until", metavar="REF", help="Compare up to this ref instead of the working tree.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help='json: {"include": [{"name", "version", "builder", "folder"}]}, a GitHub Actions matrix.',
)
@repo_option
def plan_command(*, since: str | None, until: str | None, output_format: str, repo: Path) -> None:
    """List the derivatives that changed since a git ref (all of them without --since,
    or when cosgitops.yaml changed)."""
    from cosgitops.builder.plan import plan_repository

    repository, derivatives = load_repository_at(repo)
    result = plan_repository(repository, derivatives, since=since, until=until)
    if output_format == "json":
        click.echo(json.dumps(result.matrix(), separators=(",", ":")))
        return
    if not result.entries:
        click.echo(f"nothing to build (no derivative changed since {since})")
    for entry in result.entries:
        reasons = ", ".join(entry.reasons[:3]) + (" ..." if len(entry.reasons) > 3 else "")
        click.echo(f"{entry.name} {entry.version} ({entry.builder}): {reasons}")
    for folder in result.removed:
        click.echo(f"{folder}: removed (nothing to build)", err=True)


@click.command("render")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder to write the build context to (new, empty, or an earlier render).",
)
@repo_option
def render_command(*, name: str, output: Path, repo: Path) -> None:
    """Write a build context (Dockerfile + files) that plain `docker build DIR` builds."""
    from cosgitops.builder.inputs import collect_inputs
    from cosgitops.builder.render import render_context

    repository, derivatives = load_repository_at(repo)
    inputs = collect_inputs(repository, _derivative(derivatives, name))
    rendered = render_context(inputs, output)
    click.echo(f"rendered {name} to {rendered.directory} (FROM {rendered.base_image})", err=True)
    click.echo(f"build it with: docker build -t {name}:{inputs.identity.tag} {output}", err=True)


@click.command("build")
@click.argument("name")
@click.option(
    "--builder",
    type=click.Choice(["auto", "oci", "docker"]),
    default="auto",
    show_default=True,
    help="auto: docker when spec.packages or spec.run are set, else the daemonless builder.",
)
@click.option("--push", is_flag=True, help="Write the image to the registry in cosgitops.yaml.")
@click.option(
    "--to",
    "target",
    metavar="REF",
    help="Write the image here instead (REGISTRY/REPO or oci:PATH, no tag).",
)
@click.option(
    "--insecure", is_flag=True, help="Talk plain HTTP to the registry (loopback hosts only)."
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Extra CA certificate (PEM) to trust for the registry's TLS.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@repo_option
def build_command(
    *,
    name: str,
    builder: str,
    push: bool,
    target: str | None,
    insecure: bool,
    ca_file: Path | None,
    output_format: str,
    quiet: bool,
    repo: Path,
) -> None:
    """Build a derivative's image and print its pinned reference (NAME@sha256:...)."""
    from cosgitops.builder import build_derivative
    from cosgitops.oci.store import StoreOptions
    from cosgitops.progress import terminal_progress

    repository, derivatives = load_repository_at(repo)
    progress = terminal_progress(quiet=quiet)
    result = build_derivative(
        repository,
        _derivative(derivatives, name),
        builder=cast("BuilderChoice", builder),
        push=push,
        target=target,
        options=StoreOptions(insecure=insecure, ca_file=ca_file),
        progress=progress,
    )
    if output_format == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(result.reference)
