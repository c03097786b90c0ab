"""`openssl s_client -showcerts` as a second, independent witness of what an endpoint presents.

Two uses: `tls_probe` falls back to it to read the presented chain on a Python that cannot, and the tests
compare exmig's verdict with a verdict built only from what openssl printed (its certificate list, its
`NotAfter` lines and its own verification errors, found with `-CAfile` and `-verify_hostname`).

s_client prints the chain and the session on stdout and its verification callback on stderr:

    depth=0 CN = mail.example.test
    verify error:num=20:unable to get local issuer certificate

Only the *last* error reaches "Verify return code", so every `verify error:num=` line is collected.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from orchestrator.certs import thumbprint

__all__ = ["SClientResult", "X509Error", "openssl_verdict", "parse_s_client", "run_s_client"]


class X509Error:
    """OpenSSL's X509_V_ERR_* numbers this module interprets (include/openssl/x509_vfy.h)."""

    UNABLE_TO_GET_ISSUER_CERT = 2
    CERT_NOT_YET_VALID = 9
    CERT_HAS_EXPIRED = 10
    DEPTH_ZERO_SELF_SIGNED_CERT = 18
    SELF_SIGNED_CERT_IN_CHAIN = 19
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
    UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
    HOSTNAME_MISMATCH = 62


@dataclass(frozen=True)
class SClientResult:
    connected: bool  # TCP connected ("CONNECTED(...)")
    certificates: tuple[x509.Certificate, ...] = ()  # as printed under "Certificate chain", leaf first
    not_after: tuple[dt.datetime | None, ...] = ()  # from the "v:NotBefore: ...; NotAfter: ..." lines
    protocol: str | None = None
    verify_code: int | None = None  # the final "Verify return code"
    verify_errors: tuple[tuple[int, int], ...] = ()  # (depth, X509_V_ERR number) for every error printed
    error: str | None = None  # why no certificate was obtained
    stdout: str = field(default="", repr=False)
    stderr: str = field(default="", repr=False)

    def errors_at(self, depth: int | None = None) -> set[int]:
        return {num for d, num in self.verify_errors if depth is None or d == depth}


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL)
_ENTRY = re.compile(r"^\s*(\d+) s:")
_VALIDITY = re.compile(r"^\s*v:NotBefore: (.+?); NotAfter: (.+?)\s*$")
_PROTOCOL = re.compile(r"^\s*Protocol\s*:\s*(\S+)")
_NEW_SESSION = re.compile(r"^(?:New|Reused), (\S+), Cipher is")
_VERIFY_CODE = re.compile(r"^\s*Verify return code: (\d+)")
_DEPTH = re.compile(r"^depth=(\d+)")
_VERIFY_ERROR = re.compile(r"^verify error:num=(\d+):")


def _openssl_time(text: str) -> dt.datetime | None:
    # "Nov 23 12:15:08 2026 GMT" (ASN1_TIME_print); the day is space-padded.
    try:
        return dt.datetime.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def parse_s_client(stdout: str, stderr: str = "") -> SClientResult:
    """Turn s_client's output into certificates, validity dates, protocol and verification errors."""
    connected = any(line.startswith("CONNECTED(") for line in stdout.splitlines())
    certificates: list[x509.Certificate] = []
    not_after: list[dt.datetime | None] = []
    protocol: str | None = None
    verify_code: int | None = None
    in_chain = False
    entry_dates: dict[int, dt.datetime | None] = {}
    current_entry: int | None = None
    for line in stdout.splitlines():
        if line.startswith("Certificate chain"):
            in_chain = True
            continue
        if in_chain and line.rstrip() == "---":  # the section rule, not a PEM boundary
            in_chain = False
            continue
        if in_chain:
            m = _ENTRY.match(line)
            if m:
                current_entry = int(m.group(1))
                entry_dates.setdefault(current_entry, None)
                continue
            m = _VALIDITY.match(line)
            if m and current_entry is not None:
                entry_dates[current_entry] = _openssl_time(m.group(2))
            continue
        if protocol is None:
            m = _PROTOCOL.match(line) or _NEW_SESSION.match(line)
            if m and m.group(1) != "(NONE),":
                protocol = m.group(1)
        m = _VERIFY_CODE.match(line)
        if m:
            verify_code = int(m.group(1))
    chain_text = _chain_section(stdout)
    for block in _PEM.findall(chain_text):
        certificates.append(x509.load_pem_x509_certificate(block.encode("ascii")))
    not_after = [entry_dates.get(i) for i in range(len(certificates))]

    errors: list[tuple[int, int]] = []
    depth = 0
    for line in stderr.splitlines():
        m = _DEPTH.match(line)
        if m:
            depth = int(m.group(1))
            continue
        m = _VERIFY_ERROR.match(line)
        if m:
            pair = (depth, int(m.group(1)))
            if pair not in errors:
                errors.append(pair)

    error = None
    if not certificates:
        error = _failure_reason(stdout, stderr, connected)
    return SClientResult(
        connected=connected,
        certificates=tuple(certificates),
        not_after=tuple(not_after),
        protocol=protocol,
        verify_code=verify_code,
        verify_errors=tuple(errors),
        error=error,
        stdout=stdout,
        stderr=stderr,
    )


def _chain_section(stdout: str) -> str:
    start = stdout.find("Certificate chain")
    if start < 0:
        return ""
    end = re.compile(r"^---\s*$", re.MULTILINE).search(stdout, start)
    return stdout[start:] if end is None else stdout[start:end.start()]


def _failure_reason(stdout: str, stderr: str, connected: bool) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("connect:errno="):
            return f"connection failed ({line})"
    for line in lines:
        # "40F7...:error:0A000410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure:..."
        parts = line.split(":")
        if len(parts) > 5 and parts[1] == "error":
            return parts[5]
    if "no peer certificate available" in stdout:
        return "no peer certificate available"
    return "connected, but no certificate was presented" if connected else "could not connect"


def run_s_client(
    host: str,
    port: int,
    sni: str,
    *,
    starttls: str | None = None,
    cafile: Path | str | None = None,
    verify_hostname: str | None = None,
    timeout: float = 10.0,
    openssl: str | None = None,
) -> SClientResult:
    """Run `openssl s_client -connect host:port -servername sni -showcerts [-starttls ...]`, bounded by
    `timeout`. With `cafile` only that file is trusted (no system store), so openssl's verification errors
    say what a client trusting exactly those roots would see."""
    binary = openssl or shutil.which("openssl")
    if binary is None:
        return SClientResult(connected=False, error="openssl is not installed")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    argv = [binary, "s_client", "-connect", target, "-servername", sni, "-showcerts"]
    if starttls:
        argv += ["-starttls", starttls]
    if cafile is not None:
        argv += ["-CAfile", str(cafile), "-no-CApath", "-no-CAstore"]
    if verify_hostname is not None:
        argv += ["-verify_hostname", verify_hostname]
    try:
        # stdin at EOF makes s_client close the connection as soon as the handshake is done.
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False, errors="replace")
    except subprocess.TimeoutExpired:
        return SClientResult(connected=False, error=f"openssl s_client did not finish within {timeout:g} s")
    except OSError as exc:
        return SClientResult(connected=False, error=f"cannot run openssl: {exc.strerror or exc}")
    return parse_s_client(done.stdout, done.stderr)


def openssl_verdict(
    result: SClientResult,
    expected_thumbprint: str,
    warn_days: int = 30,
    now: dt.datetime | None = None,
) -> str:
    """The verdict (a `report.Verdict` value) from openssl's own findings alone.

    Needs a result from `run_s_client(..., cafile=roots, verify_hostname=sni)`. Checks run in the order
    `report.judge` uses, so the two can be compared one to one."""
    if not result.certificates:
        return "unreachable"
    if thumbprint(result.certificates[0]) != expected_thumbprint.replace(" ", "").upper():
        return "wrong_certificate"
    errors = result.errors_at()
    if X509Error.CERT_HAS_EXPIRED in errors:
        return "expired"
    if X509Error.HOSTNAME_MISMATCH in errors:
        return "name_mismatch"
    if X509Error.DEPTH_ZERO_SELF_SIGNED_CERT in errors:
        return "untrusted"
    leaf_errors = result.errors_at(0)
    if {X509Error.UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509Error.UNABLE_TO_VERIFY_LEAF_SIGNATURE} & leaf_errors:
        return "missing_intermediate"
    if errors:
        return "untrusted"
    # OpenSSL 3 prints NotAfter; older versions do not, and then the certificate itself is read.
    expires = result.not_after[0] if result.not_after else None
    if expires is None:
        expires = result.certificates[0].not_valid_after_utc
    days_left = (expires - (now or dt.datetime.now(dt.UTC))) // dt.timedelta(days=1)
    if days_left < warn_days:
        return "expires_soon"
    return "ok"
