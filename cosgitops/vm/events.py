"""What a guest says on its serial console: lines, and ``COSGITOPS {json}`` events.

Units in the image print one line per event (PLAN.md, "Guest events"):
``COSGITOPS {"event": "booted", "version": ..., "slot": ..., ...}``. Consoles add
terminal escape sequences and carriage returns, and kernel messages can land on the
same line; the parser looks for the marker anywhere in a line and reads one JSON object
after it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops.device.events import PREFIX

MARKER = PREFIX  # "COSGITOPS ", as the guest side writes it
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class GuestEvent:
    event: str
    data: Mapping[str, Any] = field(default_factory=dict)
    line: int = 0  # line number in the serial log, from 1

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def clean_line(raw: str) -> str:
    """A console line without escape sequences, carriage returns or other controls."""
    text = _ESCAPES.sub("", raw)
    return "".join(ch for ch in text if ch == "\t" or ch >= " ")


def parse_event(line: str, number: int = 0) -> GuestEvent | None:
    """The event on one (cleaned) line, or None."""
    index = line.find(MARKER + "{")
    if index < 0:
        return None
    try:
        value, _ = _DECODER.raw_decode(line, index + len(MARKER))
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("event"), str):
        return None
    return GuestEvent(value["event"], value, number)


def parse_events(lines: Iterable[str]) -> list[GuestEvent]:
    events = []
    for number, raw in enumerate(lines, start=1):
        event = parse_event(clean_line(raw), number)
        if event is not None:
            events.append(event)
    return events


def read_lines(log: Path) -> list[str]:
    """The cleaned lines of a serial log (undecodable bytes replaced)."""
    data = Path(log).read_bytes()
    return [clean_line(line) for line in data.decode("utf-8", errors="replace").split("\n")]


def read_events(log: Path) -> list[GuestEvent]:
    return parse_events(read_lines(log))


def event_matches(name: str, **fields: Any) -> Callable[[str], bool]:
    """A line predicate for ``Machine.boot(until=...)``: the event ``name`` with these
    field values was printed."""

    def predicate(line: str) -> bool:
        event = parse_event(line)
        return (
            event is not None
            and event.event == name
            and all(event.get(key) == value for key, value in fields.items())
        )

    return predicate


def iter_complete_lines(buffer: bytearray) -> Iterator[str]:
    """Remove and yield the complete lines at the start of ``buffer``, cleaned."""
    while True:
        index = buffer.find(b"\n")
        if index < 0:
            return
        raw = bytes(buffer[:index])
        del buffer[: index + 1]
        yield clean_line(raw.decode("utf-8", errors="replace"))
