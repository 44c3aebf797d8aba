"""Image reference parsing: every accepted form and the inputs that must be refused."""

from __future__ import annotations

import pytest

from cosgitops.errors import InvalidReferenceError
from cosgitops.oci.reference import Reference, check_tag, is_digest, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", None, None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("library/busybox", "docker.io", "library/busybox", None, None),
        ("user/repo:tag", "docker.io", "user/repo", "tag", None),
        ("docker.io/busybox", "docker.io", "library/busybox", None, None),
        ("index.docker.io/busybox", "docker.io", "library/busybox", None, None),
        (f"busybox@{DIGEST}", "docker.io", "library/busybox", None, DIGEST),
        (
            "ghcr.io/acme/fleet/edge-gateway:1.4.0",
            "ghcr.io",
            "acme/fleet/edge-gateway",
            "1.4.0",
            None,
        ),
        (
            f"registry.example.com/cos/base:0.10.2@{DIGEST}",
            "registry.example.com",
            "cos/base",
            "0.10.2",
            DIGEST,
        ),
        ("localhost:5000/a/b", "localhost:5000", "a/b", None, None),
        ("localhost/a", "localhost", "a", None, None),
        ("127.0.0.1:5000/a_b/c-d.e:v_1.0-rc", "127.0.0.1:5000", "a_b/c-d.e", "v_1.0-rc", None),
        ("[::1]:5000/img:1", "[::1]:5000", "img", "1", None),
        ("my-host:8443/img", "my-host:8443", "img", None, None),
        ("a__b/c---d", "docker.io", "a__b/c---d", None, None),
        ("host.com:5000", "docker.io", "library/host.com", "5000", None),  # as docker reads it
    ],
)
def test_registry_forms(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert ref == Reference("registry", registry, repository, tag, digest)
    assert not ref.is_oci_layout
    assert Reference.parse(text) == ref
    # the canonical string parses back to the same reference
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "path", "tag", "digest"),
    [
        ("oci:layout", "layout", None, None),
        ("oci:./rel/layout:1.0", "./rel/layout", "1.0", None),
        ("oci:/abs/layout:latest", "/abs/layout", "latest", None),
        (f"oci:/abs/layout@{DIGEST}", "/abs/layout", None, DIGEST),
        (f"oci:/abs/layout:t@{DIGEST}", "/abs/layout", "t", DIGEST),
        ("oci:/dir:with/colon", "/dir:with/colon", None, None),
        (".cosgitops/registry/x", None, None, None),
    ],
)
def test_oci_layout_forms(text: str, path: str | None, tag: str | None, digest: str | None) -> None:
    if path is None:
        # without the oci: prefix a path is a registry name, and this one is not valid
        with pytest.raises(InvalidReferenceError):
            parse_reference(text)
        return
    ref = parse_reference(text)
    assert ref == Reference("oci", "", path, tag, digest)
    assert ref.is_oci_layout
    assert ref.name == f"oci:{path}"
    assert parse_reference(str(ref)) == ref


def test_properties() -> None:
    ref = parse_reference(f"127.0.0.1:5000/a/b:1@{DIGEST}")
    assert ref.name == "127.0.0.1:5000/a/b"
    assert ref.host == "127.0.0.1"
    assert ref.api_host == "127.0.0.1:5000"
    assert ref.identifier == DIGEST
    assert ref.is_pinned
    assert ref.pinned_string() == f"127.0.0.1:5000/a/b@{DIGEST}"
    assert parse_reference("busybox").api_host == "registry-1.docker.io"
    assert parse_reference("busybox").identifier == "latest"
    assert parse_reference("busybox:1").identifier == "1"
    assert parse_reference("[::1]:5000/x").host == "::1"
    unpinned = parse_reference("x/y:1")
    with pytest.raises(InvalidReferenceError):
        unpinned.pinned_string()
    assert unpinned.with_digest(DIGEST).pinned_string() == f"docker.io/x/y@{DIGEST}"
    assert str(unpinned.with_tag(None)) == "docker.io/x/y"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "not an image reference"),
        (" busybox", "not an image reference"),
        ("busy box", "not an image reference"),
        ("Busybox", "invalid"),
        ("foo/Bar", "invalid"),
        ("busybox:", "tag"),
        ("busybox:-bad", "tag"),
        ("busybox:" + "t" * 129, "tag"),
        ("busybox@sha256:abc", "not a sha256 digest"),
        ("busybox@md5:" + "a" * 32, "not a sha256 digest"),
        ("busybox@sha256:" + "A" * 64, "not a sha256 digest"),
        ("a//b", "invalid"),
        ("host.com/", "invalid"),
        ("a___b/c", "invalid"),
        ("-a/b", "invalid"),
        ("host:99999/x", "out of range"),
        ("ho_st.com:5000/x", "not a valid registry host"),
        ("oci:", "names no layout folder"),
        ("oci::tag", "names no layout folder"),
        ("oci:path:bad!tag", "tag"),
        ("oci:path@sha256:short", "not a sha256 digest"),
        ("example.com/" + "a" * 256, "longer than 255"),
    ],
)
def test_bad_references_are_refused_with_a_message(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError, match=fragment):
        parse_reference(text)


def test_tag_and_digest_helpers() -> None:
    assert check_tag("v1.0") == "v1.0"
    assert check_tag("sha256-" + "a" * 64)
    with pytest.raises(InvalidReferenceError) as excinfo:
        check_tag(".hidden")
    assert excinfo.value.hint
    assert is_digest(DIGEST)
    assert not is_digest("latest")
    assert not is_digest("sha256:" + "a" * 63)
