"""A Bearer token server on 127.0.0.1 for distribution's ``auth: token`` mode.

It issues ES256 JWTs carrying an ``x5c`` chain of a self-signed certificate, which the
real docker-registry verifies against its ``rootcertbundle``. GET with Basic auth (or
anonymously, for pull when ``anonymous_pull``) and the OAuth2 refresh-token POST are
served, as Docker Hub, GHCR and Harbor do.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.helpers.services import RegistryServer

SERVICE = "cosgitops-test-registry"
ISSUER = "cosgitops-test-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRequest:
    method: str
    scopes: list[str]
    user: str | None
    grant: str | None


@dataclass
class TokenIssuer:
    folder: Path
    users: dict[str, str] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    anonymous_pull: bool = False
    cert_path: Path = field(init=False)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cosgitops test tokens")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = self.folder / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, subject: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _TokenHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _grant(self, user: str | None, scopes: list[str], method: str, grant: str | None) -> None:
        issuer = self.server.issuer
        self.server.requests.append(TokenRequest(method, scopes, user, grant))
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            requested = actions.split(",")
            if user:
                allowed = requested
            elif issuer.anonymous_pull:
                allowed = [a for a in requested if a == "pull"]
            else:
                allowed = []
            if kind == "repository" and allowed:
                access.append({"type": "repository", "name": name, "actions": allowed})
        token = issuer.issue(user or "anonymous", access)
        key = "access_token" if method == "POST" else "token"
        self._answer(200, {key: token, "expires_in": 300})

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        user = None
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.server.issuer.users.get(name) != password:
                self._answer(401, {"details": "bad credentials"})
                return
            user = name
        self._grant(user, scopes, "GET", None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        refresh = (form.get("refresh_token") or [""])[0]
        user = self.server.issuer.refresh_tokens.get(refresh)
        if (form.get("grant_type") or [""])[0] != "refresh_token" or user is None:
            self._answer(401, {"details": "bad refresh token"})
            return
        scopes = [s for s in (form.get("scope") or [""])[0].split(" ") if s]
        self._grant(user, scopes, "POST", "refresh_token")


class _TokenHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, issuer: TokenIssuer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.issuer = issuer
        self.requests: list[TokenRequest] = []


class TokenServer:
    def __init__(self, issuer: TokenIssuer) -> None:
        self._server = _TokenHTTPServer(issuer)
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[TokenRequest]:
        return self._server.requests

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class TokenAuthRegistry(RegistryServer):
    """The real docker-registry in ``auth: token`` mode, trusting ``issuer``."""

    def __init__(self, folder: Path, issuer: TokenIssuer, realm: str) -> None:
        super().__init__(folder)
        self._issuer = issuer
        self._realm = realm

    def _config(self) -> str:
        return super()._config() + (
            "auth:\n"
            "  token:\n"
            f"    realm: {self._realm}\n"
            f"    service: {SERVICE}\n"
            f"    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self._issuer.cert_path}\n"
        )
