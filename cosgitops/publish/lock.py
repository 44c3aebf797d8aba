"""One publisher at a time per index folder.

An exclusive ``flock`` on ``<public>/.cosgitops-publish.lock``
(:func:`cosgitops.fsutil.file_lock`): the kernel drops it when the holder exits, even
on a crash, so a dead publisher never wedges the index. A second publisher waits
(bounded) and then works on the state the first one left. The lock file is empty and
need not be uploaded with the index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from cosgitops.errors import ConcurrentPublishError, PublishError
from cosgitops.fsutil import file_lock
from cosgitops.publish.paths import LOCK_FILE


@contextlib.contextmanager
def publish_lock(public_dir: Path, *, timeout_seconds: float) -> Iterator[Path]:
    """Hold the index lock for the ``with`` block; yields the lock file's path."""
    path = public_dir / LOCK_FILE
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                file_lock(
                    path,
                    timeout=timeout_seconds,
                    busy=lambda held: ConcurrentPublishError(
                        f"another publisher has held {held} for more than {timeout_seconds:.0f} s",
                        hint="wait for it to finish, or check for a hung `cosgitops publish`",
                    ),
                )
            )
        except OSError as exc:
            raise PublishError(
                f"cannot create the publish lock in {public_dir}: {exc.strerror}",
                hint="the index folder must be writable by the publisher",
            ) from exc
        yield path
