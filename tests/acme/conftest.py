"""ACME tests run against real pebble (Let's Encrypt's test CA) and real bind9 `named`, started here.

Where the programs are missing the tests skip with the install command; in CI (CI=true) they fail
instead, so a CI machine without them cannot pass by skipping. One pebble and one named serve the whole
folder (each starts in about a second); every test has its own state folder, so its own ACME account.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from orchestrator.acme_issue import AcmeSettings, Rfc2136Responder
from orchestrator.lab.acme_services import BIND_HINT, PEBBLE_HINT, LabDns, LabPebble, missing_programs, new_eab_hmac
from orchestrator.lab.children import free_port

ZONE = "mitserv.net"
NAMES = ("mail.mitserv.net", "autodiscover.mitserv.net", "legacy.mitserv.net")
BLOCKED = "blocked.mitserv.net"
KID = "exmig-test-kid"


def require_acme_lab() -> None:
    missing = missing_programs()
    if missing:
        reason = (f"the ACME lab needs {', '.join(missing)}: "
                  + " and ".join(h for p, h in (("pebble", PEBBLE_HINT), ("named", BIND_HINT)) if p in missing))
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the ACME tests: {reason}")
        pytest.skip(reason)


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


@dataclass
class AcmeLab:
    dns: LabDns
    pebble: LabPebble
    hmac: str
    tmp: Path

    def settings(self, **changes: object) -> AcmeSettings:
        values: dict[str, object] = dict(directory=self.pebble.directory_url, contact="hostmaster@mitserv.net",
                                         eab_kid=KID, eab_hmac=self.hmac, ca_bundle=self.pebble.tls_ca_file,
                                         timeout=30.0)
        values.update(changes)
        return AcmeSettings(**values)  # type: ignore[arg-type]

    def dns_responder(self, secret: str | None = None) -> Rfc2136Responder:
        return Rfc2136Responder(self.dns.server, ZONE, self.dns.tsig_name, secret or self.dns.tsig_secret,
                                propagation_timeout=10)


@pytest.fixture(scope="session")
def acme_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeLab]:
    require_acme_lab()
    tmp = tmp_path_factory.mktemp("acme-lab")
    dns = LabDns(tmp / "dns", zone=ZONE, records={n: "127.0.0.1" for n in (*NAMES, BLOCKED)})
    hmac = new_eab_hmac()
    # http-01 validation connects to this port: the tests' emulated IIS listens there.
    pebble = LabPebble(tmp / "pebble", dns=dns, http_port=free_port("127.0.0.1", udp=False), eab_keys={KID: hmac},
                       blocked=(BLOCKED,))
    dns.start()
    try:
        pebble.start()
    except BaseException:
        dns.stop()
        raise
    pids = [dns.pid, pebble.pid]
    yield AcmeLab(dns, pebble, hmac, tmp)
    pebble.stop()
    dns.stop()
    assert all(process_gone(pid) for pid in pids if pid is not None), "pebble or named outlived the tests"


@pytest.fixture(autouse=True)
def _programs() -> None:
    require_acme_lab()


def make_csr(names: tuple[str, ...] | list[str] = NAMES, key: rsa.RSAPrivateKey | None = None) -> tuple[str, rsa.RSAPrivateKey]:
    """A request as a server makes it: the key stays here, only the CSR PEM goes to the ACME client."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key
