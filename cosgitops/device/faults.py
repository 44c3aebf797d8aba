"""Named crash points, so tests can kill the agent at an exact step.

``COSGITOPS_CRASH_AT=<step>`` makes the process SIGKILL itself the first time it
reaches ``crash_point(<step>)``; ``<step>#N`` waits for the N-th time (a step that runs
once per layer, say). SIGKILL rather than an exception: nothing gets to clean up, which
is exactly what a power cut or an OOM kill does to a real device.

``COSGITOPS_FILL_AT=<step>[#N]`` with ``COSGITOPS_FILL_PATH=<file>`` fills the file
system holding ``<file>`` at that step instead (another program eating the disk), and
the agent carries on into the full disk; both may name the same step (fill, then kill).

``COSGITOPS_HANG_FILE=<file>`` (the units of a booted device set it to
``/oem/.cosgitops/hang-at``) is for power cuts from outside: when the file's first line
names the step, that line is removed (and synced), a ``fault`` event goes to the
console, and the agent stops there for good, so a test can cut the VM's power at
exactly that point. Absent file: nothing happens.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

CRASH_ENV = "COSGITOPS_CRASH_AT"
FILL_ENV = "COSGITOPS_FILL_AT"
FILL_PATH_ENV = "COSGITOPS_FILL_PATH"
HANG_FILE_ENV = "COSGITOPS_HANG_FILE"

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


def _hang_due(step: str) -> bool:
    path = os.environ.get(HANG_FILE_ENV)
    if not path:
        return False
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return False
    if not lines or lines[0] != step:
        return False
    from cosgitops.fsutil import atomic_write_text

    atomic_write_text(Path(path), "".join(line + "\n" for line in lines[1:]))
    return True


def crash_point(step: str) -> None:
    """Fill the disk, hang, or kill this process right here if asked to."""
    if _hang_due(step):
        from cosgitops.device import events

        events.emit("fault", step=step, action="hang")
        while True:
            time.sleep(3600)
    if _due(FILL_ENV, step):
        fill_file_system(os.environ[FILL_PATH_ENV])
    if _due(CRASH_ENV, step):
        os.kill(os.getpid(), signal.SIGKILL)
