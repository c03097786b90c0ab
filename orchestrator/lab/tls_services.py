"""Real TLS endpoints for an emulated Exchange server: IIS (HTTPS), SMTP+STARTTLS, IMAPS and POP3S.

After `Enable-ExchangeCertificate -Services IIS,SMTP,POP,IMAP` the only outside evidence that the migration
worked is the certificate each service presents. These listeners let exmig's verify step (and openssl,
curl, mail clients) check exactly that against the lab, with the lab's real chain.

Which certificate a service presents is decided per connection by the caller's `CertificateSource`, asked
from inside the TLS handshake (the SNI callback), so enabling another certificate in the emulated Exchange
takes effect on the next connection without a restart. A source that returns None for a service means "no
certificate bound": the handshake is aborted with a handshake_failure alert, as a client of a listener
without a binding would see it. The SMTP service still offers STARTTLS in that case; the upgrade fails.

Protocols are deliberately tiny (greeting, capability listing, quit) -- enough for real clients (smtplib,
imaplib, poplib, openssl s_client) to connect and complete the handshake. Everything binds to loopback only,
every socket has a timeout and every connection a command budget and a deadline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import hashlib
import html
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

__all__ = [
    "SERVICES",
    "CertificateSource",
    "ServedCert",
    "TlsServices",
    "check_loopback",
]

log = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = ("https", "smtp", "imaps", "pop3s")

DEFAULT_TIMEOUT = 10.0  # seconds for any single socket operation
CONNECTION_DEADLINE = 60.0  # seconds a client may keep one connection
MAX_COMMANDS = 100  # per connection
MAX_LINE = 4096  # bytes; longer command lines end the connection
MAX_CONNECTIONS = 32  # concurrent, per service
_ACCEPT_POLL = 0.25  # how often an idle acceptor checks whether it was asked to stop
_CONTEXT_CACHE_SIZE = 32


@dataclass(frozen=True)
class ServedCert:
    """The certificate a service presents: leaf (PEM or DER), its private key (PEM, unencrypted) and the
    intermediate certificates (PEM) sent after the leaf."""

    leaf: bytes
    key_pem: bytes = field(repr=False)
    chain: tuple[bytes, ...] = ()

    @classmethod
    def from_pem_chain(cls, chain_pem: bytes, key_pem: bytes) -> ServedCert:
        """From a leaf-first PEM bundle, e.g. what `LabCA.issue_server_cert` returns."""
        certs = x509.load_pem_x509_certificates(chain_pem)
        pems = tuple(c.public_bytes(serialization.Encoding.PEM) for c in certs)
        return cls(pems[0], key_pem, pems[1:])

    def __repr__(self) -> str:
        return f"ServedCert(thumbprint={self.thumbprint}, chain={len(self.chain)})"

    @cached_property
    def certificate(self) -> x509.Certificate:
        if b"-----BEGIN" in self.leaf:
            return x509.load_pem_x509_certificate(self.leaf)
        return x509.load_der_x509_certificate(self.leaf)

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the leaf, upper-case hex (the Exchange/Windows thumbprint)."""
        return self.certificate.fingerprint(hashes.SHA1()).hex().upper()

    @cached_property
    def _cache_key(self) -> str:
        # The thumbprint names the certificate; the digest guards against the same leaf being served
        # with a different chain or key by a later source answer.
        digest = hashlib.sha256(self.key_pem + b"\0".join(self.chain)).hexdigest()
        return f"{self.thumbprint}:{digest}"


CertificateSource = Callable[[str, str | None], ServedCert | None]
"""`source(service, sni)` -> the certificate to present, or None for "no certificate bound".

`service` is one of SERVICES; `sni` is the server name the client asked for, or None when it sent none
(clients connecting by IP address send none). Called once per TLS handshake from a connection thread, so it
must be thread-safe and quick."""


def check_loopback(host: str) -> None:
    """Refuse any bind address other than an IP literal in 127.0.0.0/8 or ::1."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bind address {host!r} must be an IP literal in 127.0.0.0/8 or ::1") from None
    if not ip.is_loopback:
        raise ValueError(f"bind address {host} is not loopback; the lab only listens on 127.0.0.0/8 and ::1")


class _ContextCache:
    """SSLContexts by certificate: building one means loading a key, which is too slow per connection."""

    def __init__(self, maxsize: int = _CONTEXT_CACHE_SIZE) -> None:
        self._maxsize = maxsize
        self._items: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, served: ServedCert) -> ssl.SSLContext:
        key = served._cache_key
        with self._lock:
            ctx = self._items.get(key)
            if ctx is not None:
                self._items.move_to_end(key)
                return ctx
        ctx = _build_context(served)
        with self._lock:
            self._items[key] = ctx
            while len(self._items) > self._maxsize:
                self._items.popitem(last=False)
        return ctx

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _new_server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _build_context(served: ServedCert) -> ssl.SSLContext:
    leaf_pem = served.certificate.public_bytes(serialization.Encoding.PEM)
    ctx = _new_server_context()
    # ssl only loads keys from files: write them into a private (0700) temporary directory, key file 0600,
    # and remove both as soon as OpenSSL has read them.
    with tempfile.TemporaryDirectory(prefix="exmig-tls-") as tmp:
        cert_file = Path(tmp) / "chain.pem"
        key_file = Path(tmp) / "key.pem"
        cert_file.write_bytes(leaf_pem + b"".join(_ensure_newline(p) for p in served.chain))
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(served.key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _ensure_newline(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


class _ConnectionClosed(Exception):
    pass


class _Conn:
    """A client connection with line reading, a command budget and an overall deadline."""

    def __init__(self, sock: socket.socket, peer: str, timeout: float, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self._timeout = timeout
        self._deadline = time.monotonic() + deadline
        self._buf = b""
        self.commands = 0

    def _arm(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("connection deadline reached")
        self.sock.settimeout(min(self._timeout, remaining))

    def send(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def readline(self) -> bytes:
        """One command line without CRLF; raises _ConnectionClosed on EOF, overlong line or spent budget."""
        self.commands += 1
        if self.commands > MAX_COMMANDS:
            raise _ConnectionClosed("command budget spent")
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise _ConnectionClosed("line too long")
            self._arm()
            data = self.sock.recv(4096)
            if not data:
                raise _ConnectionClosed("client closed")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        if len(line) > MAX_LINE:
            raise _ConnectionClosed("line too long")
        return line.rstrip(b"\r")

    def read_until(self, marker: bytes, limit: int) -> bytes:
        while marker not in self._buf:
            if len(self._buf) > limit:
                raise _ConnectionClosed("request too large")
            self._arm()
            data = self.sock.recv(4096)
            if not data:
                raise _ConnectionClosed("client closed")
            self._buf += data
        head, _, self._buf = self._buf.partition(marker)
        return head

    def start_tls(self, ctx: ssl.SSLContext) -> None:
        # RFC 3207 section 4.2: anything the client pipelined after STARTTLS arrived in clear and must not be
        # taken as a command of the protected session.
        self._buf = b""
        self._arm()
        self.sock = ctx.wrap_socket(self.sock, server_side=True)


class _Service:
    """One listening socket and its accept thread."""

    def __init__(self, owner: TlsServices, name: str, port: int) -> None:
        self.owner = owner
        self.name = name
        self.port = port  # 0 until first bound; then kept so a restart comes back on the same port
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._active: set[_Conn] = set()
        self._active_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.tls_context = _new_server_context()
        self.tls_context.sni_callback = self._select_certificate

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        if self._listener is not None:
            return
        host = self.owner.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name == "posix":  # elsewhere SO_REUSEADDR lets another process steal the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self.port))
            sock.listen(16)
            sock.settimeout(_ACCEPT_POLL)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._accept_loop,
            args=(sock, self._stop),
            name=f"exmig-tls-{self.owner.server_name}-{self.name}",
            daemon=True,
        )
        self._thread.start()

    def stop(self, join_timeout: float = 5.0) -> None:
        listener, thread = self._listener, self._thread
        if listener is None:
            return
        self._stop.set()
        self._listener = self._thread = None
        # shutdown() wakes a blocked accept() at once on Linux; elsewhere the accept poll interval bounds it.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        with self._active_lock:
            active = list(self._active)
        for conn in active:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(join_timeout)

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn, addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break  # listener closed by stop()
            if not self._slots.acquire(blocking=False):
                log.warning(
                    "%s/%s: too many connections, dropping %s", self.owner.server_name, self.name, addr
                )
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn, f"{addr[0]}:{addr[1]}"), name=f"{self.name}-conn", daemon=True
            ).start()

    def _serve(self, raw: socket.socket, peer: str) -> None:
        conn = _Conn(raw, peer, self.owner.timeout, self.owner.connection_deadline)
        with self._active_lock:
            self._active.add(conn)
        try:
            _HANDLERS[self.name](self, conn)
        except (_ConnectionClosed, TimeoutError, ssl.SSLError, OSError) as exc:
            log.debug("%s/%s %s: connection ended: %s", self.owner.server_name, self.name, peer, exc)
        except Exception:  # a handler bug must not take the listener down
            log.exception("%s/%s %s: handler failed", self.owner.server_name, self.name, peer)
        finally:
            with self._active_lock:
                self._active.discard(conn)
            for s in {raw, conn.sock}:
                with contextlib.suppress(OSError):
                    s.close()
            self._slots.release()

    def _select_certificate(
        self, tls: ssl.SSLSocket | ssl.SSLObject, sni: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        try:
            served = self.owner.source(self.name, sni)
            if served is None:
                log.info("%s/%s: no certificate bound (sni=%s)", self.owner.server_name, self.name, sni)
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
            tls.context = self.owner._contexts.get(served)
        except Exception:
            log.exception("%s/%s: certificate source failed (sni=%s)", self.owner.server_name, self.name, sni)
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        return None


# ---------------------------------------------------------------------------------------------- protocols


def _handle_https(svc: _Service, conn: _Conn) -> None:
    conn.start_tls(svc.tls_context)
    head = conn.read_until(b"\r\n\r\n", limit=16384)
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    server = html.escape(svc.owner.server_name)
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        status, body = "400 Bad Request", b"<html><body><h1>Bad Request</h1></body></html>"
    elif parts[0] not in ("GET", "HEAD"):
        status, body = "405 Method Not Allowed", b"<html><body><h1>Method Not Allowed</h1></body></html>"
    else:
        status = "200 OK"
        body = (
            f"<!DOCTYPE html><html><head><title>{server}</title></head><body>"
            f"<h1>{server}</h1><p>exmig lab: Internet Information Services on {server}</p></body></html>"
        ).encode()
    headers = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"Server: Microsoft-IIS/7.5\r\nX-Exmig-Lab-Server: {svc.owner.server_name}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    conn.send(headers + (b"" if parts[0] == "HEAD" else body))


def _handle_smtp(svc: _Service, conn: _Conn) -> None:
    name = svc.owner.server_name
    now = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    conn.send(f"220 {name} Microsoft ESMTP MAIL Service ready at {now}\r\n".encode())
    tls = False
    while True:
        line = conn.readline()
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            ext = ["SIZE 10485760", "PIPELINING", "8BITMIME"] + ([] if tls else ["STARTTLS"])
            lines = [f"{name} Hello [{conn.peer.rsplit(':', 1)[0]}]", *ext]
            conn.send(
                "".join(
                    f"250{'-' if i < len(lines) - 1 else ' '}{t}\r\n" for i, t in enumerate(lines)
                ).encode()
            )
        elif verb == b"HELO":
            conn.send(f"250 {name} Hello\r\n".encode())
        elif verb == b"STARTTLS":
            if tls:
                conn.send(b"503 5.5.2 TLS already active\r\n")
                continue
            conn.send(b"220 2.0.0 SMTP server ready\r\n")
            conn.start_tls(svc.tls_context)
            tls = True
        elif verb in (b"NOOP", b"RSET"):
            conn.send(b"250 2.0.0 OK\r\n")
        elif verb == b"QUIT":
            conn.send(b"221 2.0.0 Service closing transmission channel\r\n")
            return
        else:
            conn.send(b"502 5.3.3 Command not implemented in the exmig lab\r\n")


_IMAP_CAPS = "IMAP4 IMAP4rev1 AUTH=PLAIN UIDPLUS IDLE NAMESPACE LITERAL+"


def _handle_imaps(svc: _Service, conn: _Conn) -> None:
    conn.start_tls(svc.tls_context)
    conn.send(f"* OK The Microsoft Exchange IMAP4 service is ready. [{svc.owner.server_name}]\r\n".encode())
    while True:
        line = conn.readline().decode("latin-1")
        tag, _, rest = line.partition(" ")
        command = rest.split(" ", 1)[0].upper()
        if not tag or not command:
            conn.send(b"* BAD Command Error. 10\r\n")
        elif command == "CAPABILITY":
            conn.send(f"* CAPABILITY {_IMAP_CAPS}\r\n{tag} OK CAPABILITY completed.\r\n".encode())
        elif command == "NOOP":
            conn.send(f"{tag} OK NOOP completed.\r\n".encode())
        elif command == "LOGOUT":
            conn.send(
                "* BYE Microsoft Exchange Server IMAP4 server signing off.\r\n"
                f"{tag} OK LOGOUT completed.\r\n".encode()
            )
            return
        else:
            conn.send(f"{tag} BAD Command not supported by the exmig lab.\r\n".encode())


def _handle_pop3s(svc: _Service, conn: _Conn) -> None:
    conn.start_tls(svc.tls_context)
    conn.send(f"+OK The Microsoft Exchange POP3 service is ready. [{svc.owner.server_name}]\r\n".encode())
    while True:
        command = conn.readline().split(b" ", 1)[0].upper()
        if command == b"CAPA":
            conn.send(b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n.\r\n")
        elif command == b"NOOP":
            conn.send(b"+OK\r\n")
        elif command == b"QUIT":
            conn.send(b"+OK Microsoft Exchange Server POP3 server signing off.\r\n")
            return
        else:
            conn.send(b"-ERR Command not supported by the exmig lab.\r\n")


_HANDLERS: dict[str, Callable[[_Service, _Conn], None]] = {
    "https": _handle_https,
    "smtp": _handle_smtp,
    "imaps": _handle_imaps,
    "pop3s": _handle_pop3s,
}


# ---------------------------------------------------------------------------------------------- public


class TlsServices:
    """The TLS listeners of one emulated server.

    `ports` maps the services to run to their port (0 = any free one); `.ports` has the actual ports of
    the running services. Individual services can be stopped and started again (on the same port) so
    verification tests can break one.
    """

    def __init__(
        self,
        server_name: str,
        source: CertificateSource,
        host: str = "127.0.0.1",
        ports: dict[str, int] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connection_deadline: float = CONNECTION_DEADLINE,
    ) -> None:
        check_loopback(host)
        if ports is None:
            ports = {s: 0 for s in SERVICES}
        unknown = set(ports) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown service(s) {sorted(unknown)}; known: {', '.join(SERVICES)}")
        for svc, port in ports.items():
            if not 0 <= port <= 65535:
                raise ValueError(f"port {port} for {svc} is out of range")
        if not 0 < timeout <= 60 or not 0 < connection_deadline <= 600:
            raise ValueError("timeouts must be positive and bounded (timeout <= 60 s, deadline <= 600 s)")
        self.server_name = server_name
        self.source = source
        self.host = host
        self.timeout = timeout
        self.connection_deadline = connection_deadline
        self._contexts = _ContextCache()
        self._services = {name: _Service(self, name, port) for name, port in ports.items()}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TlsServices({self.server_name!r}, host={self.host!r}, ports={self.ports})"

    @property
    def ports(self) -> dict[str, int]:
        """Actual ports of the services that are running now."""
        return {name: s.port for name, s in self._services.items() if s.running}

    @property
    def services(self) -> tuple[str, ...]:
        """The services this instance manages (running or not)."""
        return tuple(self._services)

    def is_running(self, service: str) -> bool:
        return self._service(service).running

    def start(self) -> Self:
        """Start every managed service that is not running; on a bind failure the ones started are stopped."""
        with self._lock:
            started: list[_Service] = []
            try:
                for svc in self._services.values():
                    if not svc.running:
                        svc.start()
                        started.append(svc)
            except BaseException:
                for svc in started:
                    svc.stop()
                raise
        return self

    def stop(self) -> None:
        with self._lock:
            for svc in self._services.values():
                svc.stop()

    def start_service(self, service: str) -> int:
        """Start one service (again); returns its port, the same one it had before if it ran already."""
        with self._lock:
            svc = self._service(service)
            svc.start()
            return svc.port

    def stop_service(self, service: str) -> None:
        """Stop one service: new connections are refused and open ones are cut."""
        with self._lock:
            self._service(service).stop()

    def _service(self, service: str) -> _Service:
        try:
            return self._services[service]
        except KeyError:
            raise ValueError(
                f"{self.server_name} runs no {service!r} service ({', '.join(self._services)})"
            ) from None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
