"""The OCI image layout store, checked against the format as skopeo reads and writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosgitops.config import Limits
from cosgitops.errors import (
    IntegrityError,
    InvalidReferenceError,
    NotFoundError,
    RemoteDataError,
)
from cosgitops.oci import media, open_store
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.layout import REF_NAME, OCILayoutStore
from cosgitops.oci.store import StoreOptions, referrers_tag
from tests.helpers.services import require_binary
from tests.oci.images import make_image, make_index, push_image, signature_manifest


def _index(path: Path) -> dict[str, object]:
    value = json.loads((path / "index.json").read_text())
    assert isinstance(value, dict)
    return value


def test_write_then_read_image(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path / "layout")
    image = make_image([{"etc/hello": b"hi\n"}])
    descriptor = push_image(store, image, tag="1.0")

    assert json.loads((tmp_path / "layout" / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    assert descriptor.digest == image.manifest_digest
    by_tag = store.get_manifest("1.0")
    by_digest = store.get_manifest(image.manifest_digest)
    assert by_tag.data == by_digest.data == image.manifest
    assert by_tag.media_type == media.OCI_MANIFEST
    assert store.list_tags() == ["1.0"]
    assert store.resolve("1.0") == store.resolve(image.manifest_digest)
    assert store.resolve("nope") is None
    config_digest = sha256_digest(image.config)
    assert store.read_blob(config_digest, max_bytes=1 << 20) == image.config
    assert (tmp_path / "layout" / "blobs" / "sha256" / config_digest[7:]).read_bytes() == (
        image.config
    )
    children = by_tag.children()
    assert [c.digest for c in children] == [sha256_digest(b) for b in image.blobs]


def test_existing_blob_is_not_rewritten(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    blob = b"x" * 1000
    assert store.put_blob(blob, sha256_digest(blob), size=len(blob)) is True
    assert store.put_blob(blob, sha256_digest(blob), size=len(blob)) is False
    assert store.stats.bytes_uploaded == 1000
    assert store.stats.blobs_skipped == 1


def test_put_blob_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    with pytest.raises(IntegrityError):
        store.put_blob(b"evil", sha256_digest(b"good"), size=4)
    assert not store.has_blob(sha256_digest(b"good"))
    assert [p.name for p in (tmp_path / "blobs" / "sha256").iterdir()] == []


def test_put_blob_from_file(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    store = OCILayoutStore(tmp_path / "layout")
    digest = sha256_digest(source.read_bytes())
    assert store.put_blob(source, digest, size=source.stat().st_size)
    assert store.blob_path(digest).read_bytes() == source.read_bytes()
    with pytest.raises(IntegrityError, match="bytes, expected"):
        OCILayoutStore(tmp_path / "other").put_blob(source, digest, size=10)


def test_retagging_moves_the_tag_and_keeps_the_old_manifest(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    first = make_image([{"a": b"1"}])
    second = make_image([{"a": b"2"}])
    push_image(store, first, tag="latest")
    push_image(store, second, tag="latest")
    push_image(store, second, tag="2.0")
    assert store.get_manifest("latest").digest == second.manifest_digest
    entries = _index(tmp_path)["manifests"]
    assert isinstance(entries, list)
    names = [(e["digest"], (e.get("annotations") or {}).get(REF_NAME)) for e in entries]
    assert names == [
        (first.manifest_digest, None),
        (second.manifest_digest, "latest"),
        (second.manifest_digest, "2.0"),
    ]
    assert store.list_tags() == ["2.0", "latest"]
    # the old manifest is still there, by digest
    assert store.get_manifest(first.manifest_digest).data == first.manifest
    assert store.untag("latest") is True
    assert store.untag("latest") is False
    assert store.list_tags() == ["2.0"]
    store.tag("old", first.manifest_digest)
    assert store.get_manifest("old").digest == first.manifest_digest


def test_untagged_manifest_is_listed_once(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    image = make_image([{"a": b"1"}])
    push_image(store, image)
    push_image(store, image)
    push_image(store, image, tag="t")
    entries = _index(tmp_path)["manifests"]
    assert isinstance(entries, list) and len(entries) == 1
    assert entries[0]["annotations"] == {REF_NAME: "t"}


def test_missing_things_are_not_found(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path / "absent")
    assert store.resolve("latest") is None
    assert store.list_tags() == []
    with pytest.raises(NotFoundError) as excinfo:
        store.get_manifest("latest")
    assert excinfo.value.hint
    with pytest.raises(NotFoundError):
        store.read_blob(sha256_digest(b"x"), max_bytes=10)
    with pytest.raises(NotFoundError):
        store.download_blob(sha256_digest(b"x"), tmp_path / "out")
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize(
    "identifier", ["sha256:../../etc/passwd", "sha256:ABC", "../x", "tag with space"]
)
def test_bad_identifiers_are_refused(tmp_path: Path, identifier: str) -> None:
    store = OCILayoutStore(tmp_path)
    with pytest.raises(InvalidReferenceError):
        store.resolve(identifier)


def test_bad_digest_for_blob_paths_is_refused(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    with pytest.raises(InvalidReferenceError):
        store.has_blob("sha256:../../../etc/passwd")
    with pytest.raises(InvalidReferenceError):
        store.put_blob(b"", "md5:abc", size=0)


def test_tampered_blob_and_manifest_are_refused(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path / "layout")
    image = make_image([{"etc/hello": b"hi\n"}])
    push_image(store, image, tag="t")
    layer_digest = sha256_digest(image.layers[0])
    layer_path = store.blob_path(layer_digest)
    tampered = bytearray(layer_path.read_bytes())
    tampered[20] ^= 0xFF
    layer_path.write_bytes(bytes(tampered))
    with pytest.raises(IntegrityError, match="does not match"):
        store.read_blob(layer_digest, max_bytes=1 << 20)
    dest = tmp_path / "out" / "layer"
    with pytest.raises(IntegrityError):
        store.download_blob(layer_digest, dest, size=len(image.layers[0]))
    assert not dest.exists() and not dest.with_name("layer.part").exists()

    manifest_path = store.blob_path(image.manifest_digest)
    manifest_path.write_bytes(manifest_path.read_bytes().replace(b"amd64", b"arm64") + b" ")
    fresh = OCILayoutStore(tmp_path / "layout")
    with pytest.raises(IntegrityError):
        fresh.get_manifest("t")


def test_size_limits(tmp_path: Path) -> None:
    limits = Limits(manifest_max_bytes=100, blob_max_bytes=1000)
    store = OCILayoutStore(tmp_path, limits=limits)
    with pytest.raises(RemoteDataError, match="exceeds"):
        store.put_manifest(b"{" + b" " * 200 + b"}", media.OCI_MANIFEST)
    with pytest.raises(RemoteDataError, match="exceeds the limit"):
        store.put_blob(b"x" * 1001, sha256_digest(b"x" * 1001), size=1001)
    blob = b"y" * 500
    store.put_blob(blob, sha256_digest(blob), size=500)
    with pytest.raises(RemoteDataError, match="larger than the limit"):
        store.read_blob(sha256_digest(blob), max_bytes=499)
    # a manifest that grew past the limit on disk is refused on read
    big = json.dumps({"schemaVersion": 2, "pad": "p" * 200}).encode()
    OCILayoutStore(tmp_path).put_manifest(big, media.OCI_MANIFEST, tag="big")
    with pytest.raises(RemoteDataError, match="larger than the limit"):
        store.get_manifest("big")


def test_download_blob_copies_verified_with_progress(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path / "layout")
    blob = os.urandom(2 * 1024 * 1024 + 3)
    digest = sha256_digest(blob)
    store.put_blob(blob, digest, size=len(blob))

    class Recorder:
        def __init__(self) -> None:
            self.advanced = 0
            self.closed = 0
            self.descriptions: list[str] = []

        def task(self, description: str, total: int | None = None) -> Recorder:
            self.descriptions.append(f"{description}/{total}")
            return self

        def advance(self, amount: int) -> None:
            self.advanced += amount

        def close(self) -> None:
            self.closed += 1

        def note(self, message: str) -> None:
            pass

    recorder = Recorder()
    dest = tmp_path / "cache" / "blob"
    assert store.download_blob(digest, dest, size=len(blob), progress=recorder) == len(blob)
    assert dest.read_bytes() == blob
    assert recorder.advanced == len(blob) and recorder.closed == 1
    assert recorder.descriptions == [f"copy {digest[:19]}/{len(blob)}"]
    with pytest.raises(IntegrityError, match="expected 5"):
        store.download_blob(digest, tmp_path / "other", size=5)


def test_referrers_found_by_subject_and_by_fallback_tag(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    image = make_image([{"a": b"1"}])
    subject = push_image(store, image, tag="1.0")
    sig, payload = signature_manifest(subject, b'{"bundle": 1}')
    store.put_blob(media.OCI_EMPTY_BYTES, media.OCI_EMPTY_DIGEST, size=2)
    store.put_blob(payload, sha256_digest(payload), size=len(payload))
    sig_descriptor = store.put_manifest(sig, media.OCI_MANIFEST)

    found = store.referrers(subject.digest)
    assert [d.digest for d in found] == [sig_descriptor.digest]
    assert found[0].artifact_type == media.SIGSTORE_BUNDLE_V03
    assert found[0].annotations == {"dev.sigstore.bundle.predicateType": "test"}
    assert store.referrers(subject.digest, artifact_type="other/type") == []
    assert store.referrers(sha256_digest(b"unrelated")) == []
    entry = [e for e in _index(tmp_path)["manifests"] if e["digest"] == sig_descriptor.digest]  # type: ignore[attr-defined]
    assert entry[0]["artifactType"] == media.SIGSTORE_BUNDLE_V03

    # a layout copied from a registry without the referrers API carries the fallback tag
    other = make_image([{"b": b"2"}])
    other_subject = push_image(store, other)
    fallback_child = sig_descriptor.__class__(
        media.OCI_MANIFEST,
        sha256_digest(b"elsewhere"),
        9,
        artifact_type="application/example",
    )
    index = make_index([])
    index_value = json.loads(index)
    index_value["manifests"] = [fallback_child.to_json()]
    store.put_manifest(
        json.dumps(index_value).encode(), media.OCI_INDEX, tag=referrers_tag(other_subject.digest)
    )
    found = store.referrers(other_subject.digest)
    assert [(d.digest, d.artifact_type) for d in found] == [
        (sha256_digest(b"elsewhere"), "application/example")
    ]


def test_mount_blob_between_layouts(tmp_path: Path) -> None:
    source = OCILayoutStore(tmp_path / "a")
    blob = b"shared layer"
    digest = sha256_digest(blob)
    source.put_blob(blob, digest, size=len(blob))
    target = OCILayoutStore(tmp_path / "b")
    assert target.mount_blob(sha256_digest(b"absent"), f"oci:{tmp_path / 'a'}") is False
    assert target.mount_blob(digest, f"oci:{tmp_path / 'a'}") is True
    assert target.read_blob(digest, max_bytes=100) == blob
    assert target.stats.blobs_mounted == 1
    assert target.stats.bytes_uploaded == 0


def test_open_store_resolves_relative_layout_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("oci:registry/app:1.0", StoreOptions())
    assert isinstance(store, OCILayoutStore)
    assert store.path == tmp_path / "registry" / "app"
    assert str(store.reference) == f"oci:{tmp_path / 'registry' / 'app'}"


def test_layout_that_is_a_file_or_foreign_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match="is a file"):
        push_image(OCILayoutStore(tmp_path / "file"), make_image([]))
    layout = tmp_path / "future"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(RemoteDataError, match="version"):
        OCILayoutStore(layout).list_tags()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text('{"manifests": [{"digest": 5}]}')
    with pytest.raises(RemoteDataError, match="descriptor"):
        OCILayoutStore(layout).list_tags()


def test_skopeo_reads_our_layout_and_we_read_skopeos(tmp_path: Path) -> None:
    skopeo = require_binary("skopeo", "skopeo")
    store = OCILayoutStore(tmp_path / "ours")
    image = make_image([{"etc/hello": b"hi\n"}, {"etc/other": b"more\n"}])
    push_image(store, image, tag="1.0")
    push_image(store, make_image([{"x": b"y"}]), tag="other")

    inspected = subprocess.run(
        [skopeo, "inspect", f"oci:{tmp_path / 'ours'}:1.0"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    info = json.loads(inspected.stdout)
    assert info["Digest"] == image.manifest_digest
    assert info["Architecture"] == "amd64"
    assert info["Layers"] == [sha256_digest(layer) for layer in image.layers]

    subprocess.run(
        [skopeo, "copy", f"oci:{tmp_path / 'ours'}:1.0", f"oci:{tmp_path / 'theirs'}:copied"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    theirs = OCILayoutStore(tmp_path / "theirs")
    assert theirs.list_tags() == ["copied"]
    copied = theirs.get_manifest("copied")
    assert copied.digest == image.manifest_digest
    for child in copied.children():
        assert theirs.read_blob(child.digest, max_bytes=1 << 20)


_WRITER = """
import sys
from cosgitops.oci.layout import OCILayoutStore
from tests.oci.images import make_image, push_image
store = OCILayoutStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    push_image(store, make_image([{"f": f"{sys.argv[2]}-{i}".encode()}]), tag=f"{sys.argv[2]}-{i}")
"""


def test_concurrent_writers_do_not_lose_index_entries(tmp_path: Path) -> None:
    layout = tmp_path / "shared"
    count = 25
    root = Path(__file__).resolve().parents[2]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(layout), name, str(count)],
            cwd=root,
            stderr=subprocess.PIPE,
        )
        for name in ("a", "b", "c")
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    store = OCILayoutStore(layout)
    expected = sorted(f"{name}-{i}" for name in ("a", "b", "c") for i in range(count))
    assert store.list_tags() == expected
    for tag in expected:
        store.get_manifest(tag)
    leftovers = [p.name for p in (layout / "blobs" / "sha256").iterdir() if p.name[0] == "."]
    assert leftovers == []
