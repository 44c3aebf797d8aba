"""Publishers racing for one index folder: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cosgitops import model
from cosgitops.config import DEFAULT_LIMITS
from cosgitops.errors import ConcurrentPublishError
from cosgitops.publish import paths
from cosgitops.publish.lock import publish_lock
from cosgitops.publish.publisher import open_index, publish_releases
from cosgitops.publish.rolekeys import KeyRing
from cosgitops.publish.tufrepo import IndexTransaction
from tests.helpers.services import StaticServer
from tests.publish import factory

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 5

PUBLISHER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from cosgitops.publish.publisher import publish_releases
    from tests.publish import factory

    repo = factory.repository(Path(sys.argv[2]))
    own, major, start, rounds = sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6])
    while time.time() < start:
        time.sleep(0.002)
    for n in range(rounds):
        result = publish_releases(
            repo,
            [factory.manifest(own, f"1.{n}.0"), factory.manifest("shared", f"{major}.{n}.0")],
        )
        print(json.dumps({"added": len(result.added), "timestamp": result.timestamp_version,
                          "attempts": result.attempts}), flush=True)
    """
)


def test_two_publisher_processes_started_together_lose_no_release(
    tmp_path: Path, static_server_factory: type[StaticServer]
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER)
    start = time.time() + 2.0  # both are importing by then; they begin in the same ms
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(PROJECT_ROOT),
                str(root),
                own,
                major,
                str(start),
                str(ROUNDS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for own, major in (("alpha", "1"), ("bravo", "2"))
    ]
    outputs = [process.communicate(timeout=240) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    reports = [json.loads(line) for stdout, _ in outputs for line in stdout.splitlines()]
    assert len(reports) == 2 * ROUNDS and all(r["added"] == 2 for r in reports)
    # Every commit moved the timestamp on by exactly one: none was lost or overwritten.
    assert sorted(r["timestamp"] for r in reports) == list(range(1, 2 * ROUNDS + 1))

    repository = factory.repository(root)
    index = open_index(root / "public")
    assert index.derivatives() == ["alpha", "bravo", "shared"]
    assert len(index.releases("shared")) == 2 * ROUNDS
    assert index.index.role_version("shared") == 2 * ROUNDS  # one version per publish
    expected = [("alpha", f"1.{n}.0") for n in range(ROUNDS)]
    expected += [("bravo", f"1.{n}.0") for n in range(ROUNDS)]
    expected += [("shared", f"{major}.{n}.0") for major in (1, 2) for n in range(ROUNDS)]
    public = repository.root / "public"
    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        updater = client.refresh()
        for derivative, version in expected:
            info = updater.get_targetinfo(paths.release_target_path(derivative, version))
            assert info is not None, (derivative, version)
            served = json.loads(Path(updater.download_target(info)).read_bytes())
            assert (served["derivative"], served["version"]) == (derivative, version)


def test_two_cli_publishers_on_a_fresh_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "cosgitops.yaml").write_text(
        "apiVersion: cosgitops/v1\nkind: Repository\nmetadata:\n  name: fleet\n"
        "spec:\n  channels:\n    stable: {}\n"
    )
    files = []
    for name in ("alpha", "bravo"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps([factory.manifest(name, "1.0.0").to_json()]))
        files.append(path)
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cosgitops",
                "publish",
                "-C",
                str(root),
                "--manifest",
                str(path),
                "--format",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=PROJECT_ROOT,
        )
        for path in files
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    results = []
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert "DEVELOPMENT KEY" in stderr
        results.append(json.loads(stdout))
    # Exactly one of them created the index (and its development keys); both published.
    assert sorted(r["initialized"] for r in results) == [False, True]
    assert sorted(len(r["createdKeys"]) for r in results) == [0, 4]
    assert sorted(r["timestampVersion"] for r in results) == [1, 2]
    assert open_index(root / "public").derivatives() == ["alpha", "bravo"]


def test_a_publisher_that_bypassed_the_lock_makes_the_other_start_over(
    repo: model.Repository, ring: KeyRing
) -> None:
    publish_releases(repo, [factory.manifest("alpha", "1.0.0")], keyring=ring)
    public = repo.root / "public"
    now = datetime.now(UTC)
    days = repo.publish.expiry_days
    first = IndexTransaction.begin(public, ring, days, now)
    second = IndexTransaction.begin(public, ring, days, now)
    first.put_target("alpha", "1.1.0", b"{}", {"cosgitops": {}})
    first.commit()
    files = sorted(p.name for p in (public / "metadata").iterdir())
    second.put_target("bravo", "1.0.0", b"{}", {"cosgitops": {}})
    with pytest.raises(ConcurrentPublishError) as caught:
        second.commit()
    assert caught.value.hint
    assert sorted(p.name for p in (public / "metadata").iterdir()) == files  # no debris
    # Starting over on the new state works.
    result = publish_releases(repo, [factory.manifest("bravo", "1.0.0")], keyring=ring)
    assert result.timestamp_version == 3


def test_leftovers_of_a_crashed_publisher_do_not_block_the_next(
    repo: model.Repository,
    ring: KeyRing,
    tmp_path: Path,
    static_server_factory: type[StaticServer],
) -> None:
    publish_releases(repo, [factory.manifest("alpha", "1.0.0")], keyring=ring)
    metadata = repo.root / "public" / "metadata"
    # A publisher died after writing the next snapshot and role versions, before
    # timestamp.json: those files are referenced by nothing.
    (metadata / "2.snapshot.json").write_text("half a file")
    (metadata / "2.alpha.json").write_text("{")
    (metadata / ".tmp-2.targets.json.abc").write_text("partial")
    result = publish_releases(repo, [factory.manifest("alpha", "1.1.0")], keyring=ring)
    assert result.snapshot_version == 3  # the taken version number is skipped
    assert open_index(repo.root / "public").index.role_version("alpha") == 3
    public = repo.root / "public"
    with static_server_factory(public) as server:
        client = factory.Client(public, server.url, tmp_path / "device")
        client.fetch(paths.release_target_path("alpha", "1.1.0"))


def test_a_publisher_waits_for_the_lock_and_gives_up_cleanly(
    repo: model.Repository, ring: KeyRing
) -> None:
    public = repo.root / "public"
    limits = replace(DEFAULT_LIMITS, publish_lock_timeout_seconds=0.3, publish_attempts=1)
    with publish_lock(public, timeout_seconds=1):
        began = time.monotonic()
        with pytest.raises(ConcurrentPublishError) as caught:
            publish_releases(
                repo, [factory.manifest("alpha", "1.0.0")], keyring=ring, limits=limits
            )
        assert 0.25 < time.monotonic() - began < 5
    assert "another publisher" in str(caught.value)
    assert not (public / "metadata").exists()
    publish_releases(repo, [factory.manifest("alpha", "1.0.0")], keyring=ring, limits=limits)
