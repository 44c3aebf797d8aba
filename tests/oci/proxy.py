"""A fault-injecting HTTP proxy on 127.0.0.1 in front of a real registry.

It forwards every request to the upstream registry (with the proxy's own Host, so the
registry's Location headers point back at the proxy) and records what passed. A fault
hook can answer a status instead, cut a response short, or flip a byte in its body.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # answer this status with an empty body
    truncate_after: int | None = None  # send the full headers but only this many body bytes
    flip_byte: int | None = None  # XOR this body offset with 0xFF
    headers: tuple[tuple[str, str], ...] = ()  # extra headers on a status answer


@dataclass
class Seen:
    method: str
    path: str
    status: int
    request_bytes: int
    response_bytes: int
    range: str | None


FaultHook = Callable[[str, str], Fault | None]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = self.server.hook(self.command, self.path) if self.server.hook else None
        if fault is not None and fault.status is not None:
            # recorded before answering, so a test sees it as soon as the client returns
            self.server.record(
                Seen(self.command, self.path, fault.status, len(body), 0, self.headers.get("Range"))
            )
            self.send_response(fault.status)
            for name, value in fault.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        upstream = http.client.HTTPConnection(self.server.upstream_host, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = self.server.own_host
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read() if self.command != "HEAD" else b""
        if fault is not None and fault.flip_byte is not None and len(data) > fault.flip_byte:
            mutable = bytearray(data)
            mutable[fault.flip_byte] ^= 0xFF
            data = bytes(mutable)
        sent = data
        if fault is not None and fault.truncate_after is not None:
            sent = data[: fault.truncate_after]
        upstream.close()
        self.server.record(
            Seen(
                self.command,
                self.path,
                response.status,
                len(body),
                len(sent),
                self.headers.get("Range"),
            )
        )
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        declared = response.getheader("Content-Length")
        self.send_header(
            "Content-Length", str(len(data)) if self.command != "HEAD" else (declared or "0")
        )
        self.end_headers()
        self.wfile.write(sent)
        self.wfile.flush()
        if len(sent) < len(data):
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream_host = urlsplit(upstream).netloc
        self.own_host = f"127.0.0.1:{self.server_address[1]}"
        self.hook: FaultHook | None = None
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    def record(self, entry: Seen) -> None:
        with self._lock:
            self.seen.append(entry)


class FaultProxy:
    """``with FaultProxy(registry.url) as proxy:`` then talk to ``proxy.host``."""

    def __init__(self, upstream_url: str) -> None:
        self._server = _ProxyServer(upstream_url)
        self.host = self._server.own_host
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def seen(self) -> list[Seen]:
        return self._server.seen

    def set_fault(self, hook: FaultHook | None) -> None:
        self._server.hook = hook

    def reset(self) -> None:
        self._server.seen.clear()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def faults_for(
    method: str, path_part: str, faults: list[Fault]
) -> Callable[[str, str], Fault | None]:
    """A hook that answers the given faults, in order, to matching requests, then none."""
    remaining = list(faults)
    lock = threading.Lock()

    def hook(request_method: str, path: str) -> Fault | None:
        if request_method != method or path_part not in path:
            return None
        with lock:
            return remaining.pop(0) if remaining else None

    return hook
