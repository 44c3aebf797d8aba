"""``plan``: which derivatives need a build, given what changed since a git ref.

A derivative is in the plan when a file in its folder changed, when a file outside its
folder that it packs changed (an overlay symlink to a shared file), or when a shared
input changed (``cosgitops.yaml``), which puts every derivative in. Without a ref, all
derivatives are planned.

``Plan.matrix()`` is ``{"include": [{"name", "version", "builder", "folder"}, ...]}``,
what a GitHub Actions job matrix takes via ``fromJSON``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosgitops.builder import choose_builder
from cosgitops.model import DERIVATIVES_DIR, REPOSITORY_FILE, Derivative, Repository

SHARED_INPUTS = (REPOSITORY_FILE,)


@dataclass(frozen=True)
class PlanEntry:
    name: str
    version: str
    builder: str  # "oci" or "docker"
    folder: str  # relative to the repository root
    platforms: tuple[str, ...]
    reasons: tuple[str, ...]  # the changed paths that put it in the plan

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "builder": self.builder,
            "folder": self.folder,
            "platforms": list(self.platforms),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Plan:
    since: str | None
    entries: tuple[PlanEntry, ...]
    everything: bool  # a shared input changed (or no ref was given)
    removed: tuple[str, ...]  # derivative folders that changed but no longer exist

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def matrix(self) -> dict[str, list[dict[str, str]]]:
        """GitHub Actions matrix: only strings, so ``matrix.name`` etc. work as-is."""
        return {
            "include": [
                {
                    "name": entry.name,
                    "version": entry.version,
                    "builder": entry.builder,
                    "folder": entry.folder,
                }
                for entry in self.entries
            ]
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "everything": self.everything,
            "derivatives": [entry.to_json() for entry in self.entries],
            "removed": list(self.removed),
        }


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def external_inputs(derivative: Derivative, root: Path) -> set[str]:
    """Files outside the derivative's folder that its build packs (repository-relative):
    the targets of overlay and cloud-config symlinks that leave the folder."""
    from cosgitops.builder.inputs import CLOUD_CONFIG_PATTERNS
    from cosgitops.builder.layers import tree_entries

    entries = tree_entries(derivative.overlay_dir, boundary=root) + tree_entries(
        derivative.cloud_config_dir, boundary=root, include=CLOUD_CONFIG_PATTERNS
    )
    folder = derivative.folder.resolve()
    found = set()
    for entry in entries:
        if entry.source is None:
            continue
        source = entry.source.resolve()
        if folder in source.parents:
            continue
        relative = _relative(source, root)
        if relative is not None:
            found.add(relative)
    return found


def plan_changes(
    root: Path,
    derivatives: Mapping[str, Derivative],
    changed: Iterable[str] | None,
    *,
    since: str | None = None,
    dependencies: Mapping[str, set[str]] | None = None,
) -> Plan:
    """The plan for ``changed`` paths (repository-relative); ``None`` means everything.
    Pure: ``dependencies`` maps a derivative to the outside files it packs."""
    changed_set = set(changed) if changed is not None else None
    shared = sorted(p for p in changed_set or () if p in SHARED_INPUTS)
    everything = changed_set is None or bool(shared)
    entries = []
    for name in sorted(derivatives):
        derivative = derivatives[name]
        folder = _relative(derivative.folder, root) or f"{DERIVATIVES_DIR}/{name}"
        if everything:
            reasons = tuple(shared) if shared else ("no --since ref: everything is planned",)
        else:
            assert changed_set is not None
            own = sorted(p for p in changed_set if p.startswith(folder + "/"))
            outside = sorted(changed_set & (dependencies or {}).get(name, set()))
            reasons = tuple(own + outside)
            if not reasons:
                continue
        entries.append(
            PlanEntry(
                name=name,
                version=derivative.version,
                builder=choose_builder(derivative),
                folder=folder,
                platforms=derivative.platforms,
                reasons=reasons,
            )
        )
    known = {entry.folder for entry in entries} | {
        _relative(d.folder, root) or "" for d in derivatives.values()
    }
    removed = sorted(
        {
            "/".join(p.split("/")[:2])
            for p in changed_set or ()
            if p.startswith(DERIVATIVES_DIR + "/") and p.count("/") >= 2
        }
        - known
    )
    return Plan(since, tuple(entries), everything, tuple(removed))


def plan_repository(
    repository: Repository,
    derivatives: Mapping[str, Derivative],
    *,
    since: str | None = None,
    until: str | None = None,
) -> Plan:
    """The plan for ``repository`` against git: changes between ``since`` and ``until``
    (default: the working tree, so uncommitted edits count too)."""
    from cosgitops import gitrepo

    root = repository.root
    if since is None:
        return plan_changes(root, derivatives, None)
    top = gitrepo.toplevel(root)
    prefix = _relative(root, top) or ""
    changed = set()
    for path in gitrepo.changed_paths(root, since, until):
        if prefix in ("", "."):
            changed.add(path)
        elif path.startswith(prefix + "/"):
            changed.add(path[len(prefix) + 1 :])
    dependencies = {name: external_inputs(d, root) for name, d in derivatives.items()}
    return plan_changes(root, derivatives, changed, since=since, dependencies=dependencies)


def plan(root: Path, *, since: str | None = None, until: str | None = None) -> Plan:
    """Load the repository at ``root`` (validated) and plan it."""
    from cosgitops.validate import load_repository

    tree = load_repository(root)
    return plan_repository(tree.repository, tree.derivatives, since=since, until=until)
