"""Release manifests carry the image's package list, and stay readable without it."""

from __future__ import annotations

from cosgitops.model import PackageRef, PlatformImage, ReleaseManifest


def _manifest(**extra: object) -> ReleaseManifest:
    return ReleaseManifest(
        derivative="edge",
        version="1.0.0",
        image="oci:.cosgitops/registry/edge@sha256:" + "a" * 64,
        platforms=(PlatformImage("linux/amd64", "sha256:" + "b" * 64, ()),),
        created="2026-01-01T00:00:00Z",
        commit="c" * 40,
        channels=("stable",),
        **extra,  # type: ignore[arg-type]
    )


def test_packages_round_trip() -> None:
    manifest = _manifest(packages=(PackageRef("systemd", "252.39-1~deb12u2"),))
    data = manifest.to_json()
    assert data["packages"] == [{"name": "systemd", "version": "252.39-1~deb12u2"}]
    assert ReleaseManifest.from_json(data) == manifest


def test_without_packages_the_bytes_do_not_change() -> None:
    data = _manifest().to_json()
    assert "packages" not in data
    assert ReleaseManifest.from_json(data).packages == ()
