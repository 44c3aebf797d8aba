"""Image metadata as pure functions: platforms, os-release, config, manifest, index."""

from __future__ import annotations

import json

import pytest

from cosgitops.builder.image import (
    OS_RELEASE_LABEL,
    HistoryStep,
    ImageIdentity,
    base_os_release,
    encode_os_release_label,
    image_config,
    image_index,
    image_manifest,
    merge_os_release,
    parse_os_release,
    select_platform,
    tag_for_version,
)
from cosgitops.errors import BuildError, RemoteDataError, UsageError
from cosgitops.jsonbytes import image_json
from cosgitops.oci import media
from cosgitops.oci.platform import Platform
from cosgitops.oci.store import Descriptor

EPOCH = 1_709_528_767  # 2024-03-04T05:06:07Z
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def _identity(**overrides: object) -> ImageIdentity:
    values: dict[str, object] = {
        "repo": "registry.example.com/fleet/edge",
        "version": "1.4.0+build.7",
        "revision": "a" * 40,
        "epoch": EPOCH,
        "title": "edge",
        "description": "Edge gateway",
        "source": "https://git.example.com/fleet",
        "labels": {"com.example.team": "edge"},
        "os_release": {"GRUB_ENTRY_NAME": "Edge Gateway", "IMAGE": "ignored"},
    }
    values.update(overrides)
    return ImageIdentity(**values)  # type: ignore[arg-type]


def test_platform_parse_match_and_errors() -> None:
    arm = Platform.parse("linux/arm64")
    assert str(arm) == "linux/arm64" and arm.to_json() == {"architecture": "arm64", "os": "linux"}
    assert arm.matches(Platform("linux", "arm64", "v8"))
    assert not Platform.parse("linux/arm64/v7").matches(Platform("linux", "arm64", "v8"))
    assert not arm.matches(Platform("linux", "amd64"))
    for bad in ("linux", "linux/", "a/b/c/d"):
        with pytest.raises(UsageError):
            Platform.parse(bad)


def test_select_platform_from_index() -> None:
    index = {
        "manifests": [
            {"mediaType": media.OCI_MANIFEST, "digest": D1, "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media.OCI_MANIFEST, "digest": D2, "size": 1,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]
    }  # fmt: skip
    assert select_platform(index, Platform.parse("linux/arm64")).digest == D2
    with pytest.raises(BuildError) as error:
        select_platform(index, Platform.parse("linux/riscv64"))
    assert "linux/amd64, linux/arm64/v8" in str(error.value)


def test_os_release_parse_and_merge_keeps_base_lines() -> None:
    base = '# comment\nNAME="openSUSE Leap"\nID=opensuse-leap\nIMAGE_TAG=old\n\nVERSION_ID="15.5"\n'
    merged = merge_os_release(base, {"IMAGE_TAG": "1.0", "NEW_KEY": 'has "quotes" $x'})
    assert merged.splitlines() == [
        "# comment",
        'NAME="openSUSE Leap"',
        "ID=opensuse-leap",
        "IMAGE_TAG=1.0",
        "",
        'VERSION_ID="15.5"',
        'NEW_KEY="has \\"quotes\\" \\$x"',
    ]
    parsed = parse_os_release(merged)
    assert parsed["NEW_KEY"] == 'has "quotes" $x'
    assert parsed["NAME"] == "openSUSE Leap"
    with pytest.raises(BuildError):
        merge_os_release(None, {"BAD-KEY": "x"})


def test_identity_os_release_image_keys_win() -> None:
    identity = _identity()
    text = identity.os_release_text("ID=base\nIMAGE=stale\n")
    values = parse_os_release(text)
    assert values["ID"] == "base"
    assert values["IMAGE_REPO"] == "registry.example.com/fleet/edge"
    assert values["IMAGE_TAG"] == "1.4.0_build.7"
    assert values["IMAGE"] == "registry.example.com/fleet/edge:1.4.0_build.7"
    assert values["TIMESTAMP"] == "20240304050607"
    assert values["GRUB_ENTRY_NAME"] == "Edge Gateway"
    fresh = parse_os_release(identity.os_release_text(None))
    assert fresh["NAME"] == "edge" and fresh["PRETTY_NAME"] == "Edge gateway 1.4.0+build.7"


def test_annotations() -> None:
    annotations = _identity(base_name="r.example/base:1", base_digest=D1).annotations()
    assert annotations == {
        "com.example.team": "edge",
        "org.opencontainers.image.version": "1.4.0+build.7",
        "org.opencontainers.image.revision": "a" * 40,
        "org.opencontainers.image.created": "2024-03-04T05:06:07Z",
        "org.opencontainers.image.title": "edge",
        "org.opencontainers.image.description": "Edge gateway",
        "org.opencontainers.image.source": "https://git.example.com/fleet",
        "org.opencontainers.image.base.name": "r.example/base:1",
        "org.opencontainers.image.base.digest": D1,
    }
    assert "org.opencontainers.image.source" not in _identity(source=None).annotations()
    assert tag_for_version("1.0.0+x") == "1.0.0_x"


def test_config_extends_the_base() -> None:
    base = {
        "architecture": "arm64",
        "os": "linux",
        "created": "2020-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Labels": {"keep": "me", OS_RELEASE_LABEL: "ID=b\n"}},
        "rootfs": {"type": "layers", "diff_ids": [D1]},
        "history": [{"created_by": "base"}, {"created_by": "env", "empty_layer": True}],
    }
    config = image_config(
        base,
        platform=Platform.parse("linux/arm64"),
        diff_ids=[D2],
        history=[HistoryStep("cosgitops: overlay")],
        labels={"org.opencontainers.image.title": "edge"},
        epoch=EPOCH,
    )
    assert base["rootfs"]["diff_ids"] == [D1]  # type: ignore[index]  # not mutated
    assert config["rootfs"]["diff_ids"] == [D1, D2]
    assert config["config"]["Env"] == ["PATH=/bin"]
    assert config["config"]["Labels"]["keep"] == "me"
    assert config["created"] == "2024-03-04T05:06:07Z"
    assert [h["created_by"] for h in config["history"]] == ["base", "env", "cosgitops: overlay"]
    assert base_os_release(base) == "ID=b\n"
    encoded = {"config": {"Labels": {OS_RELEASE_LABEL: encode_os_release_label("A=1\nB=2\n")}}}
    assert "\n" not in encoded["config"]["Labels"][OS_RELEASE_LABEL]
    assert base_os_release(encoded) == "A=1\nB=2\n"
    assert base_os_release({"config": {"Labels": {OS_RELEASE_LABEL: ""}}}) is None
    # a base history that does not line up with its layers is left alone
    base["history"] = []
    unaligned = image_config(
        base,
        platform=Platform.parse("linux/arm64"),
        diff_ids=[D2],
        history=[HistoryStep("x")],
        labels={},
        epoch=EPOCH,
    )
    assert unaligned["history"] == []
    with pytest.raises(RemoteDataError):
        image_config(
            {"rootfs": {"diff_ids": "nope"}},
            platform=Platform.parse("linux/amd64"),
            diff_ids=[],
            history=[],
            labels={},
            epoch=EPOCH,
        )


def test_scratch_config_manifest_and_index() -> None:
    config = image_config(
        None,
        platform=Platform.parse("linux/arm64/v8"),
        diff_ids=[D2],
        history=[HistoryStep("x")],
        labels={"a": "b"},
        epoch=EPOCH,
    )
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert config["rootfs"] == {"type": "layers", "diff_ids": [D2]}
    manifest = image_manifest(
        Descriptor(media.OCI_CONFIG, D1, 10),
        [Descriptor(media.OCI_LAYER_GZIP, D2, 20)],
        {"org.opencontainers.image.title": "edge"},
    )
    assert manifest["mediaType"] == media.OCI_MANIFEST
    assert manifest["config"] == {"mediaType": media.OCI_CONFIG, "digest": D1, "size": 10}
    assert manifest["layers"][0]["digest"] == D2
    index = image_index(
        [Descriptor(media.OCI_MANIFEST, D3, 30, platform={"os": "linux", "architecture": "amd64"})],
        {},
    )
    assert index["manifests"][0]["platform"] == {"os": "linux", "architecture": "amd64"}
    assert "annotations" not in index
    encoded = image_json(manifest)
    assert b" " not in encoded.replace(b"image.title", b"")
    assert json.loads(encoded) == manifest
    assert image_json({"b": 1, "a": 2}) == b'{"a":2,"b":1}'
