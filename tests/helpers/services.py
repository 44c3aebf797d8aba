"""Real services for tests, bound to 127.0.0.1 only.

* :class:`RegistryServer`: Debian's ``docker-registry`` (distribution 2.8) with its own
  storage folder, optionally behind htpasswd auth and/or TLS with a test CA.
* :class:`StaticServer`: a threaded HTTP server for a folder (the published index), with
  HTTP Range support and a request log so tests can count requests and bytes.

A missing binary skips the test outside CI and fails it in CI (``CI=true``).
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests


def require_binary(name: str, package: str) -> str:
    """Path of ``name``; skip (fail in CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package {package}); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TestCA:
    """A throwaway certificate authority and one server certificate for 127.0.0.1."""

    __test__ = False

    folder: Path
    ca_cert: Path = field(init=False)
    server_cert: Path = field(init=False)
    server_key: Path = field(init=False)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.folder.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cosgitops test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_cert = self.folder / "ca.pem"
        self.server_cert = self.folder / "server.pem"
        self.server_key = self.folder / "server.key"
        self.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.server_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


class RegistryServer:
    """A real distribution registry on 127.0.0.1:<free port>."""

    def __init__(
        self,
        folder: Path,
        *,
        users: dict[str, str] | None = None,
        tls: TestCA | None = None,
    ) -> None:
        self.binary = require_binary("docker-registry", "docker-registry")
        self.folder = folder
        self.users = users
        self.tls = tls
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self._process: subprocess.Popen[bytes] | None = None
        self.log = folder / "registry.log"

    def _config(self) -> str:
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log: {level: info, fields: {service: registry}}",
            "storage:",
            f"  filesystem: {{rootdirectory: {storage}}}",
            "  delete: {enabled: true}",
            "  maintenance: {uploadpurging: {enabled: false}}",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  headers: {X-Content-Type-Options: [nosniff]}",
        ]
        if self.tls:
            lines += [
                "  tls:",
                f"    certificate: {self.tls.server_cert}",
                f"    key: {self.tls.server_key}",
            ]
        if self.users is not None:
            import bcrypt

            htpasswd = self.folder / "htpasswd"
            hashed = {
                user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
                for user, password in self.users.items()
            }
            htpasswd.write_text("".join(f"{user}:{h}\n" for user, h in hashed.items()))
            lines += ["auth:", f"  htpasswd: {{realm: cosgitops-test, path: {htpasswd}}}"]
        return "\n".join(lines) + "\n"

    def start(self) -> RegistryServer:
        config = self.folder / "config.yml"
        self.folder.mkdir(parents=True, exist_ok=True)
        config.write_text(self._config())
        log = self.log.open("wb")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.folder)}
        self._process = subprocess.Popen(
            [self.binary, "serve", str(config)], stdout=log, stderr=log, env=env
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                response = requests.get(
                    f"{self.url}/v2/",
                    timeout=1,
                    verify=str(self.tls.ca_cert) if self.tls else True,
                )
                if response.status_code in (200, 401):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int
    bytes_sent: int


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _fault(self) -> bool:
        hook = self.server.fault
        if hook is None:
            return False
        status = hook(self.path)
        if status is None:
            return False
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.record(RequestRecord(self.command, self.path, status, 0))
        return True

    def do_GET(self) -> None:
        if self._fault():
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            self.server.record(RequestRecord("GET", self.path, 404, 0))
            return
        data = path.read_bytes()
        status, start, end = 200, 0, len(data)
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            first, _, last = range_header[6:].partition("-")
            start = int(first or 0)
            end = int(last) + 1 if last else len(data)
            status = 206
        body = data[start:end]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(body)
        self.server.record(RequestRecord("GET", self.path, status, len(body)))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fault: Callable[[str], int | None] | None = None

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        handler = lambda *a, **kw: _Handler(*a, directory=str(directory), **kw)  # noqa: E731
        super().__init__(("127.0.0.1", 0), handler)

    def record(self, entry: RequestRecord) -> None:
        with self._lock:
            self.requests.append(entry)


class StaticServer:
    """Serve ``directory`` on http://127.0.0.1:<port>/ from a background thread."""

    def __init__(self, directory: Path) -> None:
        self._server = _Server(directory)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[RequestRecord]:
        return self._server.requests

    def set_fault(self, hook: Callable[[str], int | None] | None) -> None:
        """``hook(path)`` returns an HTTP status to answer instead, or None to serve."""
        self._server.fault = hook

    def bytes_sent(self) -> int:
        return sum(r.bytes_sent for r in self.requests)

    def reset_log(self) -> None:
        self._server.requests.clear()

    def __enter__(self) -> StaticServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def require_docker() -> Any:
    """A docker SDK client for the running dockerd; skip (fail in CI) without one."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception as exc:
        message = f"no running dockerd ({exc}); .ci/run starts one"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
