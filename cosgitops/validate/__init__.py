"""Validation: JSON Schema checks, semantic rules and reporters for a cosgitops repository.

Public API::

    validate_paths(paths, *, against=None, as_kind=None, limits=DEFAULT_LIMITS) -> Report
    load_repository(root, *, limits=DEFAULT_LIMITS) -> RepositoryTree   (ValidationError)
    find_repository_root(start) -> Path                                 (ConfigError)
"""

from cosgitops.validate.diagnostics import Diagnostic, Report, Severity
from cosgitops.validate.engine import (
    KINDS,
    RepositoryTree,
    find_repository_root,
    load_repository,
    validate_paths,
)

__all__ = [
    "KINDS",
    "Diagnostic",
    "Report",
    "RepositoryTree",
    "Severity",
    "find_repository_root",
    "load_repository",
    "validate_paths",
]
