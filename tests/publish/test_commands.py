"""The publish, refresh, yank and keys rotate commands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cosgitops.publish.publisher import open_index
from tests.publish import factory

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosgitops", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    root.mkdir()
    (root / "cosgitops.yaml").write_text(
        "apiVersion: cosgitops/v1\nkind: Repository\nmetadata:\n  name: fleet\n"
        "spec:\n  channels:\n    stable: {}\n    beta: {}\n"
    )
    return root


def _manifests(path: Path, *releases: tuple[str, str]) -> Path:
    path.write_text(json.dumps([factory.manifest(n, v).to_json() for n, v in releases]))
    return path


def test_publish_yank_refresh_rotate(fleet: Path, tmp_path: Path) -> None:
    manifests = _manifests(tmp_path / "m.json", ("kiosk", "1.0.0"), ("kiosk", "1.1.0"))
    published = _run("publish", "-C", str(fleet), "--manifest", str(manifests))
    assert published.returncode == 0, published.stderr
    assert "published kiosk 1.1.0" in published.stdout
    assert "DEVELOPMENT KEY" in published.stderr and published.stderr.count("DEVELOPMENT") == 1

    yanked = _run(
        "yank",
        "kiosk",
        "1.1.0",
        "--reason",
        "crashes on boot",
        "-C",
        str(fleet),
        "--format",
        "json",
    )
    assert yanked.returncode == 0, yanked.stderr
    assert json.loads(yanked.stdout)["release"]["version"] == "1.1.0"
    assert open_index(fleet / "public").releases("kiosk")[0].deadend is True

    refreshed = _run("refresh", "-C", str(fleet), "--format", "json")
    assert refreshed.returncode == 0, refreshed.stderr
    assert json.loads(refreshed.stdout)["resigned"] == ["timestamp"]
    forced = _run("refresh", "--force", "-C", str(fleet), "--format", "json")
    assert "kiosk" in json.loads(forced.stdout)["resigned"]

    rotated = _run("keys", "rotate", "timestamp", "-C", str(fleet))
    assert rotated.returncode == 0, rotated.stderr
    assert "root is now version 3" in rotated.stdout  # --force re-signed root as v2
    assert (fleet / ".cosgitops" / "keys" / "tuf-timestamp.v2.key").is_file()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("yank", "kiosk", "1.0.0"), 2, "--reason"),
        (("keys", "rotate", "kiosk"), 2, "kiosk"),
        (("refresh",), 1, "there is no index"),
        (("yank", "kiosk", "1.0.0", "--reason", "x"), 1, "there is no index"),
        (("keys", "rotate", "root"), 1, "there is no index"),
    ],
)
def test_usage_and_refusals_exit_cleanly(
    fleet: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    result = _run(*args, "-C", str(fleet))
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bad_manifest_inputs(fleet: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"schemaVersion": 1, "derivative": "kiosk"}')
    result = _run("publish", "-C", str(fleet), "--manifest", str(broken))
    assert result.returncode == 2 and "not a release manifest" in result.stderr
    good = _manifests(tmp_path / "m.json", ("kiosk", "1.0.0"))
    both = _run("publish", "-C", str(fleet), "--manifest", str(good), "--since", "HEAD")
    assert both.returncode == 2
    unpinned = factory.manifest("kiosk", "1.0.0").to_json()
    unpinned["image"] = "registry.example.com/fleet/kiosk:1.0.0"
    (tmp_path / "u.json").write_text(json.dumps(unpinned))
    refused = _run("publish", "-C", str(fleet), "--manifest", str(tmp_path / "u.json"))
    assert refused.returncode == 2 and "pinned" in refused.stderr
