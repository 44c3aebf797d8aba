"""Locate the data files shipped with cosgitops (schemas, templates)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal


@cache
def data_dir(kind: Literal["schemas", "templates"]) -> Path:
    """The folder holding ``kind``: inside the package when installed from a wheel,
    at the top of the checkout when running from source or an editable install."""
    package = Path(__file__).resolve().parent
    for candidate in (package / kind, package.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cosgitops data folder {kind!r} is missing from this installation")


def schema_path(name: str) -> Path:
    """Path of ``schemas/<name>.schema.json``."""
    return data_dir("schemas") / f"{name}.schema.json"
