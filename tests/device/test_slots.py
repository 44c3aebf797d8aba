from __future__ import annotations

import os
from pathlib import Path

import pytest

from cosgitops.device.layout import DeviceRoot
from cosgitops.device.slots import SlotStore, tree_digest
from cosgitops.device.state import DeviceState, SlotRecord
from cosgitops.errors import DeviceError
from tests.helpers.services import require_binary


def fill(folder: Path, marker: str) -> None:
    (folder / "etc").mkdir()
    (folder / "etc" / "release").write_text(marker)
    os.symlink("etc/release", folder / "link")


def record(storage: str, tree: str, fmt: str = "dir", image_digest: str = "") -> SlotRecord:
    return SlotRecord(
        "1.0.0",
        "sha256:" + "a" * 64,
        "img",
        storage,
        fmt,
        tree_digest=tree,
        file_digest=image_digest,
    )


def test_tree_digest_sees_content_modes_and_links(tmp_path: Path) -> None:
    fill(tmp_path, "one")
    first = tree_digest(tmp_path)
    assert tree_digest(tmp_path) == first
    (tmp_path / "etc" / "release").write_text("two")
    second = tree_digest(tmp_path)
    assert second != first
    (tmp_path / "etc" / "release").chmod(0o600)
    assert tree_digest(tmp_path) != second
    os.utime(tmp_path / "etc" / "release", (1, 1))  # times do not count
    third = tree_digest(tmp_path)
    assert tree_digest(tmp_path) == third


def test_store_point_reconcile_dir(tmp_path: Path) -> None:
    device = DeviceRoot(tmp_path)
    slots = SlotStore(device)
    staging = slots.fresh_transition("state")
    fill(staging, "v1")
    storage, tree, image = slots.store_transition("state", "1.0.0-abc", "dir")
    assert image == "" and not staging.exists()
    active = record(storage, tree)
    # an unreferenced stored slot and a leftover transition: garbage after a crash; an
    # entry without a slot name the agent gives is not the agent's and is left alone
    slots.fresh_transition("state")
    stray = device.state_dir / "slots" / "1.0.0-stray-0123abcd"
    stray.mkdir()
    foreign = device.state_dir / "slots" / "admin-notes"
    foreign.mkdir()
    removed = slots.reconcile(DeviceState(active=active))
    assert sorted(removed) == ["state/slots/1.0.0-stray-0123abcd", "state/transition"]
    assert foreign.is_dir()
    link = device.state_dir / "active"
    assert link.is_symlink() and (link / "etc" / "release").read_text() == "v1"
    assert not (device.state_dir / "passive").exists()
    slots.verify(active)
    (device.root / storage / "etc" / "release").write_text("tampered")
    with pytest.raises(DeviceError, match="differs"):
        slots.verify(active)
    slots.reconcile(DeviceState())
    assert not link.exists() and not (device.root / storage).exists()


def test_squashfs_slots(tmp_path: Path) -> None:
    require_binary("mksquashfs", "squashfs-tools")
    device = DeviceRoot(tmp_path)
    slots = SlotStore(device)
    fill(slots.fresh_transition("recovery"), "rescue")
    storage, tree, image = slots.store_transition("recovery", "2.0.0", "squashfs")
    assert storage.endswith(".squashfs") and image.startswith("sha256:")
    rec = record(storage, tree, "squashfs", image)
    slots.reconcile(DeviceState(recovery=rec))
    link = device.recovery_dir / "recovery.squashfs"
    assert link.is_symlink() and link.resolve() == (device.root / storage).resolve()
    with slots.view(rec) as view:
        assert (view / "etc" / "release").read_text() == "rescue"
        assert tree_digest(view) == tree
    slots.verify(rec)
    copy = slots.copy_into_transition(rec, "state")
    assert tree_digest(copy) == tree
    with (device.root / storage).open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff\xff")
    with pytest.raises(DeviceError, match="changed on disk"):
        slots.verify(rec)


@pytest.mark.parametrize(
    "storage",
    ["../elsewhere", "state/slots", "state/slots/..", "state/slots/admin-notes", "/etc/x",
     "state/slots/1.0.0-0123abcd/etc", "oem/slots/1.0.0-0123abcd"],
)  # fmt: skip
def test_storage_must_be_a_slot_the_agent_made(tmp_path: Path, storage: str) -> None:
    slots = SlotStore(DeviceRoot(tmp_path / "device"))
    with pytest.raises(DeviceError, match="not a slot the agent made"):
        slots.location(record(storage, ""))
