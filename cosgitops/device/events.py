"""One line per agent event on the system console: ``COSGITOPS {json}``.

On a booted device the units set ``COSGITOPS_CONSOLE_EVENTS=1``, so the serial console
(and a person in front of it) sees what the agent decided at each boot: which image
runs, whether the boot committed, which update was applied. Host-side tools (the QEMU
tests, ``demo --boot``, ``boot-test``) read exactly these lines from the serial log.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EVENTS_ENV = "COSGITOPS_CONSOLE_EVENTS"
PREFIX = "COSGITOPS "
CONSOLE = Path("/dev/console")


def enabled() -> bool:
    return os.environ.get(EVENTS_ENV, "") not in ("", "0", "false", "no")


def format_event(event: str, fields: Mapping[str, Any]) -> str:
    payload = {"event": event, **fields}
    return PREFIX + json.dumps(payload, sort_keys=False, separators=(", ", ": "), default=str)


def emit(event: str, **fields: Any) -> None:
    """Write the event to the console when events are on; never fails the caller."""
    if not enabled():
        return
    line = format_event(event, fields) + "\n"
    target = os.environ.get("COSGITOPS_CONSOLE_PATH") or str(CONSOLE)
    with contextlib.suppress(OSError), open(target, "a", encoding="utf-8") as console:
        console.write(line)


def parse_events(text: str) -> list[dict[str, Any]]:
    """Every event line in a serial log (the log may hold other output around them)."""
    events: list[dict[str, Any]] = []
    for raw in text.splitlines():
        start = raw.find(PREFIX + "{")
        if start < 0:
            continue
        candidate = raw[start + len(PREFIX) :]
        end = candidate.rfind("}")
        if end < 0:
            continue
        with contextlib.suppress(ValueError):
            value = json.loads(candidate[: end + 1])
            if isinstance(value, dict) and "event" in value:
                events.append(value)
    return events
