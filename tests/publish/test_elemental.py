"""The Elemental ManagedOSVersionChannel export, compared with a real channel file."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cosgitops import model
from cosgitops.publish import elemental, releases
from cosgitops.publish.publisher import publish_releases, yank
from cosgitops.publish.rolekeys import KeyRing
from tests.publish import factory

REAL_CHANNEL = Path("elemental") / "channel-sl-micro-61-baremetal.json"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "publish.md"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def operator_split(upgrade_image: str) -> tuple[str, str]:
    """How elemental-operator turns ``upgradeImage`` into the system-upgrade-controller
    plan's image and version (its ManagedOSImage controller, restated): the first path
    element is the registry, and what follows is split at its first ``:``."""
    parts = upgrade_image.split("/")
    registry, rest = (parts[0], parts[1:]) if len(parts) > 1 else ("", parts)
    image, _, version = "/".join(rest).partition(":")
    return (f"{registry}/{image}" if registry else image), version or "latest"


def is_label_value(text: str) -> bool:
    return len(text) <= 63 and bool(LABEL_VALUE.match(text))


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
        # The real file's metadata keys, in its order, then the digest the release signed.
        assert list(theirs["spec"]["metadata"]) == [
            "upgradeImage",
            "displayName",
            "platforms",
            "created",
        ]
        assert list(ours["spec"]["metadata"]) == [*theirs["spec"]["metadata"], "digest"]
        digest = ours["spec"]["metadata"].pop("digest")
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
        assert _shape(ours) == _shape(theirs)
        # elemental-operator reads both upgradeImages the same way: repository and tag.
        for entry in (ours, theirs):
            image, version = operator_split(entry["spec"]["metadata"]["upgradeImage"])
            assert "@" not in image and is_label_value(version)
            assert entry["spec"]["version"] == f"v{version}" or entry is theirs
            assert is_label_value(entry["metadata"]["name"])
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
    assert (
        newest["spec"]["metadata"]["upgradeImage"]
        == "registry.example.com/fleet/edge-gateway:1.4.0"
    )
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
    assert elemental.version_name("kiosk", "1.0.0-rc.1") == "kiosk-v1.0.0-rc.1"
    # Made a DNS label, and kept apart from the versions it would otherwise collide with.
    names = {
        elemental.version_name("kiosk", version)
        for version in ("1.0.0-RC.1+build.7", "1.0.0-rc.1+build.7", "1.0.0-rc.1-build.7")
    }
    assert len(names) == 3
    assert all(re.fullmatch(r"kiosk-v1\.0\.0-rc\.1-build\.7(-[0-9a-f]{8})?", n) for n in names)
    long = elemental.version_name("d" * 60, "1.0.0-" + "x" * 80)
    assert len(long) == 63 and long.startswith("d" * 54) and is_label_value(long)
    assert elemental.elemental_platform("linux/amd64") == "linux/x86_64"
    assert elemental.elemental_platform("linux/arm64/v8") == "linux/aarch64/v8"
    assert elemental.elemental_platform("linux/riscv64") == "linux/riscv64"
    document = elemental.channel_document(
        [releases.yanked(factory.manifest("a", "1.0.0"))], "stable"
    )
    assert document == []


def test_the_upgrade_image_is_what_the_operator_can_split() -> None:
    """REPO@sha256:… became the image `REPO@sha256` and a 64-character version."""
    release = factory.manifest("edge", "1.4.0+build.7", upgrade_from=">=1.2.0")
    entry = elemental.channel_entry(release)
    assert entry is not None
    metadata = entry["spec"]["metadata"]
    assert metadata["upgradeImage"] == "registry.example.com/fleet/edge:1.4.0_build.7"
    assert metadata["digest"] == release.digest
    assert operator_split(metadata["upgradeImage"]) == (
        "registry.example.com/fleet/edge",
        "1.4.0_build.7",
    )
    with_port = replace(release, image="127.0.0.1:5000/fleet/edge@" + release.digest)
    entry = elemental.channel_entry(with_port)
    assert entry is not None
    assert operator_split(entry["spec"]["metadata"]["upgradeImage"]) == (
        "127.0.0.1:5000/fleet/edge",
        "1.4.0_build.7",
    )


def test_local_layout_images_are_left_out(repo: model.Repository, ring: KeyRing) -> None:
    local = replace(
        factory.manifest("kiosk", "1.0.0"),
        image="oci:/home/me/fleet/.cosgitops/registry/kiosk@" + factory.digest_of("k"),
    )
    assert elemental.channel_entry(local) is None
    assert "no cluster can pull" in (elemental.channel_problem(local) or "")
    assert elemental.channel_warnings([local]) == []  # expected in local mode, documented
    result = publish_releases(repo, [local], keyring=ring)
    assert not [w for w in result.warnings if "Elemental" in w]
    channel = repo.root / "public" / "channels" / "kiosk" / "stable.json"
    assert json.loads(channel.read_text()) == []


def test_a_version_tag_over_the_label_limit_is_left_out_with_a_warning(
    repo: model.Repository, ring: KeyRing
) -> None:
    long = factory.manifest("kiosk", "1.0.0-" + "a" * 60)  # a 66-character tag
    ok = factory.manifest("kiosk", "0.9.0")
    assert elemental.channel_entry(long) is None
    result = publish_releases(repo, [long, ok], keyring=ring)
    (warning,) = [w for w in result.warnings if "Elemental" in w]
    assert warning.startswith(f"kiosk {long.version} is left out of the Elemental channel files")
    assert "label" in warning
    channel = repo.root / "public" / "channels" / "kiosk" / "stable.json"
    assert [e["spec"]["version"] for e in json.loads(channel.read_text())] == ["v0.9.0"]


def _documented_channels() -> list[dict[str, Any]]:
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    documents = [doc for block in blocks for doc in yaml.safe_load_all(block)]
    return [doc for doc in documents if doc and doc.get("kind") == "ManagedOSVersionChannel"]


@pytest.mark.parametrize("syncer", ["json", "custom"])
def test_the_documented_channels_use_the_operators_option_names(syncer: str) -> None:
    """elemental-operator's syncers read `uri` (and `timeout`) for type json; image,
    command and args for type custom, which must write the list to /data/output."""
    (channel,) = [c for c in _documented_channels() if c["spec"]["type"] == syncer]
    options = channel["spec"]["options"]
    if syncer == "json":
        assert set(options) <= {"uri", "timeout"} and options["uri"].endswith(".json")
    else:
        assert set(options) <= {"image", "command", "args", "env", "envFrom"}
        assert "/data/output" in " ".join([*options.get("command", []), *options.get("args", [])])
    assert DNS_LABEL.match(channel["metadata"]["name"])
