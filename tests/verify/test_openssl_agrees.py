"""Acceptance: the TLS verdict agrees with `openssl s_client -connect ... -servername ... -showcerts` on the
same endpoints. openssl's side is built only from what openssl printed: the certificates, its NotAfter lines
and its own verification errors (with -CAfile <lab root> and -verify_hostname <SNI>)."""

from __future__ import annotations

import shutil

import pytest

from orchestrator.certs import thumbprint
from orchestrator.lab.tls_services import ServedCert
from orchestrator.verify import SERVICE_KINDS, Verdict, judge, probe
from orchestrator.verify.openssl import X509Error, openssl_verdict, parse_s_client, run_s_client

from .conftest import Certs, Issued, Lab

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")

TIMEOUT = 5.0

# case -> (what is served, expected certificate, SNI, the verdict both must reach)
CASES = {
    "right certificate": ("good", "good", "mail.example.test", Verdict.OK),
    "right certificate, legacy name": ("good", "good", "legacy.example.test", Verdict.OK),
    "no intermediate sent": ("good-bare", "good", "autodiscover.example.test", Verdict.MISSING_INTERMEDIATE),
    "another CA's intermediate sent": ("good-wrongchain", "good", "mail.example.test",
                                       Verdict.MISSING_INTERMEDIATE),
    "another certificate": ("self_signed", "good", "mail.example.test", Verdict.WRONG_CERTIFICATE),
    "self-signed": ("self_signed", "self_signed", "mail.example.test", Verdict.UNTRUSTED),
    "name missing": ("no_legacy", "no_legacy", "legacy.example.test", Verdict.NAME_MISMATCH),
    "expired": ("expired", "expired", "mail.example.test", Verdict.EXPIRED),
    "expires in 10 days": ("soon", "soon", "mail.example.test", Verdict.EXPIRES_SOON),
    "unknown root": ("foreign", "foreign", "mail.example.test", Verdict.UNTRUSTED),
    "no certificate bound": (None, "good", "mail.example.test", Verdict.UNREACHABLE),
}


def _served(certs: Certs, key: str | None) -> ServedCert | None:
    if key is None:
        return None
    if key.endswith("-bare"):
        issued: Issued = getattr(certs, key.removesuffix("-bare"))
        return issued.without_chain()
    if key.endswith("-wrongchain"):
        return getattr(certs, key.removesuffix("-wrongchain")).with_chain(
            certs.other_ca.intermediate_pem)
    return getattr(certs, key).served


@pytest.mark.parametrize("case", list(CASES))
def test_verdict_matches_openssl_on_every_service(lab: Lab, certs: Certs, case: str) -> None:
    served, expected_key, sni, verdict = CASES[case]
    lab.source.set(_served(certs, served))
    expected: str = getattr(certs, expected_key).thumbprint
    for service in SERVICE_KINDS:
        port = lab.port(service)
        presented = probe("127.0.0.1", port, service, sni, TIMEOUT, roots=certs.roots)
        ours = judge(presented, expected, (), sni, 30)
        theirs = run_s_client("127.0.0.1", port, sni, starttls="smtp" if service == "smtp" else None,
                              cafile=certs.root_file, verify_hostname=sni, timeout=TIMEOUT)
        assert ours.verdict is verdict, f"{service}: {ours.detail}"
        assert openssl_verdict(theirs, expected, 30) == ours.verdict.value, (
            f"{service}: openssl errors {theirs.verify_errors}, {theirs.error}")
        # And the same certificates, in the same order, were seen by both.
        seen = presented.assessment.sent_thumbprints if presented.assessment else ()
        assert tuple(thumbprint(c) for c in theirs.certificates) == seen
        if theirs.certificates:
            assert theirs.not_after[0] == presented.chain[0].not_valid_after_utc


def test_openssl_sees_the_sni_the_probe_sends(lab: Lab, certs: Certs) -> None:
    """Both tools send the SNI: the lab answers legacy. with another certificate and both see it."""
    lab.source.set(certs.good.served, legacy_example_test=certs.no_legacy.served)
    for service in SERVICE_KINDS:
        port = lab.port(service)
        starttls = "smtp" if service == "smtp" else None
        for name, issued in (("mail.example.test", certs.good), ("legacy.example.test", certs.no_legacy)):
            theirs = run_s_client("127.0.0.1", port, name, starttls=starttls, timeout=TIMEOUT)
            presented = probe("127.0.0.1", port, service, name, TIMEOUT, roots=certs.roots)
            assert thumbprint(theirs.certificates[0]) == issued.thumbprint == (
                presented.assessment.leaf_thumbprint if presented.assessment else None)


def test_openssl_reports_a_closed_port(certs: Certs) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    theirs = run_s_client("127.0.0.1", port, "mail.example.test", timeout=TIMEOUT)
    assert not theirs.connected and not theirs.certificates and theirs.error
    assert openssl_verdict(theirs, certs.good.thumbprint) == "unreachable"
    presented = probe("127.0.0.1", port, "https", "mail.example.test", TIMEOUT)
    assert judge(presented, certs.good.thumbprint).verdict is Verdict.UNREACHABLE


def test_parser_collects_every_verify_error_not_only_the_last() -> None:
    stderr = (
        "depth=0 CN = mail.example.test\nverify error:num=20:unable to get local issuer certificate\n"
        "verify return:1\ndepth=0 CN = mail.example.test\nverify error:num=21:unable to verify the first "
        "certificate\nverify return:1\ndepth=0 CN = mail.example.test\nverify error:num=10:certificate has "
        "expired\nnotAfter=Nov 23 12:15:08 2026 GMT\nverify return:1\n"
    )
    stdout = ("CONNECTED(00000003)\n---\nno peer certificate available\n---\n"
              "Verify return code: 10 (expired)\n")
    parsed = parse_s_client(stdout, stderr)
    assert parsed.connected and parsed.verify_code == 10
    assert parsed.verify_errors == ((0, 20), (0, 21), (0, X509Error.CERT_HAS_EXPIRED))
    assert parsed.error == "no peer certificate available"
