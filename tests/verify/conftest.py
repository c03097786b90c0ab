"""Certificates for every verdict, and lab TLS services whose presented certificate each test chooses.

One lab CA per session (key generation is the slow part); the lab services run once per module and ask
`Source` which certificate to present for each (service, SNI), so a test only changes the answer.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from orchestrator.certs import thumbprint
from orchestrator.lab.ca import LabCA
from orchestrator.lab.tls_services import SERVICES, ServedCert, TlsServices

# The seed's names: mail. moves to 2010, legacy. points at 2007 during coexistence.
NAMES = ["mail.example.test", "autodiscover.example.test", "legacy.example.test"]


@dataclass(frozen=True)
class Issued:
    """A certificate as a test uses it: what the service presents and what the report should say."""

    served: ServedCert
    cert: x509.Certificate

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.cert)

    def without_chain(self) -> ServedCert:
        return ServedCert(self.served.leaf, self.served.key_pem, ())

    def with_chain(self, *pems: bytes) -> ServedCert:
        return ServedCert(self.served.leaf, self.served.key_pem, pems)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _csr(key: rsa.RSAPrivateKey, names: list[str]) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def issue(ca: LabCA, names: list[str], days: int = 365, not_before: dt.datetime | None = None) -> Issued:
    key = _key()
    cert = ca.sign_csr(_csr(key, names), days=days, not_before=not_before)
    served = ServedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), (ca.intermediate_pem,))
    return Issued(served, cert)


def self_signed(names: list[str]) -> Issued:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(ServedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)), cert)


@dataclass(frozen=True)
class Certs:
    ca: LabCA
    other_ca: LabCA
    root_file: Path
    good: Issued  # all three names, from the lab CA
    no_legacy: Issued  # mail. and autodiscover. only
    expired: Issued
    soon: Issued  # expires in 10 days
    self_signed: Issued
    foreign: Issued  # all names, from a CA the tests do not trust

    @property
    def roots(self) -> list[x509.Certificate]:
        return [self.ca.root_cert]

    @property
    def intermediate(self) -> str:
        return thumbprint(self.ca.intermediate_cert)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    base = tmp_path_factory.mktemp("verify-ca")
    ca = LabCA.load_or_create(base / "lab")
    other = LabCA.load_or_create(base / "other", name="Elsewhere")
    now = dt.datetime.now(dt.UTC)
    return Certs(
        ca=ca,
        other_ca=other,
        root_file=ca.write_ca_file(base / "root.pem"),
        good=issue(ca, NAMES),
        no_legacy=issue(ca, NAMES[:2]),
        expired=issue(ca, NAMES, days=30, not_before=now - dt.timedelta(days=40)),
        soon=issue(ca, NAMES, days=10),
        self_signed=self_signed(NAMES),
        foreign=issue(other, NAMES),
    )


class Source:
    """A CertificateSource: per (service, SNI) answer, else the default; records what it was asked."""

    def __init__(self) -> None:
        self.default: ServedCert | None = None
        self.by_sni: dict[str, ServedCert | None] = {}
        self.calls: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    def set(self, served: ServedCert | None, **by_sni: ServedCert | None) -> None:
        self.default = served
        self.by_sni = {k.replace("_", "."): v for k, v in by_sni.items()}
        with self._lock:
            self.calls.clear()

    def __call__(self, service: str, sni: str | None) -> ServedCert | None:
        with self._lock:
            self.calls.append((service, sni))
        if sni is not None and sni in self.by_sni:
            return self.by_sni[sni]
        return self.default


@dataclass
class Lab:
    services: TlsServices
    source: Source

    def port(self, service: str) -> int:
        return self.services.ports[service]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    source = Source()
    with TlsServices("EX2010", source, ports={s: 0 for s in SERVICES}, timeout=5) as services:
        yield Lab(services, source)


@pytest.fixture
def fresh_lab(lab: Lab, certs: Certs) -> Lab:
    lab.source.set(certs.good.served)
    return lab
