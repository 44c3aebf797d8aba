"""The device's journal: ``state/state.json`` and ``agent/rejected.json``.

``state.json`` is the single source of truth for which slot is active, passive and
recovery, whether the active slot still awaits its boot assessment, and which
operation was in flight. It is only ever replaced whole (temp file, fsync, rename,
fsync of the folder), so after a crash it holds either the old or the new state and
every slot it names is complete: slots are written and synced before the state that
points at them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cosgitops.errors import DeviceError
from cosgitops.fsutil import atomic_write_bytes

STATE_SCHEMA_VERSION = 1
SLOT_NAMES = ("active", "passive", "recovery")


def now_text() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SlotRecord:
    """One installed release in one slot."""

    version: str
    digest: str  # the signed digest (what the index names and the signature covers)
    image: str  # NAME@DIGEST as published
    storage: str  # where the slot lives, relative to the device root
    format: str = "dir"  # dir | squashfs | elemental
    manifest_digest: str = ""  # the platform manifest whose layers were applied
    layers: tuple[str, ...] = ()
    tree_digest: str = ""  # over the unpacked tree (see slots.tree_digest)
    file_digest: str = ""  # sha256 of the squashfs image file
    installed: str = ""

    def ident(self) -> dict[str, str]:
        return {"version": self.version, "digest": self.digest}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "digest": self.digest,
            "image": self.image,
            "storage": self.storage,
            "format": self.format,
            "manifestDigest": self.manifest_digest,
            "layers": list(self.layers),
            "treeDigest": self.tree_digest,
            "fileDigest": self.file_digest,
            "installed": self.installed,
        }

    @classmethod
    def from_json(cls, data: Any) -> SlotRecord:
        return cls(
            version=str(data["version"]),
            digest=str(data["digest"]),
            image=str(data["image"]),
            storage=str(data["storage"]),
            format=str(data.get("format", "dir")),
            manifest_digest=str(data.get("manifestDigest", "")),
            layers=tuple(str(layer) for layer in data.get("layers") or ()),
            tree_digest=str(data.get("treeDigest", "")),
            file_digest=str(data.get("fileDigest", "")),
            installed=str(data.get("installed", "")),
        )


@dataclass(frozen=True)
class BootAssessment:
    pending: bool = False
    attempts: int = 0  # boots of the pending slot so far, counted before its checks run
    last_failure: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "attempts": self.attempts,
            "lastFailure": self.last_failure,
        }

    @classmethod
    def from_json(cls, data: Any) -> BootAssessment:
        data = data or {}
        return cls(
            bool(data.get("pending", False)),
            int(data.get("attempts", 0)),
            str(data.get("lastFailure", "")),
        )


@dataclass(frozen=True)
class Transaction:
    """An operation that began and has not finished (it may have crashed)."""

    operation: str  # upgrade | upgrade-recovery | rollback | reset
    version: str = ""
    digest: str = ""
    image: str = ""
    started: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "version": self.version,
            "digest": self.digest,
            "image": self.image,
            "started": self.started,
        }

    @classmethod
    def from_json(cls, data: Any) -> Transaction | None:
        if not data:
            return None
        return cls(
            str(data["operation"]),
            str(data.get("version", "")),
            str(data.get("digest", "")),
            str(data.get("image", "")),
            str(data.get("started", "")),
        )


@dataclass(frozen=True)
class Failure:
    """The last operation that began changing the device and was refused or failed."""

    operation: str
    version: str = ""
    message: str = ""
    hint: str = ""
    at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "version": self.version,
            "message": self.message,
            "hint": self.hint,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: Any) -> Failure | None:
        if not data:
            return None
        return cls(
            str(data["operation"]),
            str(data.get("version", "")),
            str(data.get("message", "")),
            str(data.get("hint", "")),
            str(data.get("at", "")),
        )


@dataclass(frozen=True)
class DeviceState:
    generation: int = 0
    active: SlotRecord | None = None
    passive: SlotRecord | None = None
    recovery: SlotRecord | None = None
    boot: BootAssessment = field(default_factory=BootAssessment)
    transaction: Transaction | None = None
    interrupted: Transaction | None = None  # the last transaction a crash cut short
    failed: Failure | None = None  # the last operation refused after it began
    updated: str = ""

    def slot(self, name: str) -> SlotRecord | None:
        if name not in SLOT_NAMES:
            raise ValueError(name)
        value: SlotRecord | None = getattr(self, name)
        return value

    def records(self) -> list[SlotRecord]:
        return [record for record in (self.active, self.passive, self.recovery) if record]

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": STATE_SCHEMA_VERSION,
            "generation": self.generation,
            "updated": self.updated,
            "slots": {
                name: record.to_json() if (record := self.slot(name)) else None
                for name in SLOT_NAMES
            },
            "boot": self.boot.to_json(),
            "transaction": self.transaction.to_json() if self.transaction else None,
            "interrupted": self.interrupted.to_json() if self.interrupted else None,
            "failed": self.failed.to_json() if self.failed else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> DeviceState:
        if data.get("schemaVersion") != STATE_SCHEMA_VERSION:
            raise ValueError(f"schemaVersion {data.get('schemaVersion')!r}")
        slots = data.get("slots") or {}
        return cls(
            generation=int(data.get("generation", 0)),
            active=SlotRecord.from_json(slots["active"]) if slots.get("active") else None,
            passive=SlotRecord.from_json(slots["passive"]) if slots.get("passive") else None,
            recovery=SlotRecord.from_json(slots["recovery"]) if slots.get("recovery") else None,
            boot=BootAssessment.from_json(data.get("boot")),
            transaction=Transaction.from_json(data.get("transaction")),
            interrupted=Transaction.from_json(data.get("interrupted")),
            failed=Failure.from_json(data.get("failed")),
            updated=str(data.get("updated", "")),
        )


class UnreadableJournalError(DeviceError):
    """``state.json`` is torn or malformed (something other than the agent wrote it)."""


class StateJournal:
    """Reads and atomically replaces ``state.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> DeviceState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return DeviceState()
        except IsADirectoryError as exc:
            raise UnreadableJournalError(
                f"{self.path} is a directory",
                hint="move it out of the device root, then run `cosgitops device reset` to "
                "rebuild the journal from the recovery slot",
            ) from exc
        try:
            return DeviceState.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise UnreadableJournalError(
                f"{self.path} is unreadable: {exc}",
                hint="the journal is only ever replaced atomically, so something else wrote "
                "it; run `cosgitops device reset` to rebuild it from the recovery slot (the "
                "unreadable file is kept beside it; oem/ and persistent/ are not touched)",
            ) from exc

    def save(self, state: DeviceState) -> DeviceState:
        """Write ``state`` as the next generation and return what was written."""
        written = replace(state, generation=state.generation + 1, updated=now_text())
        data = json.dumps(written.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        atomic_write_bytes(self.path, data)
        return written


class RecoveryCopy:
    """``recovery/slot.json``: a copy of the recovery slot's record on the recovery
    partition, so `device reset` can rebuild a journal that was destroyed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> SlotRecord | None:
        try:
            data = json.loads(self.path.read_bytes())
            return SlotRecord.from_json(data["recovery"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, record: SlotRecord | None) -> None:
        if record is None:
            self.path.unlink(missing_ok=True)
            return
        if self.load() == record:
            return
        data = json.dumps({"recovery": record.to_json()}, indent=2, sort_keys=True)
        atomic_write_bytes(self.path, data.encode() + b"\n")


@dataclass(frozen=True)
class RejectedRelease:
    version: str
    digest: str
    reason: str = ""
    at: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "version": self.version,
            "digest": self.digest,
            "reason": self.reason,
            "at": self.at,
        }


class RejectedList:
    """``agent/rejected.json``: releases this device rolled back from, never offered again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[RejectedRelease]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise DeviceError(
                f"{self.path} is not JSON: {exc}",
                hint="fix or delete the file; it lists releases this device must not take",
            ) from exc
        try:
            return [
                RejectedRelease(
                    str(item["version"]),
                    str(item["digest"]),
                    str(item.get("reason", "")),
                    str(item.get("at", "")),
                )
                for item in data.get("rejected", [])
            ]
        except (KeyError, TypeError, AttributeError) as exc:
            raise DeviceError(f"{self.path} is malformed: {exc!r}") from exc

    def add(self, version: str, digest: str, reason: str) -> None:
        current = self.load()
        if any(item.digest == digest and item.version == version for item in current):
            return
        current.append(RejectedRelease(version, digest, reason, now_text()))
        self._save(current)

    def remove(self, version: str) -> None:
        current = self.load()
        kept = [item for item in current if item.version != version]
        if len(kept) != len(current):
            self._save(kept)

    def _save(self, items: list[RejectedRelease]) -> None:
        data = {"rejected": [item.to_json() for item in items]}
        atomic_write_bytes(self.path, json.dumps(data, indent=2).encode() + b"\n")
