"""Named crash points, so tests can kill the agent at an exact step.

``COSGITOPS_CRASH_AT=<step>`` makes the process SIGKILL itself the first time it
reaches ``crash_point(<step>)``; ``<step>#N`` waits for the N-th time (a step that runs
once per layer, say). SIGKILL rather than an exception: nothing gets to clean up, which
is exactly what a power cut or an OOM kill does to a real device.

``COSGITOPS_FILL_AT=<step>[#N]`` with ``COSGITOPS_FILL_PATH=<file>`` fills the file
system holding ``<file>`` at that step instead (another program eating the disk), and
the agent carries on into the full disk; both may name the same step (fill, then kill).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal

CRASH_ENV = "COSGITOPS_CRASH_AT"
FILL_ENV = "COSGITOPS_FILL_AT"
FILL_PATH_ENV = "COSGITOPS_FILL_PATH"

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
RESET_STEPS: tuple[str, ...] = (
    "reset-begun",
    "reset-copied",
    "reset-stored",
)

_hits: dict[tuple[str, str], int] = {}


def _due(variable: str, step: str) -> bool:
    value = os.environ.get(variable)
    if not value:
        return False
    name, _, count = value.partition("#")
    if name != step:
        return False
    key = (variable, step)
    _hits[key] = _hits.get(key, 0) + 1
    return _hits[key] == (int(count) if count.isdigit() else 1)


def fill_file_system(path: str) -> None:
    """Write zeros to ``path`` until its file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        for size in (1024 * 1024, 4096, 512, 1):
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
        with contextlib.suppress(OSError):
            os.fsync(fd)
    except OSError as exc:  # pragma: no cover - only ENOSPC is expected
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def crash_point(step: str) -> None:
    """Fill the disk and/or kill this process right here if the environment asks."""
    if _due(FILL_ENV, step):
        fill_file_system(os.environ[FILL_PATH_ENV])
    if _due(CRASH_ENV, step):
        os.kill(os.getpid(), signal.SIGKILL)
