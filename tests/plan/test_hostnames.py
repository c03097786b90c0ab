"""One wildcard rule (RFC 6125 §6.4.3) for the issue step's check and for verify's SNI check."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.certs import IssuedCertificate
from orchestrator.issuance import IssuedCertificateRejected, check_issued
from orchestrator.playbook import CertificateSpec, Subject
from orchestrator.verify.tls_probe import names_cover

# (certificate name, host, covered)
CASES = [
    ("mail.example.com", "mail.example.com", True),
    ("MAIL.example.com.", "mail.example.com", True),
    ("*.example.com", "mail.example.com", True),
    ("*.example.com", "example.com", False),            # a wildcard stands for one label, not none
    ("*.example.com", "a.mail.example.com", False),     # nor for two
    ("*.com", "example.com", False),                    # no wildcard right below a top-level domain
    ("*", "example.com", False),
    ("m*.example.com", "mail.example.com", False),      # partial-label wildcards: browsers refuse them
    ("*.*.example.com", "a.b.example.com", False),
    ("mail.*.com", "mail.example.com", False),
]


def _leaf(names: list[str]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))


def _issue_accepts(san: str, host: str) -> bool:
    spec = CertificateSpec(subject=Subject(CN=host), domains=[host])
    try:
        check_issued(IssuedCertificate(leaf=_leaf([san]), intermediates=()), None, spec, "test")
    except IssuedCertificateRejected:
        return False
    return True


@pytest.mark.parametrize(("san", "host", "covered"), CASES)
def test_issue_and_verify_apply_the_same_wildcard_rule(san: str, host: str, covered: bool) -> None:
    assert names_cover([san], [], host) is covered
    assert _issue_accepts(san, host) is covered
