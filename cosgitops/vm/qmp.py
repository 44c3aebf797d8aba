"""A minimal QEMU Machine Protocol client: the events a run emits (why it stopped:
``SHUTDOWN`` with ``reason`` guest-reset / guest-shutdown / guest-panic, ``GUEST_PANICKED``)
and a few commands (``system_powerdown``, ``quit``)."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

from cosgitops.errors import CosgitopsError


class QMPError(CosgitopsError):
    """QEMU's control socket failed or answered an error."""


class QMPClient:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def connect(self, *, timeout: float, alive: Any = None) -> None:
        """Connect (QEMU creates the socket shortly after it starts) and negotiate."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                break
            except OSError:
                sock.close()
                if alive is not None and not alive():
                    raise QMPError("QEMU exited before its control socket opened") from None
                if time.monotonic() > deadline:
                    raise QMPError(f"QEMU's control socket {self.path} did not open") from None
                time.sleep(0.05)
        self._sock = sock
        self._reader = threading.Thread(target=self._read, name="qmp-reader", daemon=True)
        self._reader.start()
        greeting = self._reply(timeout)
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {greeting}")
        self.execute("qmp_capabilities", timeout=timeout)

    def _read(self) -> None:
        assert self._sock is not None
        buffer = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "event" in message:
                    self.events.append(message)
                else:
                    self._replies.put(message)
        self._replies.put({"closed": True})

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty as exc:
            raise QMPError("QEMU did not answer on its control socket") from exc

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                *, timeout: float = 10.0) -> Any:  # fmt: skip
        if self._sock is None:
            raise QMPError("not connected")
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        with self._lock:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
            reply = self._reply(timeout)
        if "error" in reply:
            raise QMPError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def shutdown_reason(self) -> str | None:
        """The reason of the last SHUTDOWN event, or ``guest-panic`` after a panic."""
        reason = None
        for event in self.events:
            if event.get("event") == "GUEST_PANICKED":
                return "guest-panic"
            if event.get("event") == "SHUTDOWN":
                reason = str((event.get("data") or {}).get("reason", "unknown"))
        return reason

    def finish(self, timeout: float = 5.0) -> None:
        """After QEMU exited: read what it sent before it went (its last events), close."""
        if self._reader is not None:
            self._reader.join(timeout=timeout)
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._reader is not None:
            self._reader.join(timeout=2)
