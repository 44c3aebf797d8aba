"""A freshly installed device driven through the real CLI, for the hardening tests.

Every test of issue 13 follows one protocol: install 1.0.0 (active and recovery slots)
from an OCI-layout fleet and a folder index, do the hostile thing, and check that the
command exits 1 with an ``error:`` and a ``hint:``, that the active slot is untouched,
that nothing outside the device root changed, and that every device command still
works afterwards (:meth:`FreshDevice.all_commands_work`).
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosgitops.device.agent import DeviceAgent
from cosgitops.device.slots import tree_digest
from tests.device.fleet import Fleet, base_layer, overlay_layer
from tests.device.tarbuild import Entry


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(*args: str) -> Result:
    """``cosgitops ARGS`` in this process: its exit code and what it printed."""
    from cosgitops.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def snapshot(folder: Path, *, skip: Sequence[Path] = ()) -> dict[str, tuple[Any, ...]]:
    """Every entry below ``folder`` (not following links): type, mode, size, mtime,
    link target; the folders in ``skip`` are left out."""
    skipped = {str(path) for path in skip}
    out: dict[str, tuple[Any, ...]] = {}
    for directory, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if os.path.join(directory, d) not in skipped]
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            target = os.readlink(path) if stat.S_ISLNK(info.st_mode) else ""
            size = info.st_size if not stat.S_ISDIR(info.st_mode) else 0
            out[os.path.relpath(path, folder)] = (info.st_mode, size, info.st_mtime_ns, target)
    return out


@dataclass
class FreshDevice:
    fleet: Fleet
    root: Path
    outside: Path  # everything the device must not change (the fleet, bait folders)
    base: list[Entry]
    next_minor: int = 2
    _outside_before: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    _active_before: tuple[str, str, str] = ("", "", "")

    # ------------------------------------------------------------ commands

    def cli(self, *args: str) -> Result:
        return run_cli("device", *args, "--root", str(self.root))

    @property
    def agent(self) -> DeviceAgent:
        return DeviceAgent(self.root)

    def release(self, version: str, layers: list[list[Entry] | bytes] | None = None) -> None:
        self.fleet.release(version, layers or [self.base, overlay_layer(version)])

    # ------------------------------------------------------------ the protocol

    def remember(self) -> None:
        """What must not change: the outside, and the active slot."""
        self._outside_before = snapshot(self.outside, skip=[self.root])
        self._active_before = self.active_fingerprint()

    def active_fingerprint(self) -> tuple[str, str, str]:
        state = self.agent.journal.load()
        assert state.active is not None
        return (
            state.active.version,
            state.active.storage,
            tree_digest(self.root / state.active.storage),
        )

    def assert_refused(self, result: Result, *words: str) -> None:
        assert result.code == 1, result
        assert "error:" in result.err and "hint:" in result.err, result
        assert "internal error" not in result.text, result
        for word in words:
            assert word in result.err, (word, result)

    def assert_untouched(self, *, active: bool = True) -> None:
        assert snapshot(self.outside, skip=[self.root]) == self._outside_before
        if active:
            assert self.active_fingerprint() == self._active_before

    def all_commands_work(self) -> None:
        """status, status --verify, check, upgrade, boot-check, rollback and reset all
        exit 0, and the device ends on the release it was reset to."""
        version = f"1.{self.next_minor}.0"
        self.next_minor += 1
        self.release(version)
        for args in (("status",), ("status", "--verify"), ("check",)):
            result = self.cli(*args)
            assert result.code == 0, (args, result)
        upgraded = self.cli("upgrade")
        assert upgraded.code == 0, upgraded
        assert self.agent.journal.load().active.version == version  # type: ignore[union-attr]
        for args in (("boot-check",), ("rollback",), ("reset",), ("status", "--verify")):
            result = self.cli(*args)
            assert result.code == 0, (args, result)
        state = self.agent.journal.load()
        assert state.active is not None and state.recovery is not None
        assert state.active.version == state.recovery.version
        assert state.transaction is None


def fresh_device(tmp_path: Path, **setup: Any) -> FreshDevice:
    """1.0.0 installed (active and recovery) from an OCI-layout fleet, index read from
    the folder; everything under ``tmp_path`` but the device root is 'outside'."""
    from tests.device.fleet import DERIVATIVE

    fleet = Fleet(tmp_path / "fleet", f"oci:{tmp_path / 'fleet' / 'layout' / DERIVATIVE}")
    base = base_layer(4096)
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    root = tmp_path / "device"
    DeviceAgent(root).install(fleet.setup(str(fleet.public_dir), **setup))
    device = FreshDevice(fleet, root, tmp_path, base)
    device.remember()
    return device
