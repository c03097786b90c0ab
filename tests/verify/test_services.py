"""One test per service kind: each name reaches the service with its SNI and the SNI picks the certificate."""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.verify import SERVICE_KINDS, Verdict, judge, probe
from orchestrator.verify.tls_probe import ServiceKind

from .conftest import NAMES, Certs, Lab

TIMEOUT = 5.0


@pytest.mark.parametrize("service", SERVICE_KINDS)
def test_each_name_is_sent_as_sni_and_judged(lab: Lab, certs: Certs, service: ServiceKind) -> None:
    # The coexistence picture on one listener: legacy. is answered with another certificate (one that is
    # about to expire), the other names with the migrated one.
    lab.source.set(certs.good.served, legacy_example_test=certs.soon.served)
    expected = {"mail.example.test": (certs.good, Verdict.OK),
                "autodiscover.example.test": (certs.good, Verdict.OK),
                "legacy.example.test": (certs.soon, Verdict.EXPIRES_SOON)}
    for name in NAMES:
        issued, verdict = expected[name]
        presented = probe("127.0.0.1", lab.port(service), service, name, TIMEOUT, roots=certs.roots)
        assert presented.service == service and presented.sni == name
        finding = judge(presented, issued.thumbprint, {certs.intermediate}, name, 30, server="EX2010")
        assert (finding.verdict, finding.thumbprint_seen) == (verdict, issued.thumbprint), finding.detail
        # Judged against the migrated certificate, legacy. is on the wrong one.
        if name == "legacy.example.test":
            assert judge(presented, certs.good.thumbprint).verdict is Verdict.WRONG_CERTIFICATE
    assert [call for call in lab.source.calls if call[0] == service] == [(service, n) for n in NAMES]


@contextmanager
def _smtp_server(replies: list[bytes]) -> Iterator[int]:
    """A minimal misbehaving SMTP peer for one connection: it sends `replies[0]` at once, then one reply
    per line received, then closes. Loopback only, bounded by socket timeouts."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                conn.sendall(replies[0])
                for reply in replies[1:]:
                    if not conn.recv(4096):
                        return
                    conn.sendall(reply)
                conn.recv(4096)
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(6)


@pytest.mark.parametrize(
    ("replies", "stage", "message"),
    [
        ([b"220 mx ESMTP\r\n", b"250-mx Hello\r\n250 SIZE 1000\r\n"], "starttls", "does not offer STARTTLS"),
        ([b"554 5.7.1 go away\r\n"], "greeting", "SMTP greeting 554"),
        ([b"220 mx ESMTP\r\n", b"250-mx Hello\r\n250 STARTTLS\r\n", b"454 4.7.0 TLS not available\r\n"],
         "starttls", "STARTTLS refused: 454"),
        ([b"HTTP/1.1 400 Bad Request\r\n"], "greeting", "not an SMTP reply"),
    ],
)
def test_smtp_that_will_not_start_tls_is_unreachable_with_the_reason(
    certs: Certs, replies: list[bytes], stage: str, message: str
) -> None:
    with _smtp_server(replies) as port:
        presented = probe("127.0.0.1", port, "smtp", "mail.example.test", TIMEOUT)
    assert presented.stage == stage and presented.error is not None and message in presented.error
    finding = judge(presented, certs.good.thumbprint)
    assert finding.verdict is Verdict.UNREACHABLE and message in finding.detail


def test_a_tls_1_0_only_server_is_still_seen(certs: Certs) -> None:
    """Exchange 2007 on Windows Server 2003/2008 speaks TLS 1.0 only; its certificate must still be
    judged, not reported unreachable because the probe refused the protocol."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with tempfile.TemporaryDirectory() as tmp:
        chain, key = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
        chain.write_bytes(certs.good.served.leaf + certs.ca.intermediate_pem)
        key.write_bytes(certs.good.served.key_pem)
        ctx.load_cert_chain(chain, key)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(5)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(5)
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                return

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        presented = probe("127.0.0.1", listener.getsockname()[1], "imaps", "legacy.example.test", TIMEOUT,
                          roots=certs.roots)
        thread.join(6)
    assert presented.tls_version == "TLSv1"
    finding = judge(presented, certs.good.thumbprint, {certs.intermediate})
    assert finding.verdict is Verdict.OK and finding.detail.endswith("TLSv1")
