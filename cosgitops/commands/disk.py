"""``cosgitops disk`` and ``cosgitops medium``: thin wrappers over cosgitops.bootdisk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cosgitops.commands.common import repo_option
from cosgitops.progress import human_size

F = TypeVar("F", bound=Callable[..., Any])


def _json_option(function: F) -> F:
    option = click.option("--json", "as_json", is_flag=True, help="The result as JSON on stdout.")
    return option(function)


@click.command("disk")
@click.argument("name")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The disk image file to write (replaced only once complete).",
)  # fmt: skip
@click.option(
    "--format", "image_format", type=click.Choice(["raw", "qcow2"]), default="raw",
    show_default=True, help="raw (for dd and any VM) or qcow2.",
)  # fmt: skip
@click.option(
    "--size", metavar="SIZE",
    help="The disk's size (8G, 16GiB, 4096M); it must hold the images with room for "
    "upgrades, else the command names the minimum. Default: that minimum.",
)  # fmt: skip
@click.option(
    "--version", "version", metavar="V", help="Install this release (default: the newest)."
)
@click.option(
    "--channel",
    metavar="C",
    help="The channel the device follows (default: the derivative's first).",
)
@click.option(
    "--index-url", metavar="URL",
    help="Where the device looks for updates (default: spec.publish.url, else an "
    "attached update medium).",
)  # fmt: skip
@click.option(
    "--key", "keys", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A public key the device trusts for images (repeatable; default: the trust "
    "rules of cosgitops.yaml).",
)  # fmt: skip
@click.option(
    "--oem", type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A folder copied onto COS_OEM (/oem): device-local cloud-config files.",
)  # fmt: skip
@click.option("--max-attempts", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Boots a new release gets to pass its health checks.")  # fmt: skip
@click.option("--update-interval", type=click.FloatRange(1, 604800), default=3600.0,
              show_default=True, metavar="SECONDS",
              help="How often the device looks for releases (index or update medium).")  # fmt: skip
@_json_option
@repo_option
def disk_command(
    *,
    name: str,
    output: Path,
    image_format: str,
    size: str | None,
    version: str | None,
    channel: str | None,
    index_url: str | None,
    keys: tuple[Path, ...],
    oem: Path | None,
    max_attempts: int,
    update_interval: float,
    as_json: bool,
    repo: Path,
) -> None:
    """Write a bootable GPT disk of derivative NAME's release, in the cOS layout.

    \b
    Partitions: COS_GRUB (the EFI system partition), COS_OEM, COS_RECOVERY, COS_STATE,
    COS_PERSISTENT. The verified release is the active and the recovery image; the
    agent is configured (index, trusted TUF root, keys, derivative, channel). Runs
    without root, loop devices or mounts. Boot it in any UEFI VM, or dd it to a disk.
    """
    from cosgitops.bootdisk.build import build_disk
    from cosgitops.bootdisk.layout import parse_size
    from cosgitops.progress import terminal_progress

    result = build_disk(
        repo,
        name,
        output,
        version=version,
        channel=channel,
        size=parse_size(size) if size else None,
        image_format="qcow2" if image_format == "qcow2" else "raw",
        index_url=index_url,
        keys=keys,
        oem=oem,
        max_attempts=max_attempts,
        update_interval=update_interval,
        progress=terminal_progress(quiet=as_json),
    )
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    disk = result.disk
    click.echo(
        f"{disk.path}: {name} {result.version} ({result.digest[:19]}), "
        f"{human_size(disk.size)} {disk.image_format} disk, {human_size(disk.file_size)} on "
        f"this machine, written in {disk.seconds:.1f}s"
    )
    for plan in disk.layout.partitions:
        size_text = human_size(plan.size)
        click.echo(f"  {plan.number} {plan.label:<15} {plan.filesystem:<5} {size_text}")
    click.echo(
        f"  kernel {result.boot.kernel}, initrd {result.boot.initrd}; "
        f"updates from {result.index_url}"
    )


@click.command("medium")
@click.argument("name")
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The medium folder to write (replaced as a whole once complete).",
)  # fmt: skip
@click.option("--version", "versions", multiple=True, metavar="V",
              help="Put this release on it (repeatable; default: every release).")  # fmt: skip
@click.option(
    "--image", "image_file", type=click.Path(dir_okay=False, path_type=Path),
    help="Also write an ext4 image of the medium labelled COS_UPDATE (attach it as a disk).",
)  # fmt: skip
@_json_option
@repo_option
def medium_command(
    *,
    name: str,
    output: Path,
    versions: tuple[str, ...],
    image_file: Path | None,
    as_json: bool,
    repo: Path,
) -> None:
    """Write an update medium for derivative NAME: the published index and the release
    images with their signatures, for devices without a network."""
    from cosgitops.bootdisk.medium import write_update_medium
    from cosgitops.commands.common import load_repository_at
    from cosgitops.progress import terminal_progress

    repository, _ = load_repository_at(repo)
    result = write_update_medium(
        repository.root / repository.publish.dir,
        output,
        derivative=name,
        versions=list(versions) or None,
        image_file=image_file,
        progress=terminal_progress(quiet=as_json),
    )
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    releases = ", ".join(release.version for release in result.releases)
    click.echo(f"{result.path}: {name} {releases} ({human_size(result.blob_bytes)} of images)")
    if result.image_file is not None:
        click.echo(f"  COS_UPDATE image: {result.image_file}")
