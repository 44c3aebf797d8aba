"""Options and helpers shared by the command modules (kept light: imported at startup)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from cosgitops.model import Derivative, Repository

F = TypeVar("F", bound=Callable[..., Any])

repo_option = click.option(
    "-C",
    "--repo",
    "repo",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The cosgitops repository (or any folder inside it).",
)


def format_option(
    help_text: str = "json: the result as one JSON object on stdout.",
) -> Callable[[F], F]:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help=help_text,
    )


def load_repository_at(repo: Path) -> tuple[Repository, dict[str, Derivative]]:
    """The validated repository that ``repo`` is in (or at), and its derivatives."""
    from cosgitops.validate import find_repository_root, load_repository

    tree = load_repository(find_repository_root(repo))
    return tree.repository, dict(tree.derivatives)
