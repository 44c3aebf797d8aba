"""The test services themselves work (a broken fixture would make other tests lie)."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.helpers.services import RegistryServer, StaticServer, TestCA


def test_plain_registry_answers_v2(registry: RegistryServer) -> None:
    response = requests.get(f"{registry.url}/v2/", timeout=5)
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_registry_with_auth_and_tls(tmp_path: Path, test_ca: TestCA) -> None:
    with RegistryServer(tmp_path / "r", users={"alice": "s3cret"}, tls=test_ca) as server:
        assert server.url.startswith("https://127.0.0.1:")
        anonymous = requests.get(f"{server.url}/v2/", timeout=5, verify=str(test_ca.ca_cert))
        assert anonymous.status_code == 401
        authed = requests.get(
            f"{server.url}/v2/", timeout=5, verify=str(test_ca.ca_cert), auth=("alice", "s3cret")
        )
        assert authed.status_code == 200


def test_static_server_serves_ranges_and_logs(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"0123456789")
    with StaticServer(tmp_path) as server:
        whole = requests.get(f"{server.url}/f.bin", timeout=5)
        part = requests.get(f"{server.url}/f.bin", headers={"Range": "bytes=4-"}, timeout=5)
        missing = requests.get(f"{server.url}/nope", timeout=5)
    assert whole.content == b"0123456789"
    assert part.status_code == 206 and part.content == b"456789"
    assert missing.status_code == 404
    assert server.bytes_sent() == 16
    assert [r.status for r in server.requests] == [200, 206, 404]
