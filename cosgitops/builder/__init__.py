"""Building derivative images: plan, render, the daemonless OCI builder, the docker builder.

:func:`build_derivative` is the one entry point the CLI and ``release`` call: it picks
the builder, works out where the image goes, builds, and returns a
:class:`~cosgitops.builder.result.BuildResult` holding the pinned ``NAME@sha256:…``.

Where the image goes:

* ``target`` given: there (a registry repository or ``oci:PATH``);
* ``cosgitops.yaml`` names an OCI layout (the default ``oci:.cosgitops/registry``):
  into ``<layout>/<name>``, push or not;
* it names a registry: with ``push`` straight into ``<registry>/<name>``; without,
  into the local layout ``.cosgitops/registry/<name>``. The image (and its digest) is
  the same either way: it names itself after the configured registry, never after
  where it happens to be stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cosgitops.builder.result import BuildResult
from cosgitops.config import DEFAULT_LIMITS, Limits
from cosgitops.errors import UsageError
from cosgitops.model import DEFAULT_REGISTRY, Derivative, Repository
from cosgitops.oci.reference import Reference, parse_reference
from cosgitops.oci.store import StoreOptions
from cosgitops.progress import NULL_PROGRESS, Progress

__all__ = [
    "BuildResult",
    "BuildTarget",
    "BuilderChoice",
    "build_derivative",
    "choose_builder",
    "resolve_target",
]

BuilderChoice = Literal["auto", "oci", "docker"]
LOCAL_LAYOUT_DIR = DEFAULT_REGISTRY.removeprefix("oci:")


@dataclass(frozen=True)
class BuildTarget:
    reference: Reference  # the repository the image is written to (no tag, no digest)
    image_repo: str  # the name the image carries (IMAGE_REPO): the configured one
    remote: bool  # a registry rather than an OCI layout on disk


def choose_builder(
    derivative: Derivative, builder: BuilderChoice = "auto"
) -> Literal["oci", "docker"]:
    """``auto``: docker when something must run inside the image, else daemonless."""
    if builder == "auto":
        return "docker" if derivative.needs_docker else "oci"
    if builder == "oci" and derivative.needs_docker:
        what = "packages" if derivative.packages else "run commands"
        raise UsageError(
            f"{derivative.name} has {what}: they must run inside the image, which only the "
            "docker builder can do",
            hint="use --builder docker (or auto), or drop spec.packages and spec.run",
        )
    return builder


def _repository_only(text: str) -> Reference:
    reference = parse_reference(text)
    if reference.tag or reference.digest:
        raise UsageError(
            f"target {text!r} has a tag or digest",
            hint="name the repository only; the image is tagged with its version",
        )
    return reference


def _local_layout(repository: Repository, name: str, path: str) -> Reference:
    folder = Path(path)
    if not folder.is_absolute():
        folder = repository.root / folder
    return Reference("oci", "", str(folder / name))


def resolve_target(
    repository: Repository, name: str, *, push: bool, target: str | None = None
) -> BuildTarget:
    if target is not None:
        reference = _repository_only(target)
        if reference.is_oci_layout and not Path(reference.repository).is_absolute():
            reference = Reference("oci", "", str(Path.cwd() / reference.repository))
        return BuildTarget(reference, target, not reference.is_oci_layout)
    configured = f"{repository.registry.rstrip('/')}/{name}"
    if repository.registry.startswith("oci:"):
        layout = repository.registry.removeprefix("oci:").rstrip("/")
        return BuildTarget(_local_layout(repository, name, layout), configured, False)
    if push:
        return BuildTarget(_repository_only(configured), configured, True)
    return BuildTarget(_local_layout(repository, name, LOCAL_LAYOUT_DIR), configured, False)


def base_location(repository_root: Path, base: str) -> str:
    """Where to read ``spec.base`` from: a relative ``oci:`` layout path is taken from
    the repository's top folder (the image still names the base as written)."""
    if not base.startswith("oci:") or base.startswith("oci:/"):
        return base
    return f"oci:{repository_root / base.removeprefix('oci:')}"


def _warn_uncommitted(repository: Repository, derivative: Derivative, progress: Progress) -> None:
    """Builds read the working tree but are labelled with HEAD: say so when they differ."""
    from cosgitops import gitrepo
    from cosgitops.errors import GitError

    try:
        top = gitrepo.toplevel(repository.root)
        changed = gitrepo.uncommitted_paths(repository.root)
    except GitError:
        return
    try:
        prefix = derivative.folder.resolve().relative_to(top).as_posix() + "/"
    except ValueError:
        return
    dirty = sorted(path for path in changed if path.startswith(prefix))
    if dirty:
        progress.note(
            f"warning: {len(dirty)} uncommitted change(s) in {derivative.name} (e.g. {dirty[0]}); "
            "the image is labelled with HEAD's commit but holds the working tree"
        )


def build_derivative(
    repository: Repository,
    derivative: Derivative,
    *,
    builder: BuilderChoice = "auto",
    push: bool = False,
    target: str | None = None,
    options: StoreOptions | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress = NULL_PROGRESS,
) -> BuildResult:
    """Build ``derivative`` and store or push it; see the module docstring for where."""
    from cosgitops.builder.inputs import collect_inputs
    from cosgitops.oci import open_store

    options = options or StoreOptions(limits=limits)
    chosen = choose_builder(derivative, builder)
    destination = resolve_target(repository, derivative.name, push=push, target=target)
    inputs = collect_inputs(
        repository, derivative, image_repo=destination.image_repo, limits=limits
    )
    _warn_uncommitted(repository, derivative, progress)
    store = open_store(destination.reference, options)
    if chosen == "oci":
        from cosgitops.builder.daemonless import build_image

        return build_image(inputs, store, options=options, limits=limits, progress=progress)
    from cosgitops.builder.dockerbuilder import docker_build

    return docker_build(
        inputs, store, remote=destination.remote, options=options, progress=progress
    )
