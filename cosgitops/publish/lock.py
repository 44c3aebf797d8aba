"""One publisher at a time per index folder.

An exclusive ``flock`` on ``<public>/.cosgitops-publish.lock``: the kernel drops it
when the holder exits, even on a crash, so a dead publisher never wedges the index.
A second publisher waits (bounded) and then works on the state the first one left.
The lock file is empty and need not be uploaded with the index.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cosgitops.errors import ConcurrentPublishError, PublishError
from cosgitops.publish.paths import LOCK_FILE

_POLL_SECONDS = 0.05


@contextlib.contextmanager
def publish_lock(public_dir: Path, *, timeout_seconds: float) -> Iterator[Path]:
    """Hold the index lock for the ``with`` block; yields the lock file's path."""
    try:
        public_dir.mkdir(parents=True, exist_ok=True)
        path = public_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise PublishError(
            f"cannot create the publish lock in {public_dir}: {exc.strerror}",
            hint="the index folder must be writable by the publisher",
        ) from exc
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConcurrentPublishError(
                        f"another publisher has held {path} for more than {timeout_seconds:.0f} s",
                        hint="wait for it to finish, or check for a hung `cosgitops publish`",
                    ) from None
                time.sleep(_POLL_SECONDS)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
