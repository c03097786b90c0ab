"""The lab's TLS listeners present the enabled certificate, with its intermediate, to real clients."""

from __future__ import annotations

import hashlib
import imaplib
import poplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.verification import PolicyBuilder, Store

from orchestrator.lab.ca import LabCA
from orchestrator.lab.tls_services import SERVICES, ServedCert, TlsServices, check_loopback

from .conftest import SEED_NAMES, key_pem, make_csr

OPENSSL = shutil.which("openssl")
TIMEOUT = 10


class Source:
    """A CertificateSource whose answers the test changes, recording what it was asked."""

    def __init__(self, cert: ServedCert | None) -> None:
        self.certs: dict[str, ServedCert | None] = {s: cert for s in SERVICES}
        self.calls: list[tuple[str, str | None]] = []
        self.fail = False
        self._lock = threading.Lock()

    def __call__(self, service: str, sni: str | None) -> ServedCert | None:
        with self._lock:
            self.calls.append((service, sni))
        if self.fail:
            raise RuntimeError("source broke")
        return self.certs[service]


def _served(ca: LabCA, with_chain: bool = True) -> ServedCert:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = ca.sign_csr(make_csr(key, sans=SEED_NAMES))
    chain = (ca.intermediate_pem,) if with_chain else ()
    return ServedCert(leaf.public_bytes(serialization.Encoding.PEM), key_pem(key), chain)


@pytest.fixture(scope="module")
def cert_a(lab_ca: LabCA) -> ServedCert:
    return _served(lab_ca)


@pytest.fixture(scope="module")
def cert_b(lab_ca: LabCA) -> ServedCert:
    return _served(lab_ca)


@pytest.fixture(scope="module")
def root_file(lab_ca: LabCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab_ca.write_ca_file(tmp_path_factory.mktemp("trust") / "root.pem")


@pytest.fixture
def source(cert_a: ServedCert) -> Source:
    return Source(cert_a)


@pytest.fixture
def services(source: Source) -> Iterator[TlsServices]:
    with TlsServices("EX2010.lab.test", source) as svc:
        yield svc


def _client_ctx(root_file: Path, check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(root_file))
    # Python 3.13 makes strict X.509 checks the default; hold the lab's chain to that standard already.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.check_hostname = check_hostname
    return ctx


def _sha1(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def _https_get(port: int, ctx: ssl.SSLContext, sni: str | None) -> tuple[str, str, bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        for _ in range(100):
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    assert der is not None
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body, der


def _s_client(args: list[str]) -> tuple[str, list[x509.Certificate]]:
    assert OPENSSL is not None
    out = subprocess.run(
        [OPENSSL, "s_client", *args], input=b"", capture_output=True, timeout=TIMEOUT, check=False
    ).stdout.decode("latin-1")
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, flags=re.DOTALL)
    return out, [x509.load_pem_x509_certificate(p.encode()) for p in pems]


# ------------------------------------------------------------------------------------------------ HTTPS


def test_https_presents_enabled_cert_for_each_name(
    services: TlsServices, source: Source, cert_a: ServedCert, root_file: Path
) -> None:
    ctx = _client_ctx(root_file)
    for name in SEED_NAMES:
        status, body, der = _https_get(services.ports["https"], ctx, name)
        assert status == "HTTP/1.1 200 OK"
        assert "EX2010.lab.test" in body
        assert _sha1(der) == cert_a.thumbprint
    # The client trusts the root only, so verification passing means the intermediate was sent.
    assert [sni for svc, sni in source.calls if svc == "https"] == SEED_NAMES


def test_verification_fails_when_intermediate_is_not_sent(lab_ca: LabCA, root_file: Path) -> None:
    src = Source(_served(lab_ca, with_chain=False))
    with TlsServices("EX2007", src, ports={"https": 0}) as svc, pytest.raises(ssl.SSLCertVerificationError):
        _https_get(svc.ports["https"], _client_ctx(root_file), "mail.example.test")


def test_openssl_sees_leaf_and_intermediate(
    services: TlsServices, cert_a: ServedCert, lab_ca: LabCA, root_file: Path
) -> None:
    out, certs = _s_client(
        [
            "-connect", f"127.0.0.1:{services.ports['https']}",
            "-servername", "mail.example.test", "-showcerts",
            "-CAfile", str(root_file), "-verify_hostname", "mail.example.test",
        ]
    )  # fmt: skip
    assert certs == [cert_a.certificate, lab_ca.intermediate_cert], out
    assert "Verify return code: 0 (ok)" in out


def test_switching_the_source_changes_the_next_connection(
    services: TlsServices, source: Source, cert_a: ServedCert, cert_b: ServedCert, root_file: Path
) -> None:
    ctx = _client_ctx(root_file)
    port = services.ports["https"]
    assert _sha1(_https_get(port, ctx, "mail.example.test")[2]) == cert_a.thumbprint
    source.certs["https"] = cert_b
    assert _sha1(_https_get(port, ctx, "mail.example.test")[2]) == cert_b.thumbprint
    source.certs["https"] = cert_a
    assert _sha1(_https_get(port, ctx, "legacy.example.test")[2]) == cert_a.thumbprint
    assert len(services._contexts) == 2  # both contexts built once and reused


def test_no_sni_reaches_the_source_as_none(services: TlsServices, source: Source, root_file: Path) -> None:
    ctx = _client_ctx(root_file, check_hostname=False)
    _https_get(services.ports["https"], ctx, None)
    assert ("https", None) in source.calls


def test_unbound_service_fails_the_handshake(services: TlsServices, source: Source, root_file: Path) -> None:
    source.certs["https"] = None
    with pytest.raises(ssl.SSLError):
        _https_get(services.ports["https"], _client_ctx(root_file), "mail.example.test")
    source.fail = True
    source.certs["https"] = source.certs["smtp"]
    with pytest.raises(ssl.SSLError):
        _https_get(services.ports["https"], _client_ctx(root_file), "mail.example.test")
    source.fail = False
    assert _https_get(services.ports["https"], _client_ctx(root_file), "mail.example.test")[0].endswith(
        "200 OK"
    )


# ------------------------------------------------------------------------------------------------ mail


def test_smtp_starttls_with_smtplib(services: TlsServices, cert_a: ServedCert, root_file: Path) -> None:
    # smtplib verifies against the host it connected to (an IP here), so the name check is done separately.
    ctx = _client_ctx(root_file, check_hostname=False)
    with smtplib.SMTP("127.0.0.1", services.ports["smtp"], timeout=TIMEOUT) as smtp:
        code, _banner = smtp.ehlo()
        assert code == 250 and smtp.has_extn("starttls")
        assert smtp.starttls(context=ctx)[0] == 220
        der = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert der is not None and _sha1(der) == cert_a.thumbprint
        smtp.ehlo()
        assert not smtp.has_extn("starttls")  # not offered twice
        assert smtp.noop()[0] == 250


def test_smtp_starttls_with_openssl(
    services: TlsServices, source: Source, cert_b: ServedCert, lab_ca: LabCA, root_file: Path
) -> None:
    source.certs["smtp"] = cert_b
    out, certs = _s_client(
        [
            "-connect", f"127.0.0.1:{services.ports['smtp']}", "-starttls", "smtp",
            "-servername", "mail.example.test", "-showcerts", "-CAfile", str(root_file),
            "-verify_hostname", "mail.example.test",
        ]
    )  # fmt: skip
    assert certs == [cert_b.certificate, lab_ca.intermediate_cert], out
    assert "Verify return code: 0 (ok)" in out
    assert ("smtp", "mail.example.test") in source.calls


def test_smtp_discards_commands_pipelined_before_tls(services: TlsServices, root_file: Path) -> None:
    ctx = _client_ctx(root_file, check_hostname=False)
    with socket.create_connection(("127.0.0.1", services.ports["smtp"]), timeout=TIMEOUT) as raw:
        raw.recv(4096)
        raw.sendall(b"STARTTLS\r\nQUIT\r\n")  # QUIT travels in clear and must be ignored
        assert raw.recv(4096).startswith(b"220 ")
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(b"NOOP\r\n")
            assert tls.recv(4096).startswith(b"250 ")


def test_imaps_with_imaplib(services: TlsServices, cert_a: ServedCert, root_file: Path) -> None:
    ctx = _client_ctx(root_file, check_hostname=False)
    imap = imaplib.IMAP4_SSL("127.0.0.1", services.ports["imaps"], ssl_context=ctx, timeout=TIMEOUT)
    try:
        assert imap.welcome.startswith(b"* OK")
        assert "IMAP4REV1" in imap.capabilities
        assert imap.noop()[0] == "OK"
        assert isinstance(imap.sock, ssl.SSLSocket)
        der = imap.sock.getpeercert(binary_form=True)
        assert der is not None and _sha1(der) == cert_a.thumbprint
    finally:
        assert imap.logout()[0] == "BYE"


def test_pop3s_with_poplib(services: TlsServices, cert_a: ServedCert, root_file: Path) -> None:
    ctx = _client_ctx(root_file, check_hostname=False)
    pop = poplib.POP3_SSL("127.0.0.1", services.ports["pop3s"], context=ctx, timeout=TIMEOUT)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        assert "UIDL" in pop.capa()
        der = pop.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert der is not None and _sha1(der) == cert_a.thumbprint
    finally:
        assert pop.quit().startswith(b"+OK")


def test_mail_services_honour_sni(
    services: TlsServices, source: Source, cert_b: ServedCert, root_file: Path
) -> None:
    source.certs["imaps"] = cert_b
    ctx = _client_ctx(root_file)
    for service in ("imaps", "pop3s"):
        with (
            socket.create_connection(("127.0.0.1", services.ports[service]), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname="autodiscover.example.test") as tls,
        ):
            greeting = tls.recv(4096)
            der = tls.getpeercert(binary_form=True)
        assert greeting.startswith(b"* OK" if service == "imaps" else b"+OK")
        assert der is not None
        expected = cert_b if service == "imaps" else source.certs["pop3s"]
        assert expected is not None and _sha1(der) == expected.thumbprint
        assert (service, "autodiscover.example.test") in source.calls


# ------------------------------------------------------------------------------------------------ lifecycle


def test_stop_and_start_one_service(services: TlsServices, root_file: Path) -> None:
    port = services.ports["imaps"]
    services.stop_service("imaps")
    assert "imaps" not in services.ports and not services.is_running("imaps")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    # The others keep serving.
    assert _https_get(services.ports["https"], _client_ctx(root_file), "mail.example.test")[0].endswith(
        "200 OK"
    )
    assert services.start_service("imaps") == port
    ctx = _client_ctx(root_file, check_hostname=False)
    imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=TIMEOUT)
    imap.logout()


def test_only_requested_services_run_and_stop_is_complete(source: Source) -> None:
    svc = TlsServices("EX", source, ports={"smtp": 0})
    svc.start()
    try:
        assert set(svc.ports) == {"smtp"}
        with pytest.raises(ValueError):
            svc.stop_service("https")
    finally:
        svc.stop()
    assert svc.ports == {}


def test_idle_client_is_disconnected(source: Source) -> None:
    with (
        TlsServices("EX", source, ports={"smtp": 0}, timeout=0.5) as svc,
        socket.create_connection(("127.0.0.1", svc.ports["smtp"]), timeout=TIMEOUT) as raw,
    ):
        assert raw.recv(4096).startswith(b"220 ")
        started = time.monotonic()
        assert raw.recv(4096) == b""  # server gave up on us
        assert time.monotonic() - started < 5


def test_stop_cuts_open_connections(source: Source) -> None:
    svc = TlsServices("EX", source, ports={"smtp": 0}).start()
    raw = socket.create_connection(("127.0.0.1", svc.ports["smtp"]), timeout=TIMEOUT)
    try:
        assert raw.recv(4096).startswith(b"220 ")
        started = time.monotonic()
        svc.stop()
        assert raw.recv(4096) == b""
        assert time.monotonic() - started < 5
    finally:
        raw.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "192.168.0.1", "::", "localhost", "example.test"])
def test_refuses_non_loopback_bind(host: str, source: Source) -> None:
    with pytest.raises(ValueError):
        TlsServices("EX", source, host=host)


def test_accepts_loopback_range() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1"):
        check_loopback(host)


def test_ipv6_loopback(source: Source, root_file: Path, cert_a: ServedCert) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        svc = TlsServices("EX", source, host="::1", ports={"https": 0}).start()
    except OSError:
        pytest.skip("::1 not configured here")
    try:
        with (
            socket.create_connection(("::1", svc.ports["https"]), timeout=TIMEOUT) as raw,
            _client_ctx(root_file).wrap_socket(raw, server_hostname="mail.example.test") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None and _sha1(der) == cert_a.thumbprint
    finally:
        svc.stop()


def test_served_cert_from_issue_server_cert(lab_ca: LabCA) -> None:
    chain_pem, key = lab_ca.issue_server_cert(["ex.lab.test"])
    served = ServedCert.from_pem_chain(chain_pem, key)
    assert served.chain == (lab_ca.intermediate_pem,)
    assert "PRIVATE" not in repr(served) and served.thumbprint in repr(served)
    PolicyBuilder().store(Store([lab_ca.root_cert])).build_server_verifier(
        x509.DNSName("ex.lab.test")
    ).verify(served.certificate, [lab_ca.intermediate_cert])


def test_der_leaf_and_http_methods(lab_ca: LabCA, cert_a: ServedCert, root_file: Path) -> None:
    der_cert = ServedCert(
        cert_a.certificate.public_bytes(serialization.Encoding.DER), cert_a.key_pem, cert_a.chain
    )
    with TlsServices("EX", Source(der_cert), ports={"https": 0}) as svc:
        ctx = _client_ctx(root_file)
        port = svc.ports["https"]
        assert _sha1(_https_get(port, ctx, "mail.example.test")[2]) == cert_a.thumbprint
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname="mail.example.test") as tls,
        ):
            tls.sendall(b"POST /owa HTTP/1.1\r\nHost: mail.example.test\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 405 ")


def test_concurrent_connections_while_switching(
    services: TlsServices, source: Source, cert_a: ServedCert, cert_b: ServedCert, root_file: Path
) -> None:
    ctx = _client_ctx(root_file)
    seen: list[str] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            seen.append(_sha1(_https_get(services.ports["https"], ctx, "mail.example.test")[2]))
        except (OSError, AssertionError) as exc:  # collected and asserted below (ssl.SSLError is an OSError)
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for i, t in enumerate(threads):
        if i == 8:
            source.certs["https"] = cert_b
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors and len(seen) == 16
    assert set(seen) <= {cert_a.thumbprint, cert_b.thumbprint}
    assert _sha1(_https_get(services.ports["https"], ctx, "mail.example.test")[2]) == cert_b.thumbprint
