from __future__ import annotations

import os
from pathlib import Path

import pytest

from cosgitops.vm.events import (
    clean_line,
    event_matches,
    iter_complete_lines,
    parse_event,
    parse_events,
    read_events,
    read_lines,
)
from cosgitops.vm.host import VMError, accelerator, find_firmware, kvm_works, qemu_version


def test_console_noise_is_stripped() -> None:
    raw = '\x1b[0m\x1b[37m\x1b[40m\x1b[H\x1b[J\x1b[1;1HCOSGITOPS {"event": "booted"}\r'
    assert clean_line(raw) == 'COSGITOPS {"event": "booted"}'
    assert clean_line("plain\ttext\x07") == "plain\ttext"


def test_events_anywhere_on_a_line() -> None:
    line = '[   12.5] systemd[1]: COSGITOPS {"event": "stage", "stage": "boot", "ok": true} tail'
    event = parse_event(line, 7)
    assert event is not None and event.event == "stage" and event.line == 7
    assert event["stage"] == "boot" and event.get("ok") is True and event.get("x", 1) == 1
    assert parse_event('COSGITOPS {"no": "event key"}') is None
    assert parse_event("COSGITOPS {broken json") is None
    assert parse_event('COSGITOPS ["event"]') is None
    assert parse_event("nothing here") is None


def test_events_from_a_log(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(
        b"BdsDxe: loading\r\n"
        b'\x1b[2JCOSGITOPS {"event": "booted", "version": "1.0.0", "root": "ro"}\r\n'
        b"\xff\xfe garbage bytes\n"
        b'COSGITOPS {"event": "boot-check", "outcome": "committed"}'
    )
    events = read_events(log)
    assert [(e.event, e.line) for e in events] == [("booted", 2), ("boot-check", 4)]
    assert events[0]["version"] == "1.0.0"
    assert read_lines(log)[0] == "BdsDxe: loading"
    assert parse_events(["a", 'COSGITOPS {"event": "x"}'])[0].line == 2
    booted = event_matches("booted", root="ro")
    assert booted('COSGITOPS {"event": "booted", "root": "ro", "slot": "active"}')
    assert not booted('COSGITOPS {"event": "booted", "root": "rw"}')
    assert not booted("booted root=ro")


def test_complete_lines_only() -> None:
    buffer = bytearray(b"one\r\ntwo\npart")
    assert list(iter_complete_lines(buffer)) == ["one", "two"]
    assert buffer == b"part"


def test_host_facts() -> None:
    assert qemu_version()[0].isdigit()
    firmware = find_firmware()
    assert firmware.code.is_file() and firmware.vars_template.is_file()
    assert isinstance(kvm_works(), bool)
    assert accelerator("tcg") == "tcg"
    assert accelerator() in ("kvm", "tcg")
    if not os.access("/dev/kvm", os.W_OK):
        assert accelerator() == "tcg"
    with pytest.raises(VMError, match="unknown accelerator"):
        accelerator("hvf")


def test_accelerator_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSGITOPS_VM_ACCEL", "tcg")
    assert accelerator() == "tcg"
    monkeypatch.setenv("COSGITOPS_VM_ACCEL", "whpx")
    with pytest.raises(VMError):
        accelerator()
