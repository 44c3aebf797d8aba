"""What validation reports: located diagnostics and the report that collects them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One finding. ``file`` is the path as shown to the user (relative to the current
    folder when inside it); ``line``/``column`` are 1-based; ``pointer`` is the JSON
    pointer of the offending value ("" for the whole file)."""

    file: str
    line: int
    column: int
    severity: Severity
    rule: str
    message: str
    pointer: str = ""
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "rule": self.rule,
            "message": self.message,
            "pointer": self.pointer,
            "hint": self.hint,
        }

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.severity}[{self.rule}] {self.message}"


@dataclass
class Report:
    """The result of a validation run. ``ok`` is False when any error was found
    (warnings alone keep it True; ``--strict`` is the CLI's business)."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    files_checked: int = 0

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    def passes(self, *, strict: bool = False) -> bool:
        return self.ok and not (strict and self.warnings)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "filesChecked": self.files_checked,
            "diagnostics": [d.to_json() for d in self.diagnostics],
        }


class Finding(NamedTuple):
    """A problem found inside one document, before it is located: the engine turns
    ``path`` into a line and column with the document's positions.

    (Internal records are NamedTuples: cheaper to define than dataclasses, and the
    pre-commit hook pays for every definition on every commit.)"""

    path: tuple[str | int, ...]
    rule: str
    message: str
    hint: str | None = None
    severity: Severity = "error"
    at_key: bool = False  # point at the key rather than its value
