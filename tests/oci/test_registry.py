"""The registry client against the real docker-registry (distribution 2.8) on loopback,
directly or through a fault-injecting proxy."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from cosgitops.config import KiB, Limits, MiB
from cosgitops.errors import (
    AuthenticationError,
    ConfigError,
    DownloadError,
    IntegrityError,
    NotFoundError,
    RegistryError,
    RemoteDataError,
    UsageError,
)
from cosgitops.oci import media, open_store
from cosgitops.oci.digest import sha256_digest
from cosgitops.oci.reference import parse_reference
from cosgitops.oci.registry import RegistryStore
from cosgitops.oci.store import StoreOptions, referrers_tag
from tests.helpers.services import RegistryServer, TestCA, free_port
from tests.oci.images import make_image, push_image, signature_manifest
from tests.oci.proxy import Fault, FaultProxy, faults_for
from tests.oci.token_server import TokenAuthRegistry, TokenIssuer, TokenServer

pytestmark = pytest.mark.registry

FAST = Limits(http_retries=2, http_backoff_seconds=0.01, http_backoff_max_seconds=0.05)


def store_for(host: str, repository: str = "test/app", limits: Limits = FAST) -> RegistryStore:
    return RegistryStore(
        parse_reference(f"{host}/{repository}"), StoreOptions(insecure=True, limits=limits)
    )


def write_docker_config(config: dict[str, object]) -> Path:
    folder = Path(os.environ["DOCKER_CONFIG"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def basic_auth_entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def storage_blob(server: RegistryServer, digest: str) -> Path:
    hex_part = digest.split(":", 1)[1]
    return (
        server.folder / "storage/docker/registry/v2/blobs/sha256" / hex_part[:2] / hex_part / "data"
    )


def test_push_then_pull(registry: RegistryServer, tmp_path: Path) -> None:
    pusher = store_for(registry.host)
    image = make_image([{"etc/hello": b"hi\n"}, {"etc/more": os.urandom(50_000)}])
    descriptor = push_image(pusher, image, tag="1.0")
    assert descriptor.digest == image.manifest_digest
    assert pusher.stats.bytes_uploaded == sum(len(b) for b in image.blobs) + len(image.manifest)

    puller = open_store(f"{registry.host}/test/app:1.0", StoreOptions(insecure=True))
    assert isinstance(puller, RegistryStore)
    by_tag = puller.get_manifest("1.0")
    assert by_tag.data == image.manifest and by_tag.media_type == media.OCI_MANIFEST
    assert puller.get_manifest(image.manifest_digest).data == image.manifest
    assert puller.resolve("1.0") == descriptor
    assert puller.resolve("2.0") is None
    assert puller.list_tags() == ["1.0"]
    config, layer0, layer1 = by_tag.children()
    assert puller.read_blob(config.digest, max_bytes=1 * MiB) == image.config
    dest = tmp_path / "cache" / "layer"
    assert puller.download_blob(layer1.digest, dest, size=layer1.size) == layer1.size
    assert dest.read_bytes() == image.layers[1]
    assert puller.has_blob(layer0.digest)
    assert not puller.has_blob(sha256_digest(b"absent"))
    assert puller.stats.requests > 0
    assert puller.stats.bytes_downloaded >= layer1.size + len(image.config)


def test_existing_blobs_are_not_sent_again(registry: RegistryServer) -> None:
    image = make_image([{"big": os.urandom(200_000)}])
    push_image(store_for(registry.host), image, tag="1")
    with FaultProxy(registry.url) as proxy:
        again = store_for(proxy.host)
        push_image(again, image, tag="2")
        blob_requests = [s for s in proxy.seen if "/blobs/" in s.path]
    assert [s.method for s in blob_requests] == ["HEAD", "HEAD"]
    assert sum(s.request_bytes for s in proxy.seen) == len(image.manifest)
    assert again.stats.blobs_skipped == 2
    assert again.stats.bytes_uploaded == len(image.manifest)
    assert sorted(again.list_tags()) == ["1", "2"]


def test_large_blob_goes_up_in_chunks(registry: RegistryServer, tmp_path: Path) -> None:
    limits = Limits(registry_upload_chunk_bytes=256 * KiB, http_retries=1)
    blob_file = tmp_path / "blob"
    blob_file.write_bytes(os.urandom(1 * MiB + 10))
    digest = sha256_digest(blob_file.read_bytes())
    with FaultProxy(registry.url) as proxy:
        store = store_for(proxy.host, limits=limits)
        assert store.put_blob(blob_file, digest, size=blob_file.stat().st_size) is True
        uploads = [(s.method, s.request_bytes) for s in proxy.seen if "/uploads/" in s.path]
    assert uploads == [
        ("POST", 0),
        *[("PATCH", 256 * KiB)] * 4,
        ("PATCH", 10),
        ("PUT", 0),
    ]
    assert store.stats.bytes_uploaded == blob_file.stat().st_size
    assert store.read_blob(digest, max_bytes=2 * MiB) == blob_file.read_bytes()
    assert storage_blob(registry, digest).read_bytes() == blob_file.read_bytes()


def test_failed_chunk_restarts_the_upload(registry: RegistryServer) -> None:
    limits = Limits(registry_upload_chunk_bytes=100_000, http_retries=2, http_backoff_seconds=0.01)
    blob = os.urandom(250_000)
    digest = sha256_digest(blob)
    with FaultProxy(registry.url) as proxy:
        calls = {"n": 0}

        def second_patch_fails(method: str, path: str) -> Fault | None:
            if method == "PATCH":
                calls["n"] += 1
                if calls["n"] == 2:
                    return Fault(status=500)
            return None

        proxy.set_fault(second_patch_fails)
        store = store_for(proxy.host, limits=limits)
        assert store.put_blob(blob, digest, size=len(blob))
        methods = [s.method for s in proxy.seen if "/uploads/" in s.path]
    assert methods == ["POST", "PATCH", "PATCH", "DELETE", "POST", *["PATCH"] * 3, "PUT"]
    assert store.read_blob(digest, max_bytes=1 << 20) == blob


def test_upload_of_bytes_that_do_not_match_the_digest_is_refused(
    registry: RegistryServer, tmp_path: Path
) -> None:
    store = store_for(registry.host, limits=Limits(registry_upload_chunk_bytes=1000))
    with pytest.raises(IntegrityError, match="does not match"):
        store.put_blob(b"small but wrong", sha256_digest(b"other"), size=15)
    big = tmp_path / "big"
    big.write_bytes(b"z" * 5000)
    with pytest.raises(IntegrityError, match="does not match"):
        store.put_blob(big, sha256_digest(b"q" * 5000), size=5000)
    assert not store.has_blob(sha256_digest(b"q" * 5000))


def test_cross_repository_mount(registry: RegistryServer) -> None:
    image = make_image([{"layer": os.urandom(100_000)}])
    push_image(store_for(registry.host, "team/base"), image, tag="1")
    target = store_for(registry.host, "team/derived")
    layer = sha256_digest(image.layers[0])
    with FaultProxy(registry.url) as proxy:
        target = store_for(proxy.host, "team/derived")
        assert target.mount_blob(layer, "team/base") is True
        assert target.mount_blob(sha256_digest(b"nowhere"), "team/base") is False
        sent = sum(s.request_bytes for s in proxy.seen)
    assert sent == 0
    assert target.stats.blobs_mounted == 1
    assert target.has_blob(layer)
    assert not target.has_blob(sha256_digest(b"nowhere"))


def test_not_found_is_clear(registry: RegistryServer, tmp_path: Path) -> None:
    store = store_for(registry.host, "nobody/here")
    with pytest.raises(NotFoundError) as excinfo:
        store.get_manifest("latest")
    assert "manifest latest not found" in str(excinfo.value)
    assert f"{registry.host}/nobody/here" in str(excinfo.value)
    assert excinfo.value.hint
    with pytest.raises(NotFoundError):
        store.read_blob(sha256_digest(b"x"), max_bytes=10)
    with pytest.raises(NotFoundError):
        store.download_blob(sha256_digest(b"x"), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert store.resolve("latest") is None
    assert store.list_tags() == []
    assert store.referrers(sha256_digest(b"x")) == []


def test_htpasswd_registry_with_credentials_from_docker_config(tmp_path: Path) -> None:
    image = make_image([{"a": b"secret layer"}])
    with RegistryServer(tmp_path / "reg", users={"alice": "s3cret-pw"}) as server:
        with pytest.raises(AuthenticationError) as excinfo:
            push_image(store_for(server.host), image, tag="1")
        message = str(excinfo.value)
        assert server.host in message and "requires" in message
        assert f"docker login {server.host}" in (excinfo.value.hint or "")

        config_path = write_docker_config(
            {"auths": {server.host: basic_auth_entry("alice", "wrong-pw")}}
        )
        with pytest.raises(AuthenticationError) as excinfo:
            store_for(server.host).get_manifest("1")
        assert f"refused the credentials from {config_path}" in str(excinfo.value)
        assert "wrong-pw" not in f"{excinfo.value} {excinfo.value.hint}"

        write_docker_config(
            {"auths": {f"https://{server.host}": basic_auth_entry("alice", "s3cret-pw")}}
        )
        pushed = push_image(store_for(server.host), image, tag="1")
        assert store_for(server.host).get_manifest("1").digest == pushed.digest

        write_docker_config(
            {"auths": {server.host: {"username": "alice", "password": "s3cret-pw"}}}
        )
        assert store_for(server.host).list_tags() == ["1"]


def _install_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "helper-calls"
    helper = bin_dir / "docker-credential-test"
    helper.write_text(
        "#!/bin/sh\n"
        "read -r server\n"
        f'echo "$1 $server" >> {calls}\n'
        f'if [ "$1" = get ] && [ "$server" = "{host}" ]; then\n'
        f'  printf \'{{"ServerURL":"%s","Username":"alice","Secret":"helper-pw"}}\' "$server"\n'
        "  exit 0\n"
        "fi\n"
        "echo 'credentials not found in native keychain'\n"
        "exit 1\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = make_image([{"a": b"helper"}])
    with RegistryServer(tmp_path / "reg", users={"alice": "helper-pw"}) as server:
        calls = _install_credential_helper(tmp_path, monkeypatch, server.host)
        write_docker_config({"credsStore": "test", "auths": {server.host: {}}})
        push_image(store_for(server.host), image, tag="1")
        assert calls.read_text().splitlines() == [f"get {server.host}"]

        write_docker_config({"credHelpers": {server.host: "test"}})
        assert store_for(server.host).list_tags() == ["1"]

        # the helper knows nothing for this name: no credentials, a clear 401
        other = f"localhost:{server.port}"
        with pytest.raises(AuthenticationError, match="requires"):
            store_for(other).list_tags()

        write_docker_config({"credsStore": "missing-helper"})
        with pytest.raises(ConfigError, match="docker-credential-missing-helper is not on PATH"):
            store_for(server.host).list_tags()


def test_tls_registry_with_test_ca(tmp_path: Path, test_ca: TestCA) -> None:
    image = make_image([{"tls": b"x"}])
    with RegistryServer(tmp_path / "reg", tls=test_ca) as server:
        reference = parse_reference(f"{server.host}/secure/app")
        trusted = RegistryStore(reference, StoreOptions(ca_file=test_ca.ca_cert, limits=FAST))
        assert trusted.base_url.startswith("https://")
        push_image(trusted, image, tag="1")
        assert trusted.get_manifest("1").digest == image.manifest_digest

        untrusted = RegistryStore(reference, StoreOptions(limits=FAST))
        with pytest.raises(RegistryError, match="TLS verification") as excinfo:
            untrusted.get_manifest("1")
        assert "CA" in (excinfo.value.hint or "")


def test_tls_and_auth_together(tmp_path: Path, test_ca: TestCA) -> None:
    with RegistryServer(tmp_path / "reg", users={"bob": "pw"}, tls=test_ca) as server:
        write_docker_config({"auths": {server.host: basic_auth_entry("bob", "pw")}})
        store = RegistryStore(
            parse_reference(f"{server.host}/x"), StoreOptions(ca_file=test_ca.ca_cert)
        )
        push_image(store, make_image([{"a": b"b"}]), tag="t")
        assert store.list_tags() == ["t"]


@pytest.mark.parametrize("host", ["localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"])
def test_plain_http_allowed_for_loopback_only(host: str) -> None:
    store = RegistryStore(parse_reference(f"{host}/a"), StoreOptions(insecure=True))
    assert store.base_url == f"http://{host}"
    assert RegistryStore(parse_reference(f"{host}/a")).base_url == f"https://{host}"


def test_plain_http_refused_for_other_hosts() -> None:
    reference = parse_reference("registry.example.com/a")
    with pytest.raises(UsageError, match="not a loopback") as excinfo:
        RegistryStore(reference, StoreOptions(insecure=True))
    assert "unsafe_allow_plain_http_non_loopback" in (excinfo.value.hint or "")
    unsafe = Limits(unsafe_allow_plain_http_non_loopback=True)
    store = RegistryStore(reference, StoreOptions(insecure=True, limits=unsafe))
    assert store.base_url == "http://registry.example.com"


def test_server_errors_are_retried_then_reported(registry: RegistryServer) -> None:
    push_image(store_for(registry.host), make_image([{"a": b"1"}]), tag="1")
    with FaultProxy(registry.url) as proxy:
        proxy.set_fault(lambda method, path: Fault(status=500) if "/manifests/" in path else None)
        with pytest.raises(DownloadError) as excinfo:
            store_for(proxy.host).get_manifest("1")
        assert "answered 500" in str(excinfo.value) and "3 attempts" in str(excinfo.value)
        assert len([s for s in proxy.seen if "/manifests/" in s.path]) == 3

        proxy.reset()
        proxy.set_fault(
            faults_for(
                "GET",
                "/manifests/",
                [Fault(status=503), Fault(status=429, headers=(("Retry-After", "0"),))],
            )
        )
        assert store_for(proxy.host).get_manifest("1").data
        assert [s.status for s in proxy.seen if "/manifests/" in s.path] == [503, 429, 200]


def test_forbidden_is_clear(registry: RegistryServer) -> None:
    with FaultProxy(registry.url) as proxy:
        proxy.set_fault(lambda method, path: Fault(status=403))
        with pytest.raises(AuthenticationError, match="denied access") as excinfo:
            store_for(proxy.host).get_manifest("1")
        assert "permission" in (excinfo.value.hint or "")


def test_unreachable_registry() -> None:
    store = store_for(f"127.0.0.1:{free_port()}")
    with pytest.raises(DownloadError, match="cannot reach") as excinfo:
        store.get_manifest("1")
    assert "3 attempt" in str(excinfo.value)


def test_corrupt_blob_in_registry_storage_is_refused(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = make_image([{"data": os.urandom(10_000)}])
    push_image(store_for(registry.host), image, tag="1")
    layer = sha256_digest(image.layers[0])
    stored = storage_blob(registry, layer)
    corrupted = bytearray(stored.read_bytes())
    corrupted[100] ^= 0xFF
    stored.write_bytes(bytes(corrupted))

    store = store_for(registry.host)
    with pytest.raises(IntegrityError, match="does not match its digest"):
        store.read_blob(layer, max_bytes=1 * MiB)
    dest = tmp_path / "layer"
    with pytest.raises(IntegrityError) as excinfo:
        store.download_blob(layer, dest, size=len(image.layers[0]))
    assert "nothing was used" in (excinfo.value.hint or "")
    assert not dest.exists() and not (tmp_path / "layer.part").exists()


def test_manifest_altered_in_transit_is_refused(registry: RegistryServer) -> None:
    image = make_image([{"a": b"1"}])
    push_image(store_for(registry.host), image, tag="1")
    with FaultProxy(registry.url) as proxy:
        proxy.set_fault(lambda method, path: Fault(flip_byte=30) if "/manifests/" in path else None)
        store = store_for(proxy.host)
        with pytest.raises(IntegrityError, match="does not match its digest"):
            store.get_manifest("1")
        with pytest.raises(IntegrityError):
            store.get_manifest(image.manifest_digest)


def test_download_resumes_with_range_after_a_broken_connection(
    registry: RegistryServer, tmp_path: Path
) -> None:
    blob = os.urandom(3 * MiB)
    digest = sha256_digest(blob)
    store_for(registry.host).put_blob(blob, digest, size=len(blob))
    with FaultProxy(registry.url) as proxy:
        proxy.set_fault(faults_for("GET", "/blobs/", [Fault(truncate_after=1 * MiB)]))
        store = store_for(proxy.host)
        dest = tmp_path / "blob"
        assert store.download_blob(digest, dest, size=len(blob)) == len(blob)
        gets = [s for s in proxy.seen if s.method == "GET"]
    assert dest.read_bytes() == blob
    assert [g.range for g in gets] == [None, f"bytes={1 * MiB}-"]
    assert sum(g.response_bytes for g in gets) == len(blob)
    assert store.stats.bytes_downloaded == len(blob)


def test_interrupted_download_resumes_in_a_later_call(
    registry: RegistryServer, tmp_path: Path
) -> None:
    blob = os.urandom(2 * MiB)
    digest = sha256_digest(blob)
    store_for(registry.host).put_blob(blob, digest, size=len(blob))
    dest = tmp_path / "blob"
    with FaultProxy(registry.url) as proxy:
        proxy.set_fault(faults_for("GET", "/blobs/", [Fault(truncate_after=700 * KiB)]))
        no_retries = store_for(proxy.host, limits=Limits(http_retries=0))
        with pytest.raises(DownloadError, match="broke off") as excinfo:
            no_retries.download_blob(digest, dest, size=len(blob))
        assert "resumes" in (excinfo.value.hint or "")
        assert not dest.exists()
        kept = (tmp_path / "blob.part").stat().st_size
        assert 500 * KiB < kept <= 700 * KiB  # all but the last unfinished network read
        proxy.reset()
        later = store_for(proxy.host)
        assert later.download_blob(digest, dest, size=len(blob)) == len(blob) - kept
        assert [s.range for s in proxy.seen if s.method == "GET"] == [f"bytes={kept}-"]
        assert sum(s.response_bytes for s in proxy.seen) == len(blob) - kept
    assert dest.read_bytes() == blob
    assert not (tmp_path / "blob.part").exists()


def test_a_stale_part_file_that_does_not_match_is_discarded(
    registry: RegistryServer, tmp_path: Path
) -> None:
    blob = os.urandom(100_000)
    digest = sha256_digest(blob)
    store = store_for(registry.host)
    store.put_blob(blob, digest, size=len(blob))
    (tmp_path / "blob.part").write_bytes(b"garbage" * 100)
    with pytest.raises(IntegrityError):
        store.download_blob(digest, tmp_path / "blob", size=len(blob))
    assert not (tmp_path / "blob.part").exists()
    assert store.download_blob(digest, tmp_path / "blob", size=len(blob)) == len(blob)


def test_size_limits_on_what_the_registry_sends(registry: RegistryServer, tmp_path: Path) -> None:
    image = make_image([{"data": os.urandom(5000)}])
    push_image(store_for(registry.host), image, tag="1")
    small = store_for(registry.host, limits=Limits(manifest_max_bytes=100))
    with pytest.raises(RemoteDataError, match="over the limit"):
        small.get_manifest("1")
    layer = sha256_digest(image.layers[0])
    store = store_for(registry.host)
    with pytest.raises(RemoteDataError, match="over the limit"):
        store.read_blob(layer, max_bytes=1000)
    with pytest.raises(RemoteDataError, match="larger than"):
        store.download_blob(layer, tmp_path / "layer", size=1000)
    assert not (tmp_path / "layer").exists()


def test_referrers_fall_back_to_the_tag_schema(registry: RegistryServer) -> None:
    store = store_for(registry.host)
    subject = push_image(store, make_image([{"a": b"1"}]), tag="1")
    store.put_blob(media.OCI_EMPTY_BYTES, media.OCI_EMPTY_DIGEST, size=2)
    signatures = []
    for payload in (b'{"sig": 1}', b'{"sig": 2}'):
        manifest, blob = signature_manifest(subject, payload)
        store.put_blob(blob, sha256_digest(blob), size=len(blob))
        signatures.append(store.put_manifest(manifest, media.OCI_MANIFEST))

    fallback_tag = referrers_tag(subject.digest)
    assert fallback_tag in store.list_tags()
    index = store.get_manifest(fallback_tag)
    assert index.media_type == media.OCI_INDEX
    assert [c.digest for c in index.children()] == [s.digest for s in signatures]

    fresh = store_for(registry.host)
    found = fresh.referrers(subject.digest)
    assert [d.digest for d in found] == [s.digest for s in signatures]
    assert {d.artifact_type for d in found} == {media.SIGSTORE_BUNDLE_V03}
    assert found[0].annotations == {"dev.sigstore.bundle.predicateType": "test"}
    assert fresh.referrers(subject.digest, artifact_type="application/other") == []
    assert fresh.referrers(sha256_digest(b"no such subject")) == []
    # pushing the same signature again does not list it twice
    store.put_manifest(store.get_manifest(signatures[0].digest).data, media.OCI_MANIFEST)
    assert len(fresh.referrers(subject.digest)) == 2


def test_progress_tasks_for_blob_transfers(registry: RegistryServer, tmp_path: Path) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.tasks: list[list[object]] = []

        def task(self, description: str, total: int | None = None) -> Recorder:
            self.tasks.append([description, total, 0, False])
            return self

        def advance(self, amount: int) -> None:
            self.tasks[-1][2] = int(str(self.tasks[-1][2])) + amount

        def close(self) -> None:
            self.tasks[-1][3] = True

        def note(self, message: str) -> None:
            pass

    recorder = Recorder()
    blob = os.urandom(300_000)
    digest = sha256_digest(blob)
    store = store_for(registry.host, limits=Limits(registry_upload_chunk_bytes=100_000))
    store.put_blob(blob, digest, size=len(blob), progress=recorder)
    store.download_blob(digest, tmp_path / "b", size=len(blob), progress=recorder)
    assert recorder.tasks == [
        [f"push {digest[:19]}", len(blob), len(blob), True],
        [f"pull {digest[:19]}", len(blob), len(blob), True],
    ]


def test_bearer_token_flow(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    issuer = TokenIssuer(
        tmp_path / "issuer",
        users={"carol": "token-pw"},
        refresh_tokens={"refresh-secret": "carol"},
        anonymous_pull=True,
    )
    image = make_image([{"bearer": os.urandom(1000)}])
    with (
        TokenServer(issuer) as tokens,
        TokenAuthRegistry(tmp_path / "reg", issuer, tokens.realm) as server,
    ):
        config = write_docker_config(
            {"auths": {server.host: basic_auth_entry("carol", "token-pw")}}
        )
        pusher = store_for(server.host, "team/app")
        push_image(pusher, image, tag="1")
        assert {r.user for r in tokens.requests} == {"carol"}
        assert "repository:team/app:pull,push" in [s for r in tokens.requests for s in r.scopes]
        assert all(r.method == "GET" for r in tokens.requests)

        # the same registry with an identity token: the OAuth2 refresh-token grant
        write_docker_config({"auths": {server.host: {"identitytoken": "refresh-secret"}}})
        tokens.requests.clear()
        mounter = store_for(server.host, "team/other")
        layer = sha256_digest(image.layers[0])
        assert mounter.mount_blob(layer, "team/app") is True
        assert tokens.requests[0].method == "POST" and tokens.requests[0].grant == "refresh_token"
        assert "repository:team/app:pull" in tokens.requests[0].scopes

        # anonymous: pull is allowed, push is not
        config.unlink()
        anonymous = store_for(server.host, "team/app")
        assert anonymous.get_manifest("1").digest == image.manifest_digest
        with pytest.raises(AuthenticationError, match="requires authentication"):
            push_image(anonymous, make_image([{"x": b"y"}]), tag="2")

        write_docker_config({"auths": {server.host: basic_auth_entry("carol", "bad-pw")}})
        with pytest.raises(AuthenticationError, match="token endpoint refused") as excinfo:
            store_for(server.host, "team/app").get_manifest("1")
        assert "bad-pw" not in f"{excinfo.value} {excinfo.value.hint}"

    everything = caplog.text + repr(pusher) + repr(mounter) + repr(pusher._credentials)
    for secret in ("token-pw", "refresh-secret", "bad-pw"):
        assert secret not in everything
    assert "Bearer" not in caplog.text
