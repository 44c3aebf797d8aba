"""Named crash points, so tests can kill the agent at an exact step.

``COSGITOPS_CRASH_AT=<step>`` makes the process SIGKILL itself the first time it
reaches ``crash_point(<step>)``; ``<step>#N`` waits for the N-th time (a step that runs
once per layer, say). SIGKILL rather than an exception: nothing gets to clean up, which
is exactly what a power cut or an OOM kill does to a real device.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "COSGITOPS_CRASH_AT"

# Every crash point the agent passes through, in the order an upgrade reaches them.
UPGRADE_STEPS: tuple[str, ...] = (
    "index-refreshed",
    "release-chosen",
    "signature-verified",
    "journal-begun",
    "layer-download-partial",
    "layer-downloaded",
    "extract-partial",
    "layer-extracted",
    "transition-complete",
    "slot-stored",
    "state-committed",
    "links-updated",
    "cache-collected",
)
BOOT_STEPS: tuple[str, ...] = (
    "boot-attempt-counted",
    "rejected-recorded",
    "rollback-committed",
)

_hits: dict[str, int] = {}


def _wanted() -> tuple[str, int] | None:
    value = os.environ.get(CRASH_ENV)
    if not value:
        return None
    name, _, count = value.partition("#")
    return name, int(count) if count.isdigit() else 1


def crash_point(step: str) -> None:
    """Kill this process right here if the environment asks for it."""
    wanted = _wanted()
    if wanted is None or wanted[0] != step:
        return
    _hits[step] = _hits.get(step, 0) + 1
    if _hits[step] >= wanted[1]:
        os.kill(os.getpid(), signal.SIGKILL)
