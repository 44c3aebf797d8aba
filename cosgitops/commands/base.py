"""``cosgitops base build``: thin wrapper over cosgitops.osbase."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cosgitops.commands.common import format_option, load_repository_at, repo_option


@click.group("base")
def base_group() -> None:
    """Bootable OS bases defined in Git (bases/<name>/base.yaml)."""


@base_group.command("build")
@click.argument("name")
@click.option(
    "--wheelhouse",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Install the agent from this folder of wheels (cosgitops and its dependencies) "
    "instead of packing the running cosgitops and downloading its dependencies. "
    "Default: $COSGITOPS_WHEELHOUSE.",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="LINE",
    help="An apt source line used instead of spec.mirrors for this build (repeatable), "
    "e.g. 'deb [trusted=yes] http://127.0.0.1:8080/ ./' for a local mirror.",
)
@click.option(
    "--target",
    metavar="REPO",
    help="Store the image here instead of "
    "<registry>/bases/<name> (a registry repository or oci:PATH).",
)
@click.option(
    "--no-reuse",
    is_flag=True,
    help="Build even when an image with the same inputs is already stored.",
)
@format_option()
@repo_option
def build_command(
    *,
    name: str,
    wheelhouse: Path | None,
    mirrors: tuple[str, ...],
    target: str | None,
    no_reuse: bool,
    output_format: str,
    repo: Path,
) -> None:
    """Build the base NAME with mmdebstrap and print its pinned reference.

    Derivatives name the result as spec.base. Building needs mmdebstrap and root (or
    unprivileged user namespaces), and reaches the Debian mirrors unless --mirror
    names a local one."""
    from cosgitops.osbase.build import build_base
    from cosgitops.progress import terminal_progress

    repository, _derivatives = load_repository_at(repo)
    result = build_base(
        repository,
        name,
        wheelhouse=wheelhouse,
        sources=mirrors or None,
        target=target,
        reuse=not no_reuse,
        progress=terminal_progress(quiet=output_format == "json"),
    )
    if output_format == "json":
        click.echo(json.dumps(result.to_json()))
        return
    how = "unchanged, reused" if result.reused else f"built in {result.seconds:.0f}s"
    click.echo(
        f"base {result.name} {result.version}: {len(result.packages)} packages, "
        f"{len(result.layers)} layers, {result.size / 2**20:.1f} MiB ({how})",
        err=True,
    )
    click.echo(f"name it in a derivative as  spec.base: {result.spec_base}", err=True)
    click.echo(result.spec_base)
