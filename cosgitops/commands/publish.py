"""``cosgitops publish``, ``refresh``, ``yank`` and ``keys rotate``: thin wrappers over
cosgitops.publish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cosgitops.commands.common import format_option, load_repository_at, repo_option
from cosgitops.errors import UsageError

if TYPE_CHECKING:
    from cosgitops.model import ReleaseManifest
    from cosgitops.publish.publisher import IndexChange


def _read_manifests(files: tuple[Path, ...]) -> list[ReleaseManifest]:
    from cosgitops.errors import RemoteDataError
    from cosgitops.model import ReleaseManifest

    manifests: list[ReleaseManifest] = []
    for path in files:
        try:
            value = json.loads(path.read_bytes())
            items = value if isinstance(value, list) else [value]
            manifests.extend(ReleaseManifest.from_json(item) for item in items)
        except (OSError, ValueError, RemoteDataError) as exc:
            raise UsageError(
                f"{path} is not a release manifest file: {exc}",
                hint="pass JSON written by ReleaseManifest.to_json() (one object or a list)",
            ) from exc
    return manifests


def _render(change: IndexChange, lines: list[str], output_format: str, payload: Any) -> None:
    for note in change.development_notes():
        click.echo(note, err=True)
    for warning in change.warnings:
        click.echo(f"warning: {warning}", err=True)
    if output_format == "json":
        click.echo(json.dumps(payload, separators=(",", ":")))
        return
    for line in lines:
        click.echo(line)
    state = f"timestamp v{change.timestamp_version}, root v{change.root_version}"
    verb = "updated" if change.changed else "unchanged"
    click.echo(f"index {change.public_dir}: {verb} ({state})")


@click.command("publish")
@click.option(
    "--since",
    metavar="REF",
    help="Publish only the derivatives that changed since this git ref (default: all).",
)
@click.option(
    "--manifest",
    "manifest_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Publish release manifests from a JSON file instead of reading built images (repeatable).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Read images from a loopback registry over plain HTTP.",
)
@format_option()
@repo_option
def publish_command(
    *,
    since: str | None,
    manifest_files: tuple[Path, ...],
    insecure: bool,
    output_format: str,
    repo: Path,
) -> None:
    """Add releases to the signed index and the Elemental channel files.

    Each derivative's image must already be built, pushed under its version tag and
    signed under the trust policy; a version already published is immutable.
    """
    from cosgitops.progress import terminal_progress
    from cosgitops.publish.publisher import publish_releases

    repository, derivatives = load_repository_at(repo)
    if manifest_files:
        if since is not None:
            raise UsageError("--since and --manifest do not go together")
        manifests = _read_manifests(manifest_files)
    else:
        from cosgitops.publish.collect import collect_releases

        manifests = collect_releases(repository, derivatives, since=since, insecure=insecure)
    progress = terminal_progress(quiet=output_format == "json")
    result = publish_releases(repository, manifests, progress=progress)
    lines = [f"published {r.derivative} {r.version}: {r.image}" for r in result.added]
    lines += [f"unchanged {r.derivative} {r.version}" for r in result.unchanged]
    if not manifests:
        lines.append("nothing to publish")
    _render(result, lines, output_format, result.to_json())


@click.command("refresh")
@click.option("--force", is_flag=True, help="Re-sign every role, not only those nearing expiry.")
@format_option()
@repo_option
def refresh_command(*, force: bool, output_format: str, repo: Path) -> None:
    """Re-sign the short-lived index metadata (timestamp, and whatever nears expiry).

    Run it on a schedule shorter than half the timestamp's lifetime (e.g. every 6 hours
    for the default of one day).
    """
    from cosgitops.publish.publisher import refresh

    repository, _ = load_repository_at(repo)
    result = refresh(repository, force=force)
    _render(result, [f"re-signed {', '.join(result.resigned)}"], output_format, result.to_json())


@click.command("yank")
@click.argument("name")
@click.argument("version")
@click.option("--reason", required=True, help="Why: shown to operators and kept in the index.")
@format_option()
@repo_option
def yank_command(*, name: str, version: str, reason: str, output_format: str, repo: Path) -> None:
    """Mark release NAME VERSION as a dead end: devices stop being offered it.

    The release stays in the index (nothing is deleted or rewritten); devices already
    on it can still upgrade away from it.
    """
    from cosgitops.publish.publisher import yank

    repository, _ = load_repository_at(repo)
    result = yank(repository, name, version, reason=reason)
    line = (
        f"{name} {version} was already yanked"
        if result.already_yanked
        else f"yanked {name} {version}: {reason}"
    )
    _render(result, [line], output_format, result.to_json())


@click.group("keys")
def keys_group() -> None:
    """Manage the keys that sign the release index."""


@keys_group.command("rotate")
@click.argument("role", type=click.Choice(["root", "targets", "snapshot", "timestamp"]))
@click.option(
    "--new-key",
    "new_keys",
    multiple=True,
    metavar="FILE|env://VAR",
    help="The new private key (cosign format; repeat for a threshold). Without it, a "
    "development key is replaced by a freshly generated one.",
)
@format_option()
@repo_option
def rotate_command(*, role: str, new_keys: tuple[str, ...], output_format: str, repo: Path) -> None:
    """Replace the keys of ROLE through a new root version that devices follow."""
    from cosgitops.publish.publisher import rotate_key

    repository, _ = load_repository_at(repo)
    result = rotate_key(repository, role, list(new_keys) or None)
    lines = [
        f"rotated {role}: root is now version {result.root_version}",
        f"new key id(s): {', '.join(result.new_keyids)}",
    ]
    lines += [f"kept the old key as {path}" for path in result.retired_keys]
    if new_keys:
        lines.append(f"now set publish.keys.{role} in cosgitops.yaml to: {', '.join(new_keys)}")
    _render(result, lines, output_format, result.to_json())
