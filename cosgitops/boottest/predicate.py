"""The boot attestation's content: an in-toto v1 statement whose subject is the candidate
image and whose predicate (type ``https://cosgitops.dev/boot-test/v1``) says what the
boot test did and how it ended.

Pure: values in, bytes out; bytes in, values or :class:`PredicateError` out. Only a
statement whose signature was verified should be parsed into decisions.

The predicate::

    {"derivative": "edge-gateway", "channel": "stable",
     "candidate": {"version": "1.4.0", "image": "NAME@sha256:...", "digest": "sha256:..."},
     "from": {"version": "1.3.0", "image": "NAME@sha256:...", "digest": "sha256:..."} | null,
     "result": "passed" | "failed", "failedStep": null | "<step name>",
     "steps": [{"name", "outcome": "passed"|"failed"|"skipped", "durationSeconds",
                "detail", "serialLog": "<name>" | null}],
     "serialLogs": [{"name", "digest": "sha256:...", "size"}],
     "environment": {"qemu", "firmware", "accelerator", "cosgitops", ...},
     "startedOn": RFC 3339, "finishedOn": RFC 3339}

``from`` is null for a fresh install (nothing was published on the channel yet).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cosgitops.oci.digest import DIGEST_RE
from cosgitops.signing import payloads

PREDICATE_TYPE = "https://cosgitops.dev/boot-test/v1"
Outcome = Literal["passed", "failed", "skipped"]
OUTCOMES: tuple[Outcome, ...] = ("passed", "failed", "skipped")


class PredicateError(ValueError):
    """The statement or its predicate is malformed."""


@dataclass(frozen=True)
class ImageRef:
    """One release in a boot test: the candidate, or the release it upgraded from."""

    version: str
    digest: str  # sha256:<hex>: what was signed and booted
    image: str = ""  # NAME@DIGEST

    def to_json(self) -> dict[str, str]:
        return {"version": self.version, "image": self.image, "digest": self.digest}

    @classmethod
    def from_json(cls, data: Any, what: str) -> ImageRef:
        value = _object(data, what)
        digest = value.get("digest")
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise PredicateError(f"{what}.digest {digest!r} is not a sha256 digest")
        return cls(
            version=_string(value.get("version"), f"{what}.version"),
            digest=digest,
            image=str(value.get("image") or ""),
        )


@dataclass(frozen=True)
class StepResult:
    name: str
    outcome: Outcome
    duration_seconds: float = 0.0
    detail: str = ""  # what happened, or why it failed
    serial_log: str | None = None  # the SerialLog.name of the boot this step watched

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "durationSeconds": round(self.duration_seconds, 3),
            "detail": self.detail,
            "serialLog": self.serial_log,
        }

    @classmethod
    def from_json(cls, data: Any, what: str) -> StepResult:
        value = _object(data, what)
        outcome = value.get("outcome")
        if outcome not in OUTCOMES:
            raise PredicateError(f"{what}.outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        duration = value.get("durationSeconds", 0)
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
            raise PredicateError(f"{what}.durationSeconds {duration!r} is not a duration")
        log = value.get("serialLog")
        return cls(
            name=_string(value.get("name"), f"{what}.name"),
            outcome=outcome,
            duration_seconds=float(duration),
            detail=str(value.get("detail") or ""),
            serial_log=None if log is None else str(log),
        )


@dataclass(frozen=True)
class SerialLog:
    """One boot's serial console, by its digest (the log itself stays with the CI run)."""

    name: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "size": self.size}

    @classmethod
    def from_json(cls, data: Any, what: str) -> SerialLog:
        value = _object(data, what)
        digest = value.get("digest")
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise PredicateError(f"{what}.digest {digest!r} is not a sha256 digest")
        size = value.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PredicateError(f"{what}.size {size!r} is not a byte count")
        return cls(_string(value.get("name"), f"{what}.name"), digest, size)


@dataclass(frozen=True)
class BootTestResult:
    """What one ``cosgitops boot-test`` run found: the predicate of its attestation."""

    derivative: str
    candidate: ImageRef
    steps: tuple[StepResult, ...]
    from_release: ImageRef | None = None  # None: a fresh install
    channel: str = ""
    serial_logs: tuple[SerialLog, ...] = ()
    environment: Mapping[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""

    @property
    def failed_step(self) -> StepResult | None:
        return next((step for step in self.steps if step.outcome == "failed"), None)

    @property
    def passed(self) -> bool:
        """Every step ran and passed (a skipped step proves nothing)."""
        return bool(self.steps) and all(step.outcome == "passed" for step in self.steps)

    @property
    def result(self) -> Literal["passed", "failed"]:
        return "passed" if self.passed else "failed"

    @property
    def duration_seconds(self) -> float:
        return sum(step.duration_seconds for step in self.steps)

    def to_json(self) -> dict[str, Any]:
        failed = self.failed_step
        return {
            "derivative": self.derivative,
            "channel": self.channel,
            "candidate": self.candidate.to_json(),
            "from": None if self.from_release is None else self.from_release.to_json(),
            "result": self.result,
            "failedStep": None if failed is None else failed.name,
            "steps": [step.to_json() for step in self.steps],
            "serialLogs": [log.to_json() for log in self.serial_logs],
            "environment": dict(self.environment),
            "startedOn": self.started,
            "finishedOn": self.finished,
        }

    @classmethod
    def from_json(cls, data: Any) -> BootTestResult:
        value = _object(data, "predicate")
        steps = value.get("steps")
        if not isinstance(steps, list):
            raise PredicateError("predicate.steps is not a list")
        logs = value.get("serialLogs") or []
        if not isinstance(logs, list):
            raise PredicateError("predicate.serialLogs is not a list")
        origin = value.get("from")
        environment = value.get("environment") or {}
        if not isinstance(environment, dict):
            raise PredicateError("predicate.environment is not an object")
        result = cls(
            derivative=_string(value.get("derivative"), "predicate.derivative"),
            candidate=ImageRef.from_json(value.get("candidate"), "predicate.candidate"),
            steps=tuple(
                StepResult.from_json(step, f"predicate.steps[{i}]") for i, step in enumerate(steps)
            ),
            from_release=None if origin is None else ImageRef.from_json(origin, "predicate.from"),
            channel=str(value.get("channel") or ""),
            serial_logs=tuple(
                SerialLog.from_json(log, f"predicate.serialLogs[{i}]") for i, log in enumerate(logs)
            ),
            environment=environment,
            started=str(value.get("startedOn") or ""),
            finished=str(value.get("finishedOn") or ""),
        )
        # The summary must agree with the steps: a "passed" over a failed step is a lie.
        claimed = value.get("result")
        if claimed != result.result:
            raise PredicateError(
                f"predicate.result {claimed!r} does not match its steps ({result.result})"
            )
        return result


def statement(result: BootTestResult, *, subject_name: str) -> bytes:
    """The in-toto v1 statement to sign: subject = the candidate image by digest."""
    algorithm, _, hex_value = result.candidate.digest.partition(":")
    document = {
        "_type": payloads.IN_TOTO_STATEMENT_V1,
        "subject": [{"name": subject_name, "digest": {algorithm: hex_value}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": result.to_json(),
    }
    return payloads.go_json(document)


@dataclass(frozen=True)
class AttestationClaims:
    subject_digests: tuple[str, ...]
    result: BootTestResult


def parse_statement(payload: bytes) -> AttestationClaims:
    """The subject digests and the predicate of a boot-test statement."""
    try:
        claims = payloads.parse_statement(payload)
    except payloads.PayloadError as exc:
        raise PredicateError(str(exc)) from exc
    if claims.predicate_type != PREDICATE_TYPE:
        raise PredicateError(f"predicate type {claims.predicate_type!r} is not {PREDICATE_TYPE}")
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:  # parse_statement read it already
        raise PredicateError("the statement is not JSON") from exc
    predicate = document.get("predicate") if isinstance(document, dict) else None
    return AttestationClaims(claims.subject_digests, BootTestResult.from_json(predicate))


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PredicateError(f"{what} is not a JSON object")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PredicateError(f"{what} is missing or not a string")
    return value


def steps_table(steps: Sequence[StepResult]) -> list[tuple[str, str, str, str]]:
    """Rows (step, outcome, time, detail) for a text table."""
    return [
        (step.name, step.outcome, f"{step.duration_seconds:.1f}s", step.detail) for step in steps
    ]
