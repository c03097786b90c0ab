"""Look at the certificate an Exchange service presents, as a mail client or browser would see it.

Two halves, kept apart on purpose:

- `probe()` does the I/O: connect, speak just enough of the protocol to start TLS (SMTP: banner, EHLO,
  STARTTLS; the others: implicit TLS), handshake with the given SNI *without* validating, and keep the chain
  exactly as the server sent it. Validating during the handshake would abort on the very problems we want to
  report (wrong chain, expired, wrong name) and hide what was presented.
- `assess()` is pure: given the chain as sent, the SNI, trusted roots and a time, it works out the facts a
  verdict needs (thumbprint, names, expiry, whether the intermediate that issued the leaf was sent,
  whether the chain verifies for the name). `report.judge` turns those facts into a verdict.

How the chain is read: CPython 3.10-3.12 have the C method `_ssl._SSLSocket.get_unverified_chain()` (it
became public as `SSLSocket.get_unverified_chain` in 3.13); this machine's 3.11.7 has it, and it returns
what OpenSSL's SSL_get_peer_cert_chain returns on the client: the leaf followed by every certificate the
server sent. Where it is missing, the chain is read by running `openssl s_client -showcerts` (see
`openssl.py`) against the same endpoint instead. `Presented.chain_source` says which one was used.

Unreachable endpoints, refused STARTTLS and failed handshakes are values (`Presented.error`), not
exceptions: a verify run reports every endpoint, including the ones that are down.
"""

from __future__ import annotations

import _ssl
import dataclasses
import datetime as dt
import functools
import ipaddress
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from orchestrator.certs import thumbprint
from orchestrator.hostnames import any_covers

__all__ = [
    "DEFAULT_PORTS",
    "SERVICE_KINDS",
    "ChainAssessment",
    "Presented",
    "ServiceKind",
    "assess",
    "chain_reader_available",
    "names_cover",
    "probe",
    "system_roots",
]

ServiceKind = Literal["https", "smtp", "imaps", "pop3s"]
SERVICE_KINDS: tuple[ServiceKind, ...] = get_args(ServiceKind)
DEFAULT_PORTS: dict[ServiceKind, int] = {"https": 443, "smtp": 25, "imaps": 993, "pop3s": 995}

Stage = Literal["connect", "greeting", "starttls", "handshake"]
ChainReader = Literal["auto", "ssl", "openssl"]

_MAX_REPLY_LINES = 100  # an SMTP reply longer than this is not an SMTP server
_MAX_REPLY_BYTES = 64 * 1024
_MAX_SYSTEM_ROOT_FILES = 2000
# `ssl` does not re-export _ssl's DER constant on 3.11; 2 is its value on every CPython that has it.
_ENCODING_DER: int = getattr(_ssl, "ENCODING_DER", 2)


# ---------------------------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class ChainAssessment:
    """What `assess` found out about a presented chain, with no judgement yet."""

    leaf_thumbprint: str
    subject: str  # RFC 4514
    issuer: str
    dns_names: tuple[str, ...]  # subjectAltName dNSName entries, as written in the certificate
    ip_addresses: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int  # whole days until NotAfter from the assessment time; negative once expired
    self_signed: bool
    sent_thumbprints: tuple[str, ...]  # every certificate sent, leaf first, in the order sent
    issuer_sent: str | None  # thumbprint of the sent certificate whose key signed the leaf
    covers_sni: bool
    trusted: bool  # the chain as sent verifies to the trust roots, for the SNI, at the assessment time
    trust_error: str | None
    trust_store: Literal["given", "system", "none"]
    checked_at: dt.datetime


@dataclass(frozen=True)
class Presented:
    """One endpoint, one SNI: what the server presented (or why nothing was presented)."""

    host: str
    port: int
    service: ServiceKind
    sni: str
    chain: tuple[x509.Certificate, ...] = ()  # leaf first, as sent
    error: str | None = None  # set when no chain was obtained
    stage: Stage | None = None  # where it failed
    tls_version: str | None = None
    chain_source: Literal["ssl", "openssl", "none"] = "none"
    assessment: ChainAssessment | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None and bool(self.chain)

    @property
    def leaf(self) -> x509.Certificate | None:
        return self.chain[0] if self.chain else None

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# ---------------------------------------------------------------------------------------------- assess


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _san(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    return tuple(ext.get_values_for_type(x509.DNSName)), tuple(
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    )


def names_cover(dns_names: Sequence[str], ip_addresses: Sequence[str], sni: str) -> bool:
    """Whether a client asking for `sni` accepts these subjectAltNames (RFC 6125, as browsers do).

    The subject CN is deliberately not consulted: current clients ignore it whenever SANs exist, and
    Exchange certificates always carry SANs. The wildcard rule is orchestrator/hostnames.py's."""
    try:
        ip = ipaddress.ip_address(sni)
    except ValueError:
        ip = None
    if ip is not None:
        return any(ipaddress.ip_address(a) == ip for a in ip_addresses)
    return any_covers(dns_names, sni)


def _directly_issued(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


_SYSTEM_ROOTS_LOCK = threading.Lock()


def system_roots() -> tuple[x509.Certificate, ...]:
    """The machine's trusted roots, from the paths OpenSSL itself uses (cafile, else capath).

    Loaded once; the lock matters because probes run in threads and warnings.catch_warnings (used
    while loading) is not thread-safe."""
    with _SYSTEM_ROOTS_LOCK:
        return _load_system_roots()


@functools.cache
def _load_system_roots() -> tuple[x509.Certificate, ...]:
    paths = ssl.get_default_verify_paths()
    found: list[x509.Certificate] = []
    if paths.cafile and Path(paths.cafile).is_file():
        found += _load_pem_file(Path(paths.cafile))
    elif paths.capath and Path(paths.capath).is_dir():
        for i, entry in enumerate(sorted(Path(paths.capath).iterdir())):
            if i >= _MAX_SYSTEM_ROOT_FILES:
                break
            if entry.is_file():
                found += _load_pem_file(entry)
    return tuple(found)


_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _load_pem_file(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, one by one: a single malformed root in a distribution's bundle
    must not cost the others."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    found = []
    with warnings.catch_warnings():
        # Some old roots in distribution bundles have non-positive serials; cryptography warns about each.
        warnings.simplefilter("ignore")
        for block in _PEM_BLOCK.findall(data):
            try:
                found.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    return found


def _verify_name(sni: str) -> x509.verification.Subject:
    try:
        return x509.IPAddress(ipaddress.ip_address(sni))
    except ValueError:
        return x509.DNSName(sni)


def _trust(
    chain: Sequence[x509.Certificate], sni: str, roots: Sequence[x509.Certificate], when: dt.datetime
) -> str | None:
    """None when the chain as sent verifies to `roots` for `sni` at `when`, else why not."""
    if not roots:
        return "no trusted root certificates to verify against"
    try:
        builder = PolicyBuilder().store(Store(list(roots))).time(when)
        verifier = builder.build_server_verifier(_verify_name(sni))
        verifier.verify(chain[0], list(chain[1:]))
    except VerificationError as exc:
        return str(exc)
    except ValueError as exc:  # e.g. an SNI that is neither a DNS name nor an IP address
        return str(exc)
    return None


def assess(
    chain: Sequence[x509.Certificate],
    sni: str,
    roots: Sequence[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
) -> ChainAssessment:
    """Facts about a presented chain (leaf first). `roots=None` trusts the system store, as clients do."""
    if not chain:
        raise ValueError("an empty chain has nothing to assess")
    when = now or _now()
    leaf = chain[0]
    dns_names, ips = _san(leaf)
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    self_signed = leaf.issuer == leaf.subject and _directly_issued(leaf, leaf)
    issuer_sent = next((thumbprint(c) for c in chain[1:] if _directly_issued(leaf, c)), None)
    trust_store: Literal["given", "system", "none"]
    if roots is None:
        roots = system_roots()
        trust_store = "system" if roots else "none"
    else:
        trust_store = "given" if roots else "none"
    trust_error = _trust(chain, sni, roots, when)
    return ChainAssessment(
        leaf_thumbprint=thumbprint(leaf),
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        dns_names=dns_names,
        ip_addresses=ips,
        not_before=not_before,
        not_after=not_after,
        days_left=(not_after - when) // dt.timedelta(days=1),
        self_signed=self_signed,
        sent_thumbprints=tuple(thumbprint(c) for c in chain),
        issuer_sent=issuer_sent,
        covers_sni=names_cover(dns_names, ips, sni),
        trusted=trust_error is None,
        trust_error=trust_error,
        trust_store=trust_store,
        checked_at=when,
    )


# ---------------------------------------------------------------------------------------------- probe


class _Failed(Exception):
    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.message = message


class _Deadline:
    """One time budget for the whole probe; every socket operation gets what is left of it."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def arm(self, sock: socket.socket, stage: Stage) -> None:
        left = self._end - time.monotonic()
        if left <= 0:
            raise _Failed(stage, "timed out")
        sock.settimeout(left)


def chain_reader_available() -> bool:
    """Whether this Python exposes the peer chain as sent (see the module docstring)."""
    if hasattr(ssl.SSLSocket, "get_unverified_chain"):  # 3.13+
        return True
    c_socket = getattr(_ssl, "_SSLSocket", None)
    return c_socket is not None and hasattr(c_socket, "get_unverified_chain")


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Never validate here: the point is to see what is presented, however wrong; assess() validates.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Exchange 2007 on Windows Server 2003/2008 speaks only TLS 1.0. A client that refuses it would report
    # such a server "unreachable" and never show its certificate; a probe sends nothing secret, so it
    # accepts old protocols and reports the version it got (`Presented.tls_version`).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:  # an OpenSSL without security levels takes DEFAULT as it is
        pass
    # Unpatched Windows Server 2003/2008 lack RFC 5746 secure renegotiation, which OpenSSL 3 clients
    # otherwise refuse outright. (ssl names the flag from 3.12 on; 0x4 is OpenSSL's value.)
    ctx.options |= getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)
    return ctx


def _read_reply(
    sock: socket.socket, deadline: _Deadline, stage: Stage, buf: bytearray
) -> tuple[int, list[str]]:
    """One SMTP reply (possibly multi-line): its code and text lines."""
    lines: list[str] = []
    while len(lines) < _MAX_REPLY_LINES:
        while b"\n" not in buf:
            if len(buf) > _MAX_REPLY_BYTES:
                raise _Failed(stage, "reply too long for SMTP")
            deadline.arm(sock, stage)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                raise _Failed(stage, "timed out waiting for the SMTP server") from None
            if not data:
                raise _Failed(stage, "the server closed the connection")
            buf += data
        raw, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        line = raw.rstrip(b"\r").decode("latin-1")
        if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
            raise _Failed(stage, f"not an SMTP reply: {line[:60]!r}")
        lines.append(line[4:])
        if len(line) == 3 or line[3] == " ":
            return int(line[:3]), lines
    raise _Failed(stage, "reply too long for SMTP")


def _send(sock: socket.socket, deadline: _Deadline, stage: Stage, data: bytes) -> None:
    deadline.arm(sock, stage)
    sock.sendall(data)


def _smtp_starttls(sock: socket.socket, deadline: _Deadline) -> None:
    buf = bytearray()
    code, text = _read_reply(sock, deadline, "greeting", buf)
    if code != 220:
        raise _Failed("greeting", f"SMTP greeting {code} {' '.join(text)[:80]}")
    # RFC 5321 4.1.4: EHLO names the client; an address literal is always acceptable.
    local = sock.getsockname()[0]
    literal = f"[IPv6:{local}]" if ":" in local else f"[{local}]"
    _send(sock, deadline, "greeting", f"EHLO {literal}\r\n".encode())
    code, text = _read_reply(sock, deadline, "greeting", buf)
    if code != 250:
        raise _Failed("greeting", f"EHLO refused: {code} {' '.join(text)[:80]}")
    if not any(t.upper().split(" ", 1)[0] == "STARTTLS" for t in text[1:]):
        raise _Failed("starttls", "the server does not offer STARTTLS")
    _send(sock, deadline, "starttls", b"STARTTLS\r\n")
    code, text = _read_reply(sock, deadline, "starttls", buf)
    if code != 220:
        raise _Failed("starttls", f"STARTTLS refused: {code} {' '.join(text)[:80]}")
    if buf:
        # RFC 3207 5: nothing may follow the 220 in clear; a server that sends more is being tampered with.
        raise _Failed("starttls", "the server sent data after its STARTTLS reply")


def _handshake(
    sock: socket.socket, sni: str, deadline: _Deadline
) -> tuple[list[x509.Certificate], str | None]:
    ctx = _client_context()
    deadline.arm(sock, "handshake")
    # server_hostname sends SNI (Python leaves it out for IP literals, as browsers do).
    tls = ctx.wrap_socket(sock, server_hostname=sni, do_handshake_on_connect=False)
    try:
        tls.do_handshake()
        version = tls.version()
        sslobj = tls._sslobj  # type: ignore[attr-defined]
        raw = sslobj.get_unverified_chain() or []
        chain = [x509.load_der_x509_certificate(c.public_bytes(_ENCODING_DER)) for c in raw]
        if not chain:  # cannot happen with a completed certificate-based handshake, but stay honest
            leaf = tls.getpeercert(binary_form=True)
            chain = [x509.load_der_x509_certificate(leaf)] if leaf else []
        return chain, version
    finally:
        tls.close()


def _probe_ssl(host: str, port: int, service: ServiceKind, sni: str, timeout: float) -> Presented:
    deadline = _Deadline(timeout)
    try:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise _Failed("connect", f"no answer within {timeout:g} s") from None
        except OSError as exc:
            raise _Failed("connect", exc.strerror or str(exc)) from None
        try:
            if service == "smtp":
                try:
                    _smtp_starttls(sock, deadline)
                except OSError as exc:
                    raise _Failed("greeting", exc.strerror or str(exc)) from None
            try:
                chain, version = _handshake(sock, sni, deadline)
            except ssl.SSLError as exc:
                # "SSLV3_ALERT_HANDSHAKE_FAILURE" -> "sslv3 alert handshake failure", as openssl prints it
                reason = exc.reason.lower().replace("_", " ") if exc.reason else str(exc)
                raise _Failed("handshake", reason) from None
            except TimeoutError:
                raise _Failed("handshake", "timed out") from None
            except OSError as exc:
                raise _Failed("handshake", exc.strerror or str(exc)) from None
        finally:
            sock.close()
    except _Failed as failed:
        return Presented(host, port, service, sni, error=failed.message, stage=failed.stage)
    if not chain:
        return Presented(host, port, service, sni, error="the server presented no certificate",
                         stage="handshake", tls_version=version, chain_source="ssl")
    return Presented(host, port, service, sni, chain=tuple(chain), tls_version=version, chain_source="ssl")


def _probe_openssl(host: str, port: int, service: ServiceKind, sni: str, timeout: float) -> Presented:
    from orchestrator.verify.openssl import run_s_client

    result = run_s_client(host, port, sni, starttls="smtp" if service == "smtp" else None, timeout=timeout)
    if not result.certificates:
        stage: Stage = "connect" if not result.connected else "handshake"
        return Presented(host, port, service, sni, error=result.error or "no certificate presented",
                         stage=stage, chain_source="openssl")
    return Presented(host, port, service, sni, chain=tuple(result.certificates), tls_version=result.protocol,
                     chain_source="openssl")


def probe(
    host: str,
    port: int,
    service: ServiceKind,
    sni: str,
    timeout: float = 10.0,
    *,
    roots: Sequence[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
    chain_reader: ChainReader = "auto",
) -> Presented:
    """Connect to one endpoint with one SNI and return what it presented, assessed.

    `timeout` bounds the whole probe (connect, SMTP dialogue, handshake). `roots` are the trust anchors for
    the chain check (None: the system store). `chain_reader` forces the way the chain is read ("ssl":
    this Python's peer chain; "openssl": `openssl s_client`); "auto" prefers "ssl" where available."""
    if service not in SERVICE_KINDS:
        raise ValueError(f"unknown service {service!r}; use one of {', '.join(SERVICE_KINDS)}")
    if not 0 < timeout <= 300:
        raise ValueError("timeout must be positive and at most 300 s")
    if chain_reader == "auto":
        chain_reader = "ssl" if chain_reader_available() else "openssl"
    if chain_reader == "ssl":
        presented = _probe_ssl(host, port, service, sni, timeout)
    else:
        presented = _probe_openssl(host, port, service, sni, timeout)
    if not presented.reachable:
        return presented
    return dataclasses.replace(presented, assessment=assess(presented.chain, sni, roots, now))
