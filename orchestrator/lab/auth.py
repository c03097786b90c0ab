"""HTTP authentication and WinRM message encryption, as a WinRM listener does them.

- Basic: credentials on every request, checked against the lab users. Accepted over HTTPS;
  over HTTP only when the server allows unencrypted traffic (WinRM's AllowUnencrypted).
- Negotiate/NTLM: a per-TCP-connection handshake with pyspnego as the acceptor (it takes raw
  NTLMSSP tokens as pypsrp `auth='ntlm'` sends them, and SPNEGO-wrapped ones). Over HTTP the
  bodies are then `multipart/encrypted` (MS-WSMV 2.2.9.1); a plain body on such a connection
  is refused with 401, as a listener with AllowUnencrypted=false does.
- Kerberos, when the server has a keytab from the lab's MIT realm (`KerberosKeys`, see kdc.py):
  inside `Negotiate` (SPNEGO, or the raw Kerberos token pypsrp `auth='kerberos'` sends there) and
  as the `Kerberos` scheme, with `HTTP-SPNEGO-session-encrypted` / `HTTP-Kerberos-session-encrypted`
  bodies (the reply uses the protocol the request named), channel bindings checked by MIT's
  acceptor over HTTPS, and replayed tokens refused by its replay cache. Paths in `kerberos_only`
  (Exchange 2010's IIS-hosted /PowerShell) complete an NTLM handshake but refuse the request that
  follows, as the real endpoint does (see `AuthResult.ntlm_refused`).

pyspnego's NTLM acceptor reads its users only from the file named by the NTLM_USER_FILE
environment variable, when it creates the NTLM context (first leg) and when it checks the
AUTHENTICATE message (last leg), both inside `spnego.server()`/`step()`. Each server keeps its
users in one private file for its lifetime (`UserFile`), and every acceptor step runs under one
process-wide lock with the variable pointing at that file, so several lab servers with different
users can live in one process. The file is an anonymous in-memory file (memfd) where Linux has
them: nothing on disk, and it vanishes with the process however the process ends; elsewhere a
0600 file in a private 0700 temporary directory, removed when the server stops (or at exit).
MIT's acceptor likewise reads its keytab (KRB5_KTNAME) and replay
cache folder (KRB5RCACHEDIR) from the environment; they are set under the same lock.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import shutil
import struct
import tempfile
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spnego
import spnego.exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1  # the hash functions pyspnego itself checks with
from spnego.channel_bindings import GssChannelBindings

from orchestrator.lab.environ import overridden

SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
KERBEROS_PROTOCOL = "application/HTTP-Kerberos-session-encrypted"
BOUNDARY = "Encrypted Boundary"
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"

_ENV_LOCK = threading.Lock()


class UserFile:
    """pyspnego's NTLM user store with only one server's lab users.

    Written once when the server is built, not per handshake step: writing and removing a file in a
    fresh directory for every leg was a visible share of the lab's CPU with 50 servers in one
    process. `active()` only points NTLM_USER_FILE at it, under the lock, for one acceptor step.
    """

    def __init__(self, users: dict[str, str], in_memory: bool = True) -> None:
        # smbpasswd lines (`[DOMAIN\\]USER:UID:LM:NT:FLAGS:LCT`) with the hashes computed once here,
        # not `DOMAIN:USER:PASSWORD`: from a password pyspnego derives the LM hash with its
        # pure-Python DES on every AUTHENTICATE it checks, most of the lab's CPU per handshake.
        # (pyspnego also skips a DOMAIN:USER:PASSWORD line whose password holds a colon.)
        lines = [f"{name}:0:{lmowfv1(password).hex().upper()}:{ntowfv1(password).hex().upper()}:[U]:LCT-00000000\n"
                 for name, password in users.items()]
        content = "".join(lines).encode("utf-8")
        self._fd: int | None = None
        self._directory: str | None = None
        path = self._in_memory(content) if in_memory else None
        self.path = path if path is not None else self._on_disk(content)
        # A server that is never stopped must not leave its users on disk after the process.
        self._finalizer = weakref.finalize(self, _remove, self._fd, self._directory)

    def _in_memory(self, content: bytes) -> str | None:
        """An anonymous memfd, reached by pyspnego through /proc/self/fd (None where there is none)."""
        if not hasattr(os, "memfd_create"):
            return None
        fd = os.memfd_create("exmig-lab-ntlm", os.MFD_CLOEXEC)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, content)
            path = f"/proc/self/fd/{fd}"
            if os.path.isfile(path):  # /proc may be missing (some sandboxes): then the disk file
                self._fd = fd
                return path
        except OSError:
            pass
        os.close(fd)
        return None

    def _on_disk(self, content: bytes) -> str:
        self._directory = tempfile.mkdtemp(prefix="exmig-lab-ntlm-")  # 0700
        path = os.path.join(self._directory, "users")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
        except BaseException:
            shutil.rmtree(self._directory, ignore_errors=True)
            raise
        return path

    def close(self) -> None:
        # Under the lock: a handshake step still running must not find the fd closed, or its
        # number already reused by another file.
        with _ENV_LOCK:
            self._finalizer()  # runs once; later calls (and the one at exit) do nothing

    @contextmanager
    def active(self, extra: dict[str, str] | None = None) -> Iterator[None]:
        """NTLM_USER_FILE (and `extra`, the Kerberos acceptor's variables) for one acceptor step."""
        with _ENV_LOCK:
            if not self._finalizer.alive:
                raise RuntimeError("the lab server's NTLM users were released (server stopped)")
            with overridden({"NTLM_USER_FILE": self.path, **(extra or {})}, keep_keys=True):
                yield


def _remove(fd: int | None, directory: str | None) -> None:
    if fd is not None:
        os.close(fd)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class KerberosKeys:
    """What one emulated server needs to accept Kerberos: its keytab and the realm's replay cache folder.

    Not the realm's krb5.conf: accepting with a keytab needs no realm configuration, and the clients'
    KRB5_CONFIG must not be switched under them (environ.py)."""

    keytab: Path
    rcache_dir: Path

    def environment(self) -> dict[str, str]:
        return {"KRB5_KTNAME": f"FILE:{self.keytab}", "KRB5RCACHEDIR": str(self.rcache_dir)}


def tls_server_end_point(cert_pem: bytes) -> bytes:
    """RFC 5929 channel binding data for a server certificate (the first PEM in `cert_pem`)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(serialization.Encoding.DER))
    return b"tls-server-end-point:" + digest.finalize()


@dataclass
class ConnectionAuth:
    """Authentication state of one TCP connection."""

    context: Any = None  # spnego acceptor, in progress or complete
    username: str | None = None
    scheme: str = ""
    mechanism: str = ""  # "kerberos" or "ntlm" once a Negotiate/Kerberos handshake completed
    encrypted: bool = False  # an NTLM/Negotiate session that requires encrypted bodies
    ntlm_refused: bool = False  # NTLM completed on a Kerberos-only path: every request is refused

    def reset(self) -> None:
        self.context = None
        self.username = None
        self.scheme = ""
        self.mechanism = ""
        self.encrypted = False
        self.ntlm_refused = False


@dataclass
class AuthResult:
    """Either a reply to send now (`status` set) or the plain request body to execute."""

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    username: str | None = None
    scheme: str = ""
    mechanism: str = ""
    encrypted: bool = False  # the request was encrypted, so the reply must be too
    context: Any = None  # the connection's security context when `encrypted`
    protocol: str = SPNEGO_PROTOCOL  # the encryption protocol the request named; the reply names it too
    # The user authenticated with NTLM where the endpoint takes Kerberos only: the server answers the
    # request with the real endpoint's refusal instead of executing it.
    ntlm_refused: bool = False


_PROTOCOL_PARAM = re.compile(r'protocol\s*=\s*"?([^";]+)"?', re.I)


class Authenticator:
    def __init__(
        self,
        users: dict[str, str],
        schemes: tuple[str, ...],
        tls: bool,
        allow_unencrypted: bool = False,
        channel_binding: bytes | None = None,
        kerberos: KerberosKeys | None = None,
        kerberos_only: tuple[str, ...] = (),
    ) -> None:
        self._users = {k.lower(): (k, v) for k, v in users.items()}
        self.schemes = tuple(s.lower() for s in schemes)
        self.tls = tls
        self.allow_unencrypted = allow_unencrypted
        self._user_file = UserFile(users)
        self.kerberos = kerberos
        # Normalized URL paths ("/powershell") where NTLM is refused (only meaningful with Kerberos keys).
        self.kerberos_only = frozenset(p.lower() for p in kerberos_only) if kerberos is not None else frozenset()
        # HTTPS channel binding (CBT), checked as WinRM's CbtHardeningLevel=Relaxed does: a client
        # that sends bindings must send the right ones. MIT's acceptor checks Kerberos' the same way.
        self._bindings = GssChannelBindings(application_data=channel_binding) if channel_binding else None

    @property
    def _wants_negotiate(self) -> bool:
        return "negotiate" in self.schemes or "ntlm" in self.schemes

    def offered(self, path: str) -> list[str]:
        """The authentication a client can succeed with at `path`, as `lab serve --json` reports it."""
        out: list[str] = []
        if self.kerberos is not None and (self._wants_negotiate or "kerberos" in self.schemes):
            out.append("kerberos")
        if self._wants_negotiate and path.lower() not in self.kerberos_only:
            out.append("ntlm")
        if "basic" in self.schemes and (self.tls or self.allow_unencrypted):
            out.append("basic")
        return out

    def close(self) -> None:
        """Release the NTLM user file (the server has stopped)."""
        self._user_file.close()

    def challenge_headers(self) -> list[tuple[str, str]]:
        headers = []
        if self._wants_negotiate:
            headers.append(("WWW-Authenticate", "Negotiate"))
        if "kerberos" in self.schemes and self.kerberos is not None:
            headers.append(("WWW-Authenticate", "Kerberos"))
        if "basic" in self.schemes and (self.tls or self.allow_unencrypted):
            headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        return headers

    def _unauthorized(self, extra: list[tuple[str, str]] | None = None) -> AuthResult:
        return AuthResult(status=401, headers=extra if extra is not None else self.challenge_headers())

    def _check_basic(self, value: str) -> str | None:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        entry = self._users.get(user.lower())
        if entry is None:
            return None
        # Constant-time compare: the lab is local, but there is no reason to teach bad habits.
        return entry[0] if hmac.compare_digest(entry[1].encode(), password.encode()) else None

    def authenticate(self, conn: ConnectionAuth, headers: Any, body: bytes, path: str = "/wsman") -> AuthResult:
        header = headers.get("Authorization", "")
        scheme, _, value = header.strip().partition(" ")
        scheme_l = scheme.lower()

        if scheme_l == "basic" and "basic" in self.schemes:
            if not (self.tls or self.allow_unencrypted):
                return self._unauthorized()
            user = self._check_basic(value.strip())
            if user is None:
                return self._unauthorized()
            conn.reset()
            return AuthResult(body=body, username=user, scheme="basic")

        if (scheme_l in ("negotiate", "ntlm") and self._wants_negotiate) or (
                scheme_l == "kerberos" and "kerberos" in self.schemes and self.kerberos is not None):
            return self._negotiate_step(conn, scheme_l, value.strip(), headers, body, path)

        if scheme:
            return self._unauthorized()

        # No Authorization header: only an established Negotiate session may continue.
        if conn.context is None or not conn.context.complete:
            return self._unauthorized()
        return self._session_body(conn, headers, body)

    def _negotiate_step(self, conn: ConnectionAuth, scheme: str, value: str, headers: Any, body: bytes,
                        path: str) -> AuthResult:
        try:
            token = base64.b64decode(value, validate=True)
        except binascii.Error:
            conn.reset()
            return self._unauthorized()
        extra = self.kerberos.environment() if self.kerberos is not None else None
        try:
            with self._user_file.active(extra):
                if conn.context is None or conn.context.complete:
                    conn.reset()
                    # The Kerberos scheme carries raw Kerberos tokens; Negotiate takes SPNEGO, raw NTLMSSP
                    # and (with a keytab) raw Kerberos, as Windows' Negotiate package does.
                    protocol = "kerberos" if scheme == "kerberos" else "negotiate"
                    conn.context = spnego.server(protocol=protocol, channel_bindings=self._bindings)
                out = conn.context.step(token)
        except (spnego.exceptions.SpnegoError, ValueError, struct.error, AttributeError):
            # Wrong user or password, a replayed or tampered Kerberos token (pyspnego surfaces MIT's
            # refusal as AttributeError), a wrong channel binding: a fresh 401 with the bare challenge.
            conn.reset()
            return self._unauthorized()
        header_name = "Kerberos" if scheme == "kerberos" else "Negotiate"
        out_header = [("WWW-Authenticate", f"{header_name} " + base64.b64encode(out).decode())] if out else []
        if not conn.context.complete:
            return AuthResult(status=401, headers=out_header)
        principal = str(conn.context.client_principal or "")
        user = self._known_user(principal)
        if user is None:
            conn.reset()
            return self._unauthorized()
        conn.username = user
        conn.scheme = scheme if scheme == "kerberos" else "negotiate"
        conn.mechanism = "kerberos" if conn.context.negotiated_protocol == "kerberos" else "ntlm"
        conn.encrypted = not self.tls
        conn.ntlm_refused = conn.mechanism == "ntlm" and path.lower() in self.kerberos_only
        # The request carrying the final token is executed: empty when the client sets up message
        # encryption, the real request over HTTPS. A body here goes through the same rules as on an
        # established session (decrypt, or refuse plain text where encryption is required).
        # The final SPNEGO token (mechListMIC) must reach the client, or sequence numbers drift.
        if body:
            result = self._session_body(conn, headers, body)
            if result.status is not None:
                conn.reset()
                return result
            result.headers = out_header + result.headers
            return result
        return AuthResult(body=body, username=user, scheme=conn.scheme, mechanism=conn.mechanism,
                          headers=out_header, ntlm_refused=conn.ntlm_refused)

    def _known_user(self, principal: str) -> str | None:
        entry = self._users.get(principal.lower())
        if entry is None and "\\" in principal:
            entry = self._users.get(principal.split("\\", 1)[1].lower())
        return entry[0] if entry else None

    def _session_body(self, conn: ConnectionAuth, headers: Any, body: bytes) -> AuthResult:
        ctype = headers.get("Content-Type", "")
        common = {"username": conn.username, "scheme": conn.scheme, "mechanism": conn.mechanism,
                  "ntlm_refused": conn.ntlm_refused}
        if ctype.lower().startswith(("multipart/encrypted", "multipart/x-multi-encrypted")):
            try:
                plain = unwrap(conn.context, body)
            except (spnego.exceptions.SpnegoError, ValueError, struct.error):
                return AuthResult(status=400)
            named = _PROTOCOL_PARAM.search(ctype)
            protocol = named.group(1) if named else SPNEGO_PROTOCOL
            return AuthResult(body=plain, encrypted=True, context=conn.context, protocol=protocol, **common)
        if conn.encrypted and not self.allow_unencrypted and body:
            # Plain text after an encrypted session was set up: refused like AllowUnencrypted=false.
            return self._unauthorized()
        return AuthResult(body=body, **common)


_PART_SPLIT = re.compile(rb"--\s*" + re.escape(BOUNDARY.encode()) + rb"(?:--)?\r\n")


def unwrap(context: Any, body: bytes) -> bytes:
    """multipart/encrypted -> the SOAP bytes (MS-WSMV 2.2.9.1)."""
    parts = [p for p in _PART_SPLIT.split(body) if p.strip()]
    if len(parts) < 2:
        raise ValueError("encrypted body without its two MIME parts")
    out = bytearray()
    for i in range(0, len(parts) - 1, 2):
        meta, payload = parts[i], parts[i + 1]
        m = re.search(rb"Length=(\d+)", meta)
        if m is None:
            raise ValueError("encrypted part without OriginalContent length")
        length = int(m.group(1))
        payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        sig_len = struct.unpack("<i", payload[:4])[0]
        sig = payload[4 : 4 + sig_len]
        data = payload[4 + sig_len :]
        plain = context.unwrap_winrm(sig, data)
        if len(plain) != length:
            raise ValueError("decrypted length differs from OriginalContent")
        out += plain
    return bytes(out)


def wrap(context: Any, plain: bytes, protocol: str = SPNEGO_PROTOCOL) -> tuple[str, bytes]:
    """SOAP bytes -> (Content-Type, multipart/encrypted body) under the encryption `protocol`."""
    sig, data, _ = context.wrap_winrm(plain)
    body = (
        f"--{BOUNDARY}\r\n\tContent-Type: {protocol}\r\n"
        f"\tOriginalContent: type={SOAP_CONTENT_TYPE};Length={len(plain)}\r\n"
        f"--{BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n"
    ).encode() + struct.pack("<i", len(sig)) + sig + data + f"--{BOUNDARY}--\r\n".encode()
    ctype = f'multipart/encrypted;protocol="{protocol}";boundary="{BOUNDARY}"'
    return ctype, body
