"""Issue 13: inputs that used to crash the agent, hang it, install what it must refuse or
delete files outside its root. Each runs against a freshly installed device: exit 1
with a message that says what to do, the active slot untouched, nothing changed outside
the device root, and every device command still working afterwards.

The full-disk kind (2) is in test_faults.py, on a small file system of its own."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from cosgitops.device import fstree
from cosgitops.device.slots import tree_digest
from tests.device.fleet import DERIVATIVE, overlay_layer
from tests.device.fresh import FreshDevice, fresh_device
from tests.device.tarbuild import Entry, digest_of, directory, file, gzip_layer


@pytest.fixture
def device(tmp_path: Path) -> FreshDevice:
    return fresh_device(tmp_path)


def hostile(device: FreshDevice, entries: list[Entry] | bytes, version: str = "1.1.0") -> None:
    device.release(version, [device.base, overlay_layer(version), entries])
    device.remember()


def deep_tree(parent_fd: int, name: str, depth: int) -> None:
    """``name/d/d/d...`` ``depth`` levels deep, made through descriptors (no PATH_MAX)."""
    os.mkdir(name, dir_fd=parent_fd)
    fd = os.open(name, fstree.DIR_FLAGS, dir_fd=parent_fd)
    try:
        for _ in range(depth):
            os.mkdir("d", 0o755, dir_fd=fd)
            child = os.open("d", fstree.DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- 1. unbounded recursion


def test_deeply_nested_entry_is_refused_naming_the_layer(device: FreshDevice) -> None:
    hostile(device, [file("/".join(["d"] * 1100) + "/leaf", "x")])
    result = device.cli("upgrade")
    device.assert_refused(result, "layer sha256:", "directories deep", "extract_max_depth")
    device.assert_untouched()
    assert not (device.root / "state" / "transition").exists()
    device.all_commands_work()


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("etc/" + "n" * 300, ("name component of 300 bytes",)),
        ("/".join(["p" * 250] * 20), ("path of", "extract_max_path_bytes")),
    ],
    ids=["long-name", "long-path"],
)
def test_names_and_paths_over_the_limits(
    device: FreshDevice, name: str, words: tuple[str, ...]
) -> None:
    hostile(device, [file(name, "x")])
    result = device.cli("upgrade")
    device.assert_refused(result, "layer sha256:", *words)
    device.assert_untouched()
    device.all_commands_work()


def test_clean_up_removes_a_deep_left_over_tree(device: FreshDevice) -> None:
    # what an older agent left behind: a transition and an unreferenced slot 3,000 deep
    device.remember()
    state_fd = os.open(device.root / "state", fstree.DIR_FLAGS)
    try:
        deep_tree(state_fd, "transition", 3000)
        slots = os.open("slots", fstree.DIR_FLAGS, dir_fd=state_fd)
        deep_tree(slots, "1.0.9-deadbeef0000-0123abcd", 3000)
        os.close(slots)
    finally:
        os.close(state_fd)
    result = device.cli("status")
    assert result.code == 0, result
    assert not (device.root / "state" / "transition").exists()
    assert not (device.root / "state" / "slots" / "1.0.9-deadbeef0000-0123abcd").exists()
    device.assert_untouched()
    device.all_commands_work()


def test_tree_digest_and_removal_of_any_depth(tmp_path: Path) -> None:
    fd = os.open(tmp_path, fstree.DIR_FLAGS)
    try:
        deep_tree(fd, "deep", 5000)
        top = os.open("deep", fstree.DIR_FLAGS, dir_fd=fd)
        digest = fstree.tree_digest_fd(top)
        os.close(top)
        assert digest.startswith("sha256:")
        fstree.remove_at(fd, "deep")
    finally:
        os.close(fd)
    assert not (tmp_path / "deep").exists()


# ---------------------------------------------------------------- 3. links in the root


@pytest.fixture
def bait(tmp_path: Path) -> Path:
    """A folder outside the device root that a planted link points at."""
    folder = tmp_path / "bait"
    folder.mkdir()
    (folder / "precious").write_text("do not touch\n")
    (folder / "1.0.0-abcdefabcdef-0123abcd").mkdir()  # looks like a slot name
    (folder / ("a" * 64)).write_text("looks like a blob\n")
    return folder


def plant_link(device: FreshDevice, relative: str, target: Path) -> Path:
    path = device.root / relative
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.move(str(path), str(device.root.parent / f"moved-{path.name}"))
    path.symlink_to(target)
    return path


def test_symlinked_blob_cache_is_refused_not_written_through(
    device: FreshDevice, bait: Path
) -> None:
    link = plant_link(device, "agent/blobs/sha256", bait)
    device.release("1.1.0")
    device.remember()
    result = device.cli("upgrade")
    device.assert_refused(result, "agent/blobs/sha256", "symlink", "never follows links")
    device.assert_untouched()
    assert device.cli("status").code == 0
    link.unlink()  # what the hint says: the agent recreates the folder
    device.all_commands_work()


@pytest.mark.parametrize("relative", ["state/slots", "recovery/slots"])
def test_symlinked_slots_folder_deletes_nothing(
    device: FreshDevice, bait: Path, relative: str
) -> None:
    device.remember()
    moved = device.root / relative.partition("/")[0] / "real-slots"  # inside the root
    shutil.move(str(device.root / relative), str(moved))
    (device.root / relative).symlink_to(bait)
    status = device.cli("status", "--format", "json")
    assert status.code == 0, status
    problems = json.loads(status.out)["problems"]
    assert any(relative in problem and "symlink" in problem for problem in problems), problems
    upgrade = device.cli("upgrade")
    device.assert_refused(upgrade, relative, "symlink")
    device.assert_untouched(active=False)  # bait untouched: nothing followed, nothing deleted
    (device.root / relative).unlink()
    shutil.move(str(moved), str(device.root / relative))
    device.all_commands_work()


def test_symlinked_release_folder_is_refused(device: FreshDevice, bait: Path) -> None:
    plant_link(device, "agent/releases", bait)
    device.release("1.1.0")
    device.remember()
    result = device.cli("upgrade")
    device.assert_refused(result, "agent/releases", "symlink")
    device.assert_untouched()
    (device.root / "agent" / "releases").unlink()
    device.all_commands_work()


def test_symlinked_lock_is_refused(device: FreshDevice, bait: Path) -> None:
    plant_link(device, "agent/lock", bait / "precious")
    device.remember()
    result = device.cli("status")
    device.assert_refused(result, "agent/lock", "symlink")
    device.assert_untouched()
    (device.root / "agent" / "lock").unlink()
    device.all_commands_work()


def test_active_link_that_became_a_directory(device: FreshDevice) -> None:
    (device.root / "state" / "active").unlink()
    (device.root / "state" / "active").mkdir()
    (device.root / "state" / "active" / "notes").write_text("someone's files\n")
    device.remember()
    status = device.cli("status", "--format", "json")
    assert status.code == 0, status
    assert any("state/active" in problem for problem in json.loads(status.out)["problems"])
    result = device.cli("upgrade")
    device.assert_refused(result, "state/active", "move")
    assert (device.root / "state" / "active" / "notes").exists()  # not deleted
    shutil.move(str(device.root / "state" / "active"), str(device.root.parent / "notes-dir"))
    device.all_commands_work()


def test_journal_naming_the_slots_folder_as_storage(device: FreshDevice) -> None:
    state_file = device.root / "state" / "state.json"
    data = json.loads(state_file.read_text())
    data["slots"]["active"]["storage"] = "state/slots"
    state_file.write_text(json.dumps(data))
    before = sorted(os.listdir(device.root / "state" / "slots"))
    device.remember()
    for args in (("status",), ("upgrade",), ("boot-check",)):
        result = device.cli(*args)
        device.assert_refused(result, "not a slot the agent made", "device reset")
    assert sorted(os.listdir(device.root / "state" / "slots")) == before  # nothing deleted
    device.assert_untouched(active=False)
    reset = device.cli("reset")
    assert reset.code == 0, reset
    assert list((device.root / "state").glob("state.json.unusable-*"))
    device.all_commands_work()


# ---------------------------------------------------------------- 4. health checks


def pending_with_checks(
    tmp_path: Path, *checks: tuple[str, str, float], slow: bool = False
) -> FreshDevice:
    from cosgitops.device.config import HealthCheck

    device = fresh_device(
        tmp_path, checks=tuple(HealthCheck(n, c, t) for n, c, t in checks), max_attempts=1
    )
    extra = [[file("etc/slow", "")]] if slow else []
    device.release("1.1.0", [device.base, overlay_layer("1.1.0"), *extra])
    assert device.cli("upgrade").code == 0
    device.remember()
    return device


def test_check_that_leaves_a_child_holding_its_output(tmp_path: Path) -> None:
    device = pending_with_checks(tmp_path, ("leaky", "setsid sleep 30 & echo started; exit 0", 2.0))
    started = time.monotonic()
    result = device.cli("boot-check", "--format", "json")
    elapsed = time.monotonic() - started
    assert result.code == 0, result
    report = json.loads(result.out)
    assert report["outcome"] == "committed"
    assert report["checks"][0]["passed"] and not report["checks"][0]["timedOut"]
    assert elapsed < 5, elapsed  # not the child's 30 s
    device.all_commands_work()


def test_check_over_its_limit_is_killed_with_its_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild-survived"
    # slow only in a release that carries etc/slow (1.1.0), so later releases pass
    device = pending_with_checks(
        tmp_path,
        ("slow", f"test -e etc/slow || exit 0; (sleep 3; touch {marker}) & sleep 30", 1.0),
        slow=True,
    )
    started = time.monotonic()
    result = device.cli("boot-check")
    assert result.code == 1, result
    assert "timed out (its limit is 1s)" in result.out
    assert "rolled back to 1.0.0" in result.out
    assert time.monotonic() - started < 5
    time.sleep(3.5)
    assert not marker.exists()  # the whole group was killed at the limit
    device.all_commands_work()


def test_check_output_is_kept_in_bounded_memory(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from cosgitops.device.boot import run_health_check\n"
        "from cosgitops.device.config import HealthCheck\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "check = HealthCheck('noisy', 'head -c 400000000 /dev/zero; echo tail-marker', 60)\n"
        "result = run_health_check(check, Path('.'), max_timeout=60)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(result.passed, len(result.output), result.output.endswith('tail-marker\\n'),"
        " (after - before) // 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    passed, kept, marker, grown_mib = done.stdout.split()
    assert passed == "True" and marker == "True" and int(kept) <= 2000
    assert int(grown_mib) < 50, done.stdout  # 400 MB of output, a few MiB of memory


# ---------------------------------------------------------------- 5. special files


def test_fifo_in_a_layer_is_refused(device: FreshDevice) -> None:
    hostile(device, [directory("run"), Entry("run/initctl", "fifo", mode=0o600)])
    result = device.cli("upgrade")
    device.assert_refused(result, "layer sha256:", "'run/initctl' is a FIFO")
    device.assert_untouched()
    device.all_commands_work()


def test_fifo_planted_in_the_recovery_slot(device: FreshDevice) -> None:
    recovery = device.agent.journal.load().recovery
    assert recovery is not None
    fifo = device.root / recovery.storage / "etc" / "planted"
    os.mkfifo(fifo)
    device.remember()
    verify = device.cli("status", "--verify")
    assert verify.code == 1 and "holds a FIFO at /etc/planted" in verify.out, verify
    result = device.cli("reset")
    device.assert_refused(result, "FIFO", "/etc/planted")
    device.assert_untouched()
    fifo.unlink()
    device.all_commands_work()


# ---------------------------------------------------------------- 6. diff_ids


def test_layer_that_differs_from_its_diff_id(device: FreshDevice) -> None:
    layers = [gzip_layer(device.base), gzip_layer(overlay_layer("1.1.0"))]
    wrong = [digest_of(gzip.decompress(layers[0])), "sha256:" + "0" * 64]
    image = device.fleet.push(layers, diff_ids=wrong)
    device.fleet.publish(device.fleet.manifest("1.1.0", image))
    device.remember()
    result = device.cli("upgrade")
    device.assert_refused(result, "diff_id", "sha256:" + "0" * 64)
    device.assert_untouched()
    device.all_commands_work()


def test_image_config_without_diff_ids(device: FreshDevice) -> None:
    image = device.fleet.push([device.base, overlay_layer("1.1.0")], diff_ids=[])
    device.fleet.publish(device.fleet.manifest("1.1.0", image))
    device.remember()
    result = device.cli("upgrade")
    device.assert_refused(result, "diff_ids")
    device.assert_untouched()
    device.all_commands_work()


# ---------------------------------------------------------------- 7. the signed identity


def copy_signed_image_from_another_derivative(device: FreshDevice) -> None:
    """An image built and signed for derivative ``other`` (same cosign key), copied with
    its signatures into this derivative's repository and named by this index."""
    from cosgitops.oci.transfer import copy_image
    from cosgitops.signing import legacy_tag
    from tests.device.fleet import Fleet

    other = Fleet(device.fleet.root / "other", f"oci:{device.fleet.root / 'layout' / 'other'}")
    other.cosign_key, other.cosign_pub = device.fleet.cosign_key, device.fleet.cosign_pub
    image = other.push([device.base, overlay_layer("1.1.0-other")])
    source, target = other.store(), device.fleet.store()
    copy_image(source, image.digest, target, include_referrers=True)
    tag = legacy_tag(image.digest)
    copy_image(source, tag, target, tag=tag)
    device.fleet.publish(device.fleet.manifest("1.1.0", image))


def test_image_signed_for_another_derivative_is_refused(device: FreshDevice) -> None:
    copy_signed_image_from_another_derivative(device)
    device.remember()
    result = device.cli("upgrade")
    device.assert_refused(result, "as the image's identity", "other")
    device.assert_untouched()
    device.all_commands_work()


def test_identity_check_can_be_relaxed_by_policy(tmp_path: Path) -> None:
    device = fresh_device(tmp_path, signed_identity="digest")
    copy_signed_image_from_another_derivative(device)
    result = device.cli("upgrade")
    assert result.code == 0, result  # the policy chose to bind the digest only


# ---------------------------------------------------------------- 8. messages


def test_torn_journal_says_reset_and_reset_works(device: FreshDevice) -> None:
    device.remember()
    state_file = device.root / "state" / "state.json"
    state_file.write_bytes(state_file.read_bytes()[:100])
    result = device.cli("status")
    device.assert_refused(result, "state.json is unreadable", "device reset")
    reset = device.cli("reset")
    assert reset.code == 0, reset
    device.assert_untouched(active=False)
    device.all_commands_work()


def test_failed_reset_does_not_send_people_in_circles(device: FreshDevice) -> None:
    recovery = device.agent.journal.load().recovery
    assert recovery is not None
    (device.root / recovery.storage / "etc" / "motd").write_text("rotted\n")
    device.remember()
    result = device.cli("reset")
    device.assert_refused(result, "differs from what was installed")
    status = device.cli("status")
    assert status.code == 0, status
    assert "the last reset of 1.0.0 failed" in status.out
    assert "run it again" not in status.out
    device.assert_untouched()
    assert "device upgrade --recovery" in status.out  # what the hint says to do instead
    again = device.cli("upgrade", "--recovery")
    assert again.code == 0 and "is now the recovery slot" in again.out, again
    device.all_commands_work()


def test_pinned_version_with_a_malformed_index_entry(device: FreshDevice) -> None:
    from cosgitops.publish.paths import release_target_path
    from cosgitops.publish.tufrepo import IndexTransaction

    transaction = IndexTransaction.begin(
        device.fleet.public_dir,
        device.fleet.ring,
        device.fleet.repository.publish.expiry_days,
        dt.datetime.now(dt.UTC),
    )
    from cosgitops.publish.releases import manifest_bytes

    image = device.fleet.push([device.base, overlay_layer("9.0.0")])
    content = manifest_bytes(device.fleet.manifest("9.0.0", image))
    transaction.put_target(
        DERIVATIVE, "9.0.0", content, {"cosgitops": {"version": "9.0.0", "image": "not-pinned"}}
    )
    transaction.commit()
    assert release_target_path(DERIVATIVE, "9.0.0")
    device.remember()
    result = device.cli("upgrade", "--version", "9.0.0")
    device.assert_refused(result, "9.0.0 is in the index, but its entry is unusable", "pinned")
    missing = device.cli("upgrade", "--version", "8.0.0")
    device.assert_refused(missing, "not published")
    device.assert_untouched()
    device.all_commands_work()


def test_corrupt_local_root_is_not_blamed_on_the_index(device: FreshDevice) -> None:
    root_json = device.root / "agent" / "metadata" / "root.json"
    real = root_json.resolve()
    saved = real.read_bytes()
    real.write_bytes(b"{not json")
    device.remember()
    result = device.cli("check")
    device.assert_refused(result, "trusted index root", "unusable", "root.json")
    assert "failed TUF verification" not in result.err
    real.write_bytes(saved)
    device.all_commands_work()


def test_path_refusals_name_the_layer(device: FreshDevice) -> None:
    hostile(device, [file("/etc/pwned", "x")])
    result = device.cli("upgrade")
    device.assert_refused(result, "layer sha256:", "'/etc/pwned'", "absolute path")
    device.all_commands_work()


def test_crash_reports_go_into_the_device_root(
    device: FreshDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cosgitops.device.agent import DeviceAgent

    def broken(self: DeviceAgent, *, verify: bool = False) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(DeviceAgent, "status", broken)
    result = device.cli("status")
    assert result.code == 3 and "internal error" in result.err
    reports = list((device.root / "agent" / "crash").glob("cosgitops-crash-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in result.err
    assert "RuntimeError: a bug" in reports[0].read_text()


def test_tree_digest_unchanged_for_installed_slots(device: FreshDevice) -> None:
    # the iterative walk gives the digest the recursive one recorded at install
    state = device.agent.journal.load()
    assert state.active is not None
    assert tree_digest(device.root / state.active.storage) == state.active.tree_digest
