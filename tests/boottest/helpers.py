"""Boot-test results made up for the attestation tests (no VM needed): the steps a real
run records, passing or failing at a chosen step, with serial-log digests of made-up
console output."""

from __future__ import annotations

from cosgitops.boottest.predicate import BootTestResult, ImageRef, SerialLog, StepResult
from cosgitops.oci.digest import sha256_digest

STEPS = ("disk", "boot-from", "upgrade", "boot-candidate", "health", "fallback")
ENVIRONMENT = {
    "qemu": "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)",
    "firmware": "OVMF 2022.11-6+deb12u2",
    "accelerator": "tcg",
    "cosgitops": "0.1.0",
}


def synthetic_result(
    candidate_digest: str,
    *,
    derivative: str = "edge-gateway",
    version: str = "1.1.0",
    from_version: str | None = "1.0.0",
    from_digest: str | None = None,
    fail_at: str | None = None,
    finished: str = "2026-01-01T00:10:00Z",
) -> BootTestResult:
    """A boot test of ``candidate_digest``; ``fail_at`` names the step that failed (the
    ones after it are skipped, as the runner does)."""
    steps: list[StepResult] = []
    logs: list[SerialLog] = []
    failed = False
    for number, name in enumerate(STEPS, start=1):
        if failed:
            steps.append(StepResult(name, "skipped"))
            continue
        log = None
        if name.startswith("boot") or name == "fallback":
            content = f"serial console of boot {number} ({name})\n".encode()
            log = f"{number:02d}-{name}.log"
            logs.append(SerialLog(log, sha256_digest(content), len(content)))
        if name == fail_at:
            failed = True
            steps.append(StepResult(name, "failed", 12.5, "health check 'web' exited 1", log))
        else:
            steps.append(StepResult(name, "passed", 10.0 * number, f"{name} done", log))
    origin = None
    if from_version is not None:
        origin = ImageRef(
            from_version,
            from_digest or sha256_digest(f"{derivative} {from_version}".encode()),
            f"registry.example.test/{derivative}@{from_digest or ''}",
        )
    return BootTestResult(
        derivative=derivative,
        candidate=ImageRef(
            version, candidate_digest, f"registry.example.test/{derivative}@{candidate_digest}"
        ),
        steps=tuple(steps),
        from_release=origin,
        channel="stable",
        serial_logs=tuple(logs),
        environment=dict(ENVIRONMENT),
        started="2026-01-01T00:00:00Z",
        finished=finished,
    )
