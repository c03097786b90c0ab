"""Threaded HTTP/1.1 server for the lab: loopback only, keep-alive, TCP_NODELAY, TLS optional.

It knows nothing about WSMan; it hands each POST to an `HttpApp` with a per-connection
state object (NTLM authenticates connections, not requests) and writes the reply in one
`sendall` (headers and body separately trigger Nagle/delayed-ACK stalls of ~40 ms).
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

MAX_BODY = 32 * 1024 * 1024  # far above WSMan's 512 KB envelopes; refuses runaway uploads
IDLE_TIMEOUT = 120.0  # seconds a keep-alive connection may sit idle (HTTP.sys default idle timeout)
TLS_HANDSHAKE_TIMEOUT = 10.0


def require_loopback(host: str) -> None:
    """Refuse anything but 127.0.0.0/8 and ::1: the lab must never listen on a real network."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"lab servers bind to a loopback IP address only, not {host!r}") from None
    if not addr.is_loopback:
        raise ValueError(f"lab servers bind to 127.0.0.0/8 or ::1 only, not {host}")


@dataclass
class Connection:
    id: int
    tls: bool
    state: dict[str, Any] = field(default_factory=dict)  # owned by the app (auth context etc.)


@dataclass
class HttpRequest:
    method: str
    path: str
    headers: Any  # email.message.Message: case-insensitive .get()
    body: bytes
    connection: Connection


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reset: bool = False  # drop the TCP connection with RST instead of replying


class HttpApp(Protocol):
    def handle(self, request: HttpRequest) -> HttpResponse: ...


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: LabHTTPServer

    def setup(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self.server.ssl_context is not None
        if tls:
            sock.settimeout(TLS_HANDSHAKE_TIMEOUT)
            self.request = self.server.ssl_context.wrap_socket(sock, server_side=True)  # type: ignore[union-attr]
        self.lab_connection = Connection(id=next(self.server.connection_ids), tls=tls)
        self.server.track(self.request, True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.request, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log records what matters; stderr noise would hide test output

    def _reply(self, resp: HttpResponse) -> None:
        if resp.reset:
            _reset(self.request)
            self.close_connection = True
            return
        reason = _REASONS.get(resp.status, "")
        lines = [f"HTTP/1.1 {resp.status} {reason}", f"Server: {self.server_version}"]
        has_length = False
        for name, value in resp.headers:
            if name.lower() == "content-length":
                has_length = True
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {len(resp.body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + resp.body)
        self.wfile.flush()

    def do_POST(self) -> None:
        length_text = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._reply(HttpResponse(413 if length > MAX_BODY else 400))
            return
        body = self.rfile.read(length) if length else b""
        request = HttpRequest("POST", self.path, self.headers, body, self.lab_connection)
        try:
            resp = self.server.app.handle(request)
        except Exception:  # noqa: BLE001 - a bug in a layer must not kill the connection thread silently
            self.server.errors.append(_format_exc())
            resp = HttpResponse(500)
        self._reply(resp)

    def _not_allowed(self) -> None:
        self._reply(HttpResponse(405, headers=[("Allow", "POST")]))

    do_GET = do_PUT = do_DELETE = do_HEAD = _not_allowed


def _format_exc() -> str:
    import traceback

    return traceback.format_exc()


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0, so the peer sees ECONNRESET like a crashed/killed server."""
    try:
        raw = sock
        if isinstance(sock, ssl.SSLSocket):
            raw = socket.socket(fileno=sock.fileno())  # same fd; linger applies to the TCP socket
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.detach()
        else:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, host: str, port: int, app: HttpApp, ssl_context: ssl.SSLContext | None) -> None:
        require_loopback(host)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self.ssl_context = ssl_context
        self.connection_ids = itertools.count(1)
        self.errors: list[str] = []
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._open_lock:
            (self._open.add if add else self._open.discard)(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Resets, TLS handshake failures and client hang-ups are normal in fault tests.
        pass

    def close_connections(self) -> None:
        with self._open_lock:
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ServerThread:
    """Runs a LabHTTPServer in a daemon thread; `stop()` closes the listener and open connections."""

    def __init__(self, server: LabHTTPServer) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"lab-http-{server.server_address[1]}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.server.close_connections()
        self._thread.join(timeout)
