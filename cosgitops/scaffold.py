"""``cosgitops init``: copy the repository scaffold from ``templates/scaffold/``.

The whole tree is copied as it is, dotfiles included, so adding a file to the template
is all it takes to scaffold it. Text files may carry these placeholders:

* ``@COSGITOPS_REPOSITORY_NAME@``: the repository's name (``--name``, or the folder's)
* ``@COSGITOPS_VERSION@``: the version of cosgitops that scaffolded the repository

(``@...@`` rather than ``{{ }}`` so GitHub workflow expressions pass through untouched.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cosgitops import __version__
from cosgitops.errors import CosgitopsError, UsageError
from cosgitops.fsutil import atomic_write_bytes
from cosgitops.resources import data_dir

SCAFFOLD = "scaffold"
NAME_PLACEHOLDER = "@COSGITOPS_REPOSITORY_NAME@"
VERSION_PLACEHOLDER = "@COSGITOPS_VERSION@"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_IGNORED = frozenset(("__pycache__", ".DS_Store"))
# a target holding only these is still "empty": `git init && cosgitops init .` works
_ALLOWED_EXISTING = frozenset((".git",))


class ScaffoldError(CosgitopsError):
    """The scaffold cannot be written where it was asked to go."""


def scaffold_dir() -> Path:
    return data_dir("templates") / SCAFFOLD


def default_name(folder: Path) -> str:
    """A DNS label made from a folder name ("My Fleet_2" -> "my-fleet-2")."""
    name = re.sub(r"[^a-z0-9]+", "-", folder.name.lower()).strip("-")[:63].strip("-")
    return name or "fleet"


def _template_files(source: Path) -> list[Path]:
    files = []
    for directory, folders, names in os.walk(source):
        folders[:] = sorted(name for name in folders if name not in _IGNORED)
        for name in sorted(names):
            if name in _IGNORED or name.endswith(".pyc"):
                continue
            files.append(Path(directory, name).relative_to(source))
    return files


def _substitute(data: bytes, replacements: dict[str, str]) -> bytes:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data  # binary files are copied as they are
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    return text.encode("utf-8")


def init_repository(target: Path, *, name: str | None = None) -> list[Path]:
    """Write the scaffold into ``target`` (created if missing, else it must be empty)
    and return the files created."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ScaffoldError(f"{target} exists and is not a folder", hint="choose a new folder name")
    if target.is_dir():
        existing = sorted(entry.name for entry in target.iterdir())
        unexpected = [entry for entry in existing if entry not in _ALLOWED_EXISTING]
        if unexpected:
            shown = ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else "")
            raise ScaffoldError(
                f"{target} is not empty (it holds {shown})",
                hint="run cosgitops init in a new or empty folder; nothing was written",
            )
    if name is None:
        name = default_name(target.resolve())
    elif not _DNS_LABEL.match(name):
        raise UsageError(
            f"repository name {name!r} is not a DNS label",
            hint="use lowercase letters, digits and '-', at most 63 characters",
        )
    replacements = {NAME_PLACEHOLDER: name, VERSION_PLACEHOLDER: __version__}
    source = scaffold_dir()
    created = []
    for relative in _template_files(source):
        origin = source / relative
        if origin.is_symlink():
            continue  # the template holds real files only
        data = _substitute(origin.read_bytes(), replacements)
        mode = 0o755 if os.access(origin, os.X_OK) else 0o644
        destination = target / relative
        atomic_write_bytes(destination, data, mode)
        created.append(destination)
    return created
