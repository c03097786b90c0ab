"""Every verdict, from a real handshake with the lab's TLS services: what they present decides the verdict."""

from __future__ import annotations

import socket
import time

import pytest
from cryptography import x509

from orchestrator.lab.tls_services import ServedCert
from orchestrator.verify import Verdict, judge, probe
from orchestrator.verify.tls_probe import ChainReader, ServiceKind

from .conftest import NAMES, Certs, Lab

TIMEOUT = 5.0


def check(
    lab: Lab,
    certs: Certs,
    expected: str,
    service: ServiceKind = "https",
    sni: str = "mail.example.test",
    intermediates: frozenset[str] = frozenset(),
    warn_days: int = 30,
    roots: list[x509.Certificate] | None = None,
) -> tuple[Verdict, str]:
    presented = probe("127.0.0.1", lab.port(service), service, sni, TIMEOUT,
                      roots=certs.roots if roots is None else roots)
    finding = judge(presented, expected, intermediates, sni, warn_days, server="EX2010")
    assert finding.server == "EX2010" and finding.service == service and finding.name == sni
    return finding.verdict, finding.detail


def serve(lab: Lab, served: ServedCert | None) -> None:
    lab.source.set(served)


def test_the_right_certificate_with_its_intermediate_is_ok(fresh_lab: Lab, certs: Certs) -> None:
    presented = probe("127.0.0.1", fresh_lab.port("https"), "https", "mail.example.test", TIMEOUT,
                      roots=certs.roots)
    assert presented.reachable and presented.chain_source == "ssl"
    a = presented.assessment
    assert a is not None
    assert a.leaf_thumbprint == certs.good.thumbprint
    assert a.sent_thumbprints == (certs.good.thumbprint, certs.intermediate)
    assert a.issuer_sent == certs.intermediate
    assert a.dns_names == tuple(NAMES) and a.covers_sni and a.trusted and a.trust_store == "given"
    assert 363 <= a.days_left <= 365
    finding = judge(presented, certs.good.thumbprint, {certs.intermediate}, warn_days=30, server="EX2010")
    assert finding.verdict is Verdict.OK
    assert finding.thumbprint_seen == certs.good.thumbprint and finding.days_left == a.days_left
    assert "TLSv1.3" in finding.detail


def test_thumbprint_compared_as_windows_writes_it(fresh_lab: Lab, certs: Certs) -> None:
    spaced = " ".join(certs.good.thumbprint[i:i + 2] for i in range(0, 40, 2)).lower()
    assert check(fresh_lab, certs, spaced)[0] is Verdict.OK


def test_another_certificate_is_wrong_certificate(fresh_lab: Lab, certs: Certs) -> None:
    serve(fresh_lab, certs.self_signed.served)
    verdict, detail = check(fresh_lab, certs, certs.good.thumbprint)
    assert verdict is Verdict.WRONG_CERTIFICATE
    assert certs.self_signed.thumbprint in detail and certs.good.thumbprint in detail


def test_self_signed_even_when_expected_is_untrusted(fresh_lab: Lab, certs: Certs) -> None:
    serve(fresh_lab, certs.self_signed.served)
    verdict, detail = check(fresh_lab, certs, certs.self_signed.thumbprint)
    assert verdict is Verdict.UNTRUSTED and "self-signed" in detail


def test_without_the_intermediate_is_missing_intermediate(fresh_lab: Lab, certs: Certs) -> None:
    serve(fresh_lab, certs.good.without_chain())
    verdict, detail = check(fresh_lab, certs, certs.good.thumbprint)
    assert verdict is Verdict.MISSING_INTERMEDIATE and "does not send the intermediate" in detail


def test_an_intermediate_that_did_not_issue_it_is_missing(fresh_lab: Lab, certs: Certs) -> None:
    serve(fresh_lab, certs.good.with_chain(certs.other_ca.intermediate_pem))
    verdict, detail = check(fresh_lab, certs, certs.good.thumbprint)
    assert verdict is Verdict.MISSING_INTERMEDIATE and "does not send the intermediate" in detail


def test_every_expected_intermediate_must_be_sent(fresh_lab: Lab, certs: Certs) -> None:
    only_ours = frozenset({certs.intermediate})
    assert check(fresh_lab, certs, certs.good.thumbprint, intermediates=only_ours)[0] is Verdict.OK
    two_levels = frozenset({certs.intermediate, "AB" * 20})
    verdict, detail = check(fresh_lab, certs, certs.good.thumbprint, intermediates=two_levels)
    assert verdict is Verdict.MISSING_INTERMEDIATE and detail.endswith("AB" * 20)


def test_a_name_the_certificate_lacks_is_name_mismatch(fresh_lab: Lab, certs: Certs) -> None:
    serve(fresh_lab, certs.no_legacy.served)
    assert check(fresh_lab, certs, certs.no_legacy.thumbprint, sni="mail.example.test")[0] is Verdict.OK
    verdict, detail = check(fresh_lab, certs, certs.no_legacy.thumbprint, sni="legacy.example.test")
    assert verdict is Verdict.NAME_MISMATCH
    assert detail == ("legacy.example.test is not among the certificate's names "
                      "(mail.example.test, autodiscover.example.test)")


def test_expired(fresh_lab: Lab, certs: Certs) -> None:
    serve(fresh_lab, certs.expired.served)
    verdict, detail = check(fresh_lab, certs, certs.expired.thumbprint)
    assert verdict is Verdict.EXPIRED and "10 days ago" in detail


def test_expiring_in_ten_days_is_a_warning_below_the_threshold(fresh_lab: Lab, certs: Certs) -> None:
    serve(fresh_lab, certs.soon.served)
    verdict, detail = check(fresh_lab, certs, certs.soon.thumbprint)
    assert verdict is Verdict.EXPIRES_SOON and verdict.severity == "warning" and "in 9 days" in detail
    assert check(fresh_lab, certs, certs.soon.thumbprint, warn_days=5)[0] is Verdict.OK


def test_a_chain_to_an_unknown_root_is_untrusted(fresh_lab: Lab, certs: Certs) -> None:
    serve(fresh_lab, certs.foreign.served)
    verdict, detail = check(fresh_lab, certs, certs.foreign.thumbprint)
    assert verdict is Verdict.UNTRUSTED and "the given roots" in detail


def test_without_roots_the_system_store_decides(fresh_lab: Lab, certs: Certs) -> None:
    presented = probe("127.0.0.1", fresh_lab.port("https"), "https", "mail.example.test", TIMEOUT)
    assert presented.assessment is not None and presented.assessment.trust_store in ("system", "none")
    finding = judge(presented, certs.good.thumbprint)
    assert finding.verdict is Verdict.UNTRUSTED  # the lab root is in no system store


def test_no_certificate_bound_is_unreachable(fresh_lab: Lab, certs: Certs) -> None:
    serve(fresh_lab, None)
    presented = probe("127.0.0.1", fresh_lab.port("imaps"), "imaps", "mail.example.test", TIMEOUT)
    assert not presented.reachable and presented.stage == "handshake"
    finding = judge(presented, certs.good.thumbprint)
    assert finding.verdict is Verdict.UNREACHABLE and finding.thumbprint_seen is None
    assert "handshake failed" in finding.detail


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_closed_port_is_unreachable(certs: Certs) -> None:
    port = _free_port()
    presented = probe("127.0.0.1", port, "pop3s", "mail.example.test", TIMEOUT)
    assert presented.stage == "connect" and presented.error
    finding = judge(presented, certs.good.thumbprint, server="EX2007")
    assert finding.verdict is Verdict.UNREACHABLE
    assert finding.detail.startswith(f"127.0.0.1:{port}: connect failed: ")


def test_a_stopped_service_is_unreachable_and_comes_back(fresh_lab: Lab, certs: Certs) -> None:
    port = fresh_lab.port("smtp")
    fresh_lab.services.stop_service("smtp")
    try:
        presented = probe("127.0.0.1", port, "smtp", "mail.example.test", TIMEOUT)
        assert presented.stage == "connect"
        assert judge(presented, certs.good.thumbprint).verdict is Verdict.UNREACHABLE
        assert check(fresh_lab, certs, certs.good.thumbprint, service="https")[0] is Verdict.OK
    finally:
        fresh_lab.services.start_service("smtp")
    assert check(fresh_lab, certs, certs.good.thumbprint, service="smtp")[0] is Verdict.OK


def test_a_silent_server_is_unreachable_within_the_timeout(certs: Certs) -> None:
    """A port that accepts but never speaks (a firewall's tarpit, a hung service) costs one timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        for service in ("smtp", "https"):
            started = time.monotonic()
            presented = probe("127.0.0.1", port, service, "mail.example.test", 0.5)
            assert time.monotonic() - started < 2.0
            assert presented.stage == ("greeting" if service == "smtp" else "handshake")
            assert judge(presented, certs.good.thumbprint).verdict is Verdict.UNREACHABLE


def test_the_worst_problem_wins(fresh_lab: Lab, certs: Certs) -> None:
    """Expired and sent without intermediate: expired is reported (fixing the chain would not help)."""
    serve(fresh_lab, ServedCert(certs.expired.served.leaf, certs.expired.served.key_pem, ()))
    assert check(fresh_lab, certs, certs.expired.thumbprint, sni="legacy.example.test")[0] is Verdict.EXPIRED
    serve(fresh_lab, certs.no_legacy.without_chain())
    assert check(fresh_lab, certs, certs.no_legacy.thumbprint, sni="legacy.example.test")[0] \
        is Verdict.NAME_MISMATCH


@pytest.mark.parametrize("reader", ["ssl", "openssl"])
def test_both_chain_readers_see_the_same_chain(fresh_lab: Lab, certs: Certs, reader: ChainReader) -> None:
    for service in ("https", "smtp"):
        presented = probe("127.0.0.1", fresh_lab.port(service), service, "legacy.example.test", TIMEOUT,
                          roots=certs.roots, chain_reader=reader)
        assert presented.chain_source == reader
        assert presented.assessment is not None
        assert presented.assessment.sent_thumbprints == (certs.good.thumbprint, certs.intermediate)
        assert judge(presented, certs.good.thumbprint, {certs.intermediate}).verdict is Verdict.OK
