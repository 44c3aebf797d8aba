"""Reporters: the same :class:`Report` as text, JSON, SARIF 2.1.0 or GitHub annotations."""

from __future__ import annotations

import json
from typing import Any

from cosgitops import __version__
from cosgitops.validate.diagnostics import Diagnostic, Report

FORMATS = ("text", "json", "sarif", "github")
INFORMATION_URI = "https://cosgitops.dev/docs/validate"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

_COLORS = {"error": "\033[31m", "warning": "\033[33m", "dim": "\033[2m", "bold": "\033[1m"}
_RESET = "\033[0m"


def _paint(text: str, style: str, color: bool) -> str:
    return f"{_COLORS[style]}{text}{_RESET}" if color else text


def summary(report: Report) -> str:
    errors, warnings = len(report.errors), len(report.warnings)
    files = f"{report.files_checked} file{'s' if report.files_checked != 1 else ''}"
    if not errors and not warnings:
        return f"ok: {files} checked, no problems"
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return f"{', '.join(parts)} in {files}"


def render_text(report: Report, *, color: bool = False) -> str:
    """``file:line:col: error[rule] message`` and an indented hint line per diagnostic."""
    lines = []
    for diagnostic in report.diagnostics:
        where = _paint(f"{diagnostic.file}:{diagnostic.line}:{diagnostic.column}:", "bold", color)
        label = _paint(f"{diagnostic.severity}[{diagnostic.rule}]", diagnostic.severity, color)
        lines.append(f"{where} {label} {diagnostic.message}")
        if diagnostic.hint:
            lines.append(_paint(f"  hint: {diagnostic.hint}", "dim", color))
    lines.append(summary(report))
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"


def render_sarif(report: Report) -> str:
    """SARIF 2.1.0 for ``github/codeql-action/upload-sarif`` (paths relative to the
    checkout, which is where the command runs in a workflow)."""
    from cosgitops.validate.rules import RULES, rule

    used = sorted({d.rule for d in report.diagnostics} | set(RULES))
    index = {rule_id: position for position, rule_id in enumerate(used)}
    rules = []
    for rule_id in used:
        entry = rule(rule_id)
        rules.append(
            {
                "id": entry.id,
                "name": "".join(part.capitalize() for part in entry.id.split("-")),
                "shortDescription": {"text": entry.summary},
                "fullDescription": {"text": entry.summary},
                "help": {"text": entry.help, "markdown": entry.help},
                "helpUri": f"{INFORMATION_URI}#{entry.id}",
                "defaultConfiguration": {"level": entry.severity},
                "properties": {"tags": ["cosgitops"]},
            }
        )
    results = [_sarif_result(d, index[d.rule]) for d in report.diagnostics]
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "cosgitops",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _sarif_result(diagnostic: Diagnostic, rule_index: int) -> dict[str, Any]:
    text = diagnostic.message
    if diagnostic.hint:
        text = f"{text} (hint: {diagnostic.hint})"
    result: dict[str, Any] = {
        "ruleId": diagnostic.rule,
        "ruleIndex": rule_index,
        "level": diagnostic.severity,
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": _artifact(diagnostic.file),
                    "region": {
                        "startLine": diagnostic.line,
                        "startColumn": diagnostic.column,
                    },
                }
            }
        ],
    }
    if diagnostic.pointer:
        result["properties"] = {"pointer": diagnostic.pointer}
    return result


def _artifact(path: str) -> dict[str, str]:
    """Relative paths are relative to the checkout (%SRCROOT%, which the uploader
    resolves); a file outside it keeps an absolute file URI."""
    from urllib.parse import quote

    if path.startswith("/"):
        return {"uri": "file://" + quote(path)}
    return {"uri": quote(path), "uriBaseId": "%SRCROOT%"}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(report: Report) -> str:
    """GitHub Actions workflow commands: one annotation per diagnostic."""
    lines = []
    for d in report.diagnostics:
        message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
        lines.append(
            f"::{d.severity} file={_escape_property(d.file)},line={d.line},col={d.column},"
            f"title={_escape_property(f'cosgitops {d.rule}')}::{_escape_data(message)}"
        )
    lines.append(summary(report))
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def github_step_summary(report: Report) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: a verdict line and a table of findings."""
    verdict = "passed" if report.ok else "failed"
    lines = [f"### cosgitops validate {verdict}", "", summary(report), ""]
    if report.diagnostics:
        lines += ["| | Location | Rule | Message |", "|---|---|---|---|"]
        for d in report.diagnostics:
            icon = ":x:" if d.severity == "error" else ":warning:"
            message = d.message + (f" — {d.hint}" if d.hint else "")
            location = f"`{_cell(d.file)}:{d.line}:{d.column}`"
            lines.append(f"| {icon} | {location} | `{d.rule}` | {_cell(message)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def render(report: Report, output_format: str, *, color: bool = False) -> str:
    if output_format == "json":
        return render_json(report)
    if output_format == "sarif":
        return render_sarif(report)
    if output_format == "github":
        return render_github(report)
    return render_text(report, color=color)
