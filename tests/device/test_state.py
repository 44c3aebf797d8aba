from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cosgitops.device.state import (
    BootAssessment,
    DeviceState,
    RejectedList,
    SlotRecord,
    StateJournal,
    Transaction,
)
from cosgitops.errors import DeviceError

RECORD = SlotRecord(
    version="1.0.0",
    digest="sha256:" + "a" * 64,
    image="oci:/x@sha256:" + "a" * 64,
    storage="state/slots/1.0.0-aaaa",
    layers=("sha256:" + "b" * 64,),
    tree_digest="sha256:" + "c" * 64,
)


def test_round_trip_and_generations(tmp_path: Path) -> None:
    journal = StateJournal(tmp_path / "state" / "state.json")
    assert journal.load() == DeviceState()
    state = DeviceState(
        active=RECORD,
        passive=replace(RECORD, version="0.9.0"),
        boot=BootAssessment(pending=True, attempts=2, last_failure="web: exit 1"),
        transaction=Transaction("upgrade", "1.1.0", "sha256:" + "d" * 64, "img", "now"),
    )
    first = journal.save(state)
    second = journal.save(first)
    assert (first.generation, second.generation) == (1, 2)
    loaded = journal.load()
    assert loaded == second
    assert loaded.slot("active") == RECORD
    assert loaded.records() == [RECORD, replace(RECORD, version="0.9.0")]
    # atomic replacement leaves no temporary files behind
    assert sorted(p.name for p in journal.path.parent.iterdir()) == ["state.json"]
    data = json.loads(journal.path.read_text())
    assert data["slots"]["recovery"] is None and data["boot"]["pending"] is True


def test_unreadable_journal_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(DeviceError, match="unreadable"):
        StateJournal(path).load()
    path.write_text(json.dumps({"schemaVersion": 99}))
    with pytest.raises(DeviceError):
        StateJournal(path).load()


def test_rejected_list(tmp_path: Path) -> None:
    rejected = RejectedList(tmp_path / "agent" / "rejected.json")
    assert rejected.load() == []
    rejected.add("1.2.0", "sha256:" + "1" * 64, "failed 3 boots")
    rejected.add("1.2.0", "sha256:" + "1" * 64, "again")
    rejected.add("1.3.0", "sha256:" + "2" * 64, "by hand")
    items = rejected.load()
    assert [(r.version, r.reason) for r in items] == [
        ("1.2.0", "failed 3 boots"),
        ("1.3.0", "by hand"),
    ]
    assert all(r.at for r in items)
    rejected.remove("1.2.0")
    assert [r.version for r in RejectedList(rejected.path).load()] == ["1.3.0"]
    rejected.path.write_text("[")
    with pytest.raises(DeviceError):
        rejected.load()
