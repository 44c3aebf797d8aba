"""The Elemental ManagedOSVersionChannel export, compared with a real channel file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cosgitops import model
from cosgitops.publish import elemental, releases
from cosgitops.publish.publisher import publish_releases, yank
from cosgitops.publish.rolekeys import KeyRing
from tests.publish import factory

REAL_CHANNEL = Path("elemental") / "channel-sl-micro-61-baremetal.json"


def _shape(value: Any) -> Any:
    """The structure of a JSON value: keys (in order) and value types, not values."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def test_exported_channel_has_the_shape_of_a_real_elemental_channel(
    interop: Path, repo: model.Repository, ring: KeyRing
) -> None:
    real = json.loads((interop / REAL_CHANNEL).read_text())
    real_container = [entry for entry in real if entry["spec"]["type"] == "container"]
    assert real_container, "the interop file holds container entries"

    publish_releases(
        repo,
        [
            factory.manifest(
                "edge-gateway",
                "1.4.0",
                platforms=("linux/amd64", "linux/arm64"),
                display_name="Edge Gateway OS",
            ),
            factory.manifest("edge-gateway", "1.3.0", display_name="Edge Gateway OS"),
        ],
        keyring=ring,
    )
    exported = json.loads(
        (repo.root / "public" / "channels" / "edge-gateway" / "stable.json").read_text()
    )
    assert isinstance(exported, list) and len(exported) == 2
    for ours in exported:
        theirs = real_container[0]
        # Field by field: the same keys in the same places with the same JSON types.
        assert list(ours) == list(theirs) == ["metadata", "spec"]
        assert list(ours["metadata"]) == list(theirs["metadata"]) == ["name"]
        assert list(ours["spec"]) == list(theirs["spec"]) == ["version", "type", "metadata"]
        assert ours["spec"]["type"] == theirs["spec"]["type"] == "container"
        assert (
            list(ours["spec"]["metadata"])
            == list(theirs["spec"]["metadata"])
            == [
                "upgradeImage",
                "displayName",
                "platforms",
                "created",
            ]
        )
        assert _shape(ours) == _shape(theirs)
        # Values follow the real file's conventions.
        assert ours["spec"]["version"].startswith("v")
        assert ours["metadata"]["name"].endswith(ours["spec"]["version"])
        assert set(ours["spec"]["metadata"]["platforms"]) <= {
            p for entry in real for p in entry["spec"]["metadata"]["platforms"]
        }
    newest = exported[0]
    assert newest["metadata"]["name"] == "edge-gateway-v1.4.0"
    assert newest["spec"]["version"] == "v1.4.0"
    assert newest["spec"]["metadata"]["platforms"] == ["linux/x86_64", "linux/aarch64"]
    assert newest["spec"]["metadata"]["displayName"] == "Edge Gateway OS"
    assert newest["spec"]["metadata"]["created"] == int(
        datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    )
    image = newest["spec"]["metadata"]["upgradeImage"]
    assert image.startswith("registry.example.com/fleet/edge-gateway@sha256:")
    assert exported[1]["spec"]["version"] == "v1.3.0"  # newest first, like the real file


def test_min_version_comes_from_upgrade_from(interop: Path) -> None:
    entry = elemental.channel_entry(factory.manifest("a", "2.0.0", upgrade_from=">=1.2.0 <2.0.0"))
    assert list(entry["spec"]) == ["version", "type", "minVersion", "metadata"]
    assert entry["spec"]["minVersion"] == "v1.2.0"
    unbounded = elemental.channel_entry(factory.manifest("a", "2.0.0", upgrade_from="<1.0.0"))
    assert "minVersion" not in unbounded["spec"]
    assert "minVersion" not in elemental.channel_entry(factory.manifest("a", "2.0.0"))["spec"]


def test_channels_follow_yanks_and_cover_every_channel(
    repo: model.Repository, ring: KeyRing
) -> None:
    publish_releases(
        repo,
        [
            factory.manifest("kiosk", "1.0.0", channels=("stable", "beta")),
            factory.manifest("kiosk", "1.1.0-rc.1", channels=("beta",)),
        ],
        keyring=ring,
    )
    folder = repo.root / "public" / "channels" / "kiosk"
    beta = json.loads((folder / "beta.json").read_text())
    assert [e["spec"]["version"] for e in beta] == ["v1.1.0-rc.1", "v1.0.0"]
    yank(repo, "kiosk", "1.1.0-rc.1", reason="bad rc", keyring=ring)
    beta = json.loads((folder / "beta.json").read_text())
    assert [e["spec"]["version"] for e in beta] == ["v1.0.0"]
    yank(repo, "kiosk", "1.0.0", reason="all bad", keyring=ring)
    assert json.loads((folder / "stable.json").read_text()) == []
    assert json.loads((folder / "beta.json").read_text()) == []


def test_kubernetes_names_and_platform_names() -> None:
    assert elemental.version_name("kiosk", "1.0.0-RC.1+build.7") == "kiosk-v1.0.0-rc.1-build.7"
    assert elemental.elemental_platform("linux/amd64") == "linux/x86_64"
    assert elemental.elemental_platform("linux/arm64/v8") == "linux/aarch64/v8"
    assert elemental.elemental_platform("linux/riscv64") == "linux/riscv64"
    document = elemental.channel_document(
        [releases.yanked(factory.manifest("a", "1.0.0"))], "stable"
    )
    assert document == []
