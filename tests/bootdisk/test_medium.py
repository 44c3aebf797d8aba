"""Update media: the published index and the release images (with signatures) in one
folder, and optionally an ext4 image labelled COS_UPDATE."""

from __future__ import annotations

import filecmp
import json
import subprocess
from pathlib import Path

import pytest

from cosgitops.bootdisk.filesystems import Ext4Reader
from cosgitops.bootdisk.medium import read_medium, write_update_medium
from cosgitops.device.medium import MEDIUM_LABEL, UpdateMedium
from cosgitops.errors import NotFoundError
from cosgitops.oci.layout import OCILayoutStore
from cosgitops.signing import verify_image
from cosgitops.signing.image import legacy_tag
from cosgitops.signing.policy import key_policy
from tests.device.fleet import DERIVATIVE, Fleet, base_layer, overlay_layer


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    fleet = Fleet(tmp_path / "fleet", f"oci:{tmp_path / 'fleet' / 'registry' / DERIVATIVE}")
    base = base_layer()
    fleet.release("1.0.0", [base, overlay_layer("1.0.0")])
    fleet.release("1.1.0", [base, overlay_layer("1.1.0")])
    return fleet


def _same_tree(left: Path, right: Path) -> bool:
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.diff_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(left / name, right / name) for name in comparison.common_dirs)


def test_medium_holds_the_index_and_every_release_signed(tmp_path: Path, fleet: Fleet) -> None:
    output = tmp_path / "medium"
    result = write_update_medium(fleet.public_dir, output, derivative=DERIVATIVE)
    assert [release.version for release in result.releases] == ["1.0.0", "1.1.0"]
    assert _same_tree(fleet.public_dir, output / "public")
    layout = OCILayoutStore(result.layout)
    assert set(layout.list_tags()) >= {"1.0.0", "1.1.0"}
    policy = key_policy([str(fleet.cosign_pub)])
    for manifest in fleet.published:
        assert layout.resolve(manifest.version).digest == manifest.digest  # type: ignore[union-attr]
        verdict = verify_image(layout, manifest.digest, policy)
        assert verdict.ok, verdict.failure_message()
        for layer in manifest.platforms[0].layers:
            assert layout.has_blob(layer.digest)
    # the signatures came along: the referrers (bundles) and, if any, the legacy tag
    source = fleet.store()
    for manifest in fleet.published:
        assert {d.digest for d in layout.referrers(manifest.digest)} == {
            d.digest for d in source.referrers(manifest.digest)
        }
        if source.resolve(legacy_tag(manifest.digest)) is not None:
            assert legacy_tag(manifest.digest) in layout.list_tags()
    # the shared base layer is stored once
    blobs = list((result.layout / "blobs" / "sha256").iterdir())
    assert len(blobs) == len({path.name for path in blobs})
    description = read_medium(output)
    assert description["derivative"] == DERIVATIVE
    assert {r["layout"] for r in description["releases"]} == {f"images/{DERIVATIVE}"}
    assert result.layout == output / "images" / DERIVATIVE
    assert [r["digest"] for r in description["releases"]] == [m.digest for m in fleet.published]
    assert result.blob_bytes > 0 and not list(tmp_path.glob(".tmp-*"))
    # the device side finds the index and each image where this side put them
    medium = UpdateMedium.at(output)
    assert medium.index == output / "public"
    for manifest in fleet.published:
        assert medium.layout_for(manifest.image) == result.layout


def test_chosen_versions_and_an_ext4_image(tmp_path: Path, fleet: Fleet) -> None:
    output = tmp_path / "medium"
    image = tmp_path / "medium.img"
    result = write_update_medium(
        fleet.public_dir, output, derivative=DERIVATIVE, versions=["1.1.0"], image_file=image
    )
    assert [release.version for release in result.releases] == ["1.1.0"]
    assert "1.0.0" not in OCILayoutStore(result.layout).list_tags()
    assert result.image_file == image and image.is_file()
    reader = Ext4Reader(image, label=MEDIUM_LABEL)
    assert json.loads(reader.read_bytes("/medium.json")) == read_medium(output)
    names = {entry.name for entry in reader.listdir("/")}
    assert {"public", "images", "medium.json"} <= names
    label = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    assert f"Filesystem volume name:   {MEDIUM_LABEL}" in label
    # writing again replaces the medium as a whole
    again = write_update_medium(fleet.public_dir, output, derivative=DERIVATIVE)
    assert [release.version for release in again.releases] == ["1.0.0", "1.1.0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet", "medium", "medium.img"]


def test_unknown_derivative_or_version(tmp_path: Path, fleet: Fleet) -> None:
    with pytest.raises(NotFoundError, match="no releases of kiosk"):
        write_update_medium(fleet.public_dir, tmp_path / "m", derivative="kiosk")
    with pytest.raises(NotFoundError, match=r"edge-gateway 9\.9\.9 is not in the index"):
        write_update_medium(fleet.public_dir, tmp_path / "m", derivative=DERIVATIVE,
                            versions=["9.9.9"])  # fmt: skip
    with pytest.raises(NotFoundError):
        write_update_medium(tmp_path / "nothing", tmp_path / "m", derivative=DERIVATIVE)
    with pytest.raises(NotFoundError, match="not an update medium"):
        read_medium(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet"]
