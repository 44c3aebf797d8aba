"""Console events: what the agent prints for the host side of the boot tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosgitops.device import events


def test_emit_only_when_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    console = tmp_path / "console"
    monkeypatch.setenv("COSGITOPS_CONSOLE_PATH", str(console))
    monkeypatch.delenv(events.EVENTS_ENV, raising=False)
    events.emit("booted", version="1.0.0")
    assert not console.exists()
    monkeypatch.setenv(events.EVENTS_ENV, "1")
    events.emit("booted", version="1.0.0", slot="active")
    events.emit("boot-check", outcome="committed")
    parsed = events.parse_events(console.read_text())
    assert parsed == [
        {"event": "booted", "version": "1.0.0", "slot": "active"},
        {"event": "boot-check", "outcome": "committed"},
    ]


def test_parse_skips_noise_and_broken_lines() -> None:
    log = (
        "[    3.1] kernel says hello\n"
        '\x1b[0mCOSGITOPS {"event": "booted", "slot": "active"}\r\n'
        'COSGITOPS {"event": "bro\n'
        "COSGITOPS not json\n"
        'COSGITOPS {"no-event": 1}\n'
        'noise COSGITOPS {"event": "upgrade", "to": "1.1.0"} trailing\n'
    )
    assert events.parse_events(log) == [
        {"event": "booted", "slot": "active"},
        {"event": "upgrade", "to": "1.1.0"},
    ]


def test_emit_never_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(events.EVENTS_ENV, "1")
    monkeypatch.setenv("COSGITOPS_CONSOLE_PATH", str(tmp_path / "missing" / "console"))
    events.emit("booted")
