"""What a stage run did: one outcome per step (and per kind inside it), the files that
were refused, and the record of the last run of each stage.

Records live in ``<root>/run/cosgitops/stages/<stage>.json`` (``/run/cosgitops/stages``
on a running system: per boot, like systemd's own unit state), or in
``$COSGITOPS_STAGES_DIR`` when that is set; ``cosgitops device status`` reads them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cosgitops.fsutil import atomic_write_text

Status = Literal["applied", "unchanged", "skipped", "filtered", "failed"]
STATUSES: tuple[Status, ...] = ("applied", "unchanged", "skipped", "filtered", "failed")
RECORDS_ENV = "COSGITOPS_STAGES_DIR"
RECORDS_SUBDIR = "run/cosgitops/stages"
RECORD_FORMAT = 1


def records_dir(root: Path = Path("/")) -> Path:
    """Where the last run of each stage on ``root`` is recorded."""
    override = os.environ.get(RECORDS_ENV)
    if override:
        return Path(override)
    return Path(root) / RECORDS_SUBDIR


@dataclass
class KindOutcome:
    """What one kind of a step (files, users, ...) did."""

    kind: str
    status: Status
    detail: str = ""  # what changed, or why it was skipped
    error: str | None = None
    hint: str | None = None
    line: int | None = None
    traceback: str | None = None  # only for an internal error (a bug)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "status": self.status, "detail": self.detail}
        if self.error is not None:
            out["error"] = self.error
            out["hint"] = self.hint
            out["line"] = self.line
        if self.traceback is not None:
            out["traceback"] = self.traceback
        return out


@dataclass
class StepOutcome:
    stage: str
    file: str
    line: int
    column: int
    index: int
    name: str
    status: Status = "unchanged"
    kinds: list[KindOutcome] = field(default_factory=list)
    reason: str = ""  # why it was filtered or skipped
    error: str | None = None  # the first error, located at ``error_line``
    hint: str | None = None
    error_line: int | None = None
    seconds: float = 0.0
    internal: bool = False  # an internal error (a bug) failed it

    @property
    def location(self) -> str:
        return f"{self.file}:{self.error_line or self.line}"

    def finish(self) -> None:
        """Set the status from the kinds' outcomes (unless filtered or refused)."""
        if self.status in ("filtered", "failed"):
            return
        statuses = {kind.status for kind in self.kinds}
        if "failed" in statuses:
            self.status = "failed"
            first = next(kind for kind in self.kinds if kind.status == "failed")
            self.error, self.hint, self.error_line = first.error, first.hint, first.line
        elif "applied" in statuses:
            self.status = "applied"
        elif statuses == {"skipped"}:
            self.status = "skipped"
            self.reason = "; ".join(kind.detail for kind in self.kinds)
        else:
            self.status = "unchanged"

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "index": self.index,
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "hint": self.hint,
            "errorLine": self.error_line,
            "seconds": round(self.seconds, 4),
            "internalError": self.internal,
            "kinds": [kind.to_json() for kind in self.kinds],
        }


@dataclass
class FileProblem:
    """A cloud-config file that was not run at all (yip refuses a file it cannot load)."""

    file: str
    line: int
    column: int
    message: str
    rule: str = ""
    hint: str | None = None

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "rule": self.rule,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass
class RunReport:
    stage: str  # as asked for: "boot" runs boot.before, boot and boot.after
    stages: list[str]
    root: str
    live: bool
    sources: list[str] = field(default_factory=list)  # the folders read, in order
    files: list[str] = field(default_factory=list)
    steps: list[StepOutcome] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    record: str | None = None  # where this run was recorded
    record_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and all(step.status != "failed" for step in self.steps)

    @property
    def internal_errors(self) -> list[StepOutcome]:
        """Steps a bug in cosgitops failed (the command then exits 3)."""
        return [step for step in self.steps if step.internal]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for step in self.steps:
            counts[step.status] += 1
        return counts

    def event(self) -> dict[str, Any]:
        """The one-line summary units print to the console (``COSGITOPS {json}``)."""
        failed = [f"{step.location}: {step.error}" for step in self.steps if step.error]
        failed += [f"{problem.location}: {problem.message}" for problem in self.problems]
        return {
            "event": "stage",
            "stage": self.stage,
            "ok": self.ok,
            "steps": len(self.steps),
            **self.counts(),
            "refusedFiles": len(self.problems),
            "internalErrors": len(self.internal_errors),
            "seconds": round(self.seconds, 3),
            "errors": failed[:5],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "stage": self.stage,
            "stages": self.stages,
            "root": self.root,
            "live": self.live,
            "ok": self.ok,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(self.seconds, 4),
            "counts": self.counts(),
            "sources": self.sources,
            "files": self.files,
            "problems": [problem.to_json() for problem in self.problems],
            "steps": [step.to_json() for step in self.steps],
        }


def _record_name(stage: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stage)
    return f"{safe.lstrip('.') or '_'}.json"


def write_record(directory: Path, report: RunReport) -> Path:
    path = Path(directory) / _record_name(report.stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report.to_json(), indent=1) + "\n", 0o644)
    return path


def load_records(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """The last run of each stage recorded in ``directory`` (default: this system's),
    as ``{stage: {ok, started, seconds, counts, errors}}``; unreadable records are
    reported as such rather than hidden."""
    folder = Path(directory) if directory is not None else records_dir()
    records: dict[str, dict[str, Any]] = {}
    try:
        entries = sorted(folder.glob("*.json"))
    except OSError:
        return records
    for entry in entries:
        try:
            data = json.loads(entry.read_text(encoding="utf-8"))
            stage = str(data["stage"])
            errors = [
                f"{step['file']}:{step['errorLine'] or step['line']}: {step['error']}"
                for step in data.get("steps", [])
                if step.get("error")
            ] + [
                f"{p['file']}:{p['line']}:{p['column']}: {p['message']}"
                for p in data.get("problems", [])
            ]
            records[stage] = {
                "ok": bool(data["ok"]),
                "started": data.get("started"),
                "seconds": data.get("seconds"),
                "counts": data.get("counts", {}),
                "errors": errors,
            }
        except (OSError, ValueError, KeyError, TypeError) as error:
            records[entry.stem] = {"ok": False, "unreadable": f"{entry}: {error}"}
    from cosgitops.stages.model import BOOT_STAGES

    order = {name: index for index, name in enumerate(BOOT_STAGES)}
    return dict(sorted(records.items(), key=lambda item: (order.get(item[0], 99), item[0])))
