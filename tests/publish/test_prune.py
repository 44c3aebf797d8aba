"""Old metadata is removed only once no acceptable timestamp can lead to it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cosgitops import model
from cosgitops.publish import paths
from cosgitops.publish.publisher import publish_releases, refresh
from cosgitops.publish.rolekeys import KeyRing
from tests.helpers.services import StaticServer
from tests.publish import factory

THREE_DAYS = 3 * 24 * 3600


def _age(folder: Path, seconds: float) -> None:
    past = time.time() - seconds
    for path in folder.iterdir():
        os.utime(path, (past, past))


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_refresh_prunes_what_no_valid_timestamp_reaches(
    repo: model.Repository,
    ring: KeyRing,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> None:
    for minor in range(4):
        publish_releases(
            repo,
            [factory.manifest("kiosk", f"1.{minor}.0"), factory.manifest("pos", f"2.{minor}.0")],
            keyring=ring,
        )
    metadata = repo.root / "public" / "metadata"
    (metadata / ".tmp-9.kiosk.json.x").write_text("crash leftover")
    (metadata / "9.kiosk.json").write_text("orphan of a crashed publish")
    _age(metadata, THREE_DAYS)
    previous_timestamp = (metadata / "timestamp.json").read_bytes()  # points at snapshot 4
    publish_releases(repo, [factory.manifest("kiosk", "1.9.0")], keyring=ring)

    result = refresh(repo, keyring=ring)
    pruned = {p.name for p in result.pruned}
    assert {"1.snapshot.json", "2.snapshot.json", "3.snapshot.json"} <= pruned
    assert {"1.kiosk.json", "2.kiosk.json", "3.kiosk.json", "1.pos.json", "2.pos.json"} <= pruned
    assert {".tmp-9.kiosk.json.x", "9.kiosk.json"} <= pruned
    left = _names(metadata)
    # Kept: root history, the current state, and the state that was current when the
    # window began (snapshot 4 and what it references).
    assert {
        "1.root.json",
        "4.snapshot.json",
        "5.snapshot.json",
        "4.kiosk.json",
        "5.kiosk.json",
        "4.pos.json",
        "1.targets.json",
        "timestamp.json",
    } <= left
    assert not pruned & left

    public = repo.root / "public"
    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        client.fetch(paths.release_target_path("kiosk", "1.9.0"))
        client.fetch(paths.release_target_path("pos", "2.3.0"))
        # A CDN still serving the previous timestamp: that state is complete too.
        current_timestamp = (metadata / "timestamp.json").read_bytes()
        (metadata / "timestamp.json").write_bytes(previous_timestamp)
        late = factory.Client(public, server.url, tmp_path / "late-device")
        late.fetch(paths.release_target_path("pos", "2.3.0"))
        (metadata / "timestamp.json").write_bytes(current_timestamp)


def test_a_fresh_copy_of_the_index_loses_nothing(repo: model.Repository, ring: KeyRing) -> None:
    for minor in range(3):
        publish_releases(repo, [factory.manifest("kiosk", f"1.{minor}.0")], keyring=ring)
    metadata = repo.root / "public" / "metadata"
    before = _names(metadata)
    result = refresh(repo, keyring=ring)
    assert result.pruned == []
    assert before <= _names(metadata)
    assert refresh(repo, keyring=ring, prune=False).pruned == []
