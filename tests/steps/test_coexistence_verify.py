"""verify's checks after coexistence: every https URL configured on a server is covered by the certificate that
server presents, and the DNS names the admin must point (mail./autodiscover. to 2010, legacy. to 2007)."""

from __future__ import annotations

import pytest

from orchestrator.coexistence import DnsRecord, dns_table, render_dns, urls_presented
from orchestrator.names_in_use import NameInUse

SEED = ["mail.mitserv.net", "autodiscover.mitserv.net", "legacy.mitserv.net"]


def row(setting: str, value: str, host: str, service: str = "IIS", tls: bool = True) -> NameInUse:
    return NameInUse("EX2007", setting, value, host, service, tls)


@pytest.mark.parametrize("rows,presented,problems", [
    ([row("OWA ExternalUrl", "https://legacy.mitserv.net/owa", "legacy.mitserv.net")], SEED, []),
    # The server still presents its self-signed certificate: the legacy URL gets a name mismatch.
    ([row("OWA ExternalUrl", "https://legacy.mitserv.net/owa", "legacy.mitserv.net")], ["EX2007", "ex2007.mitserv.net"],
     ["EX2007: OWA ExternalUrl https://legacy.mitserv.net/owa is not covered by the certificate the server presents "
      "(EX2007, ex2007.mitserv.net); clients of legacy.mitserv.net get a name mismatch"]),
    # http needs no certificate; SMTP/POP/IMAP names are verify's TLS checks, not URLs.
    ([row("OAB InternalUrl", "http://ex2007.mitserv.net/OAB", "ex2007.mitserv.net", tls=False),
      row("receive connector 'Default EX2007' Fqdn", "ex2007.mitserv.net", "ex2007.mitserv.net", "SMTP")], SEED, []),
    ([row("EWS ExternalUrl", "https://x.legacy.mitserv.net/EWS/Exchange.asmx", "x.legacy.mitserv.net")],
     ["*.mitserv.net"],
     ["EX2007: EWS ExternalUrl https://x.legacy.mitserv.net/EWS/Exchange.asmx is not covered by the certificate the "
      "server presents (*.mitserv.net); clients of x.legacy.mitserv.net get a name mismatch"]),
], ids=["covered", "self-signed", "not-urls", "wildcard-one-label"])
def test_urls_presented(rows: list[NameInUse], presented: list[str], problems: list[str]) -> None:
    assert urls_presented(rows, presented) == problems


def test_dns_table() -> None:
    records = dns_table(SEED, ("EX2010", "ex2010.mitserv.net"), "legacy.mitserv.net", [("EX2007", "ex2007.mitserv.net")])
    assert records == [
        DnsRecord("mail.mitserv.net", "EX2010 (ex2010.mitserv.net)", "Exchange 2010 answers the primary names"),
        DnsRecord("autodiscover.mitserv.net", "EX2010 (ex2010.mitserv.net)", "Exchange 2010 answers the primary names"),
        DnsRecord("legacy.mitserv.net", "EX2007 (ex2007.mitserv.net)",
                  "Exchange 2007 answers its own mailboxes' clients there"),
    ]
    text = render_dns(records)
    assert text.splitlines()[0] == "DNS (change by hand, last):"
    assert "  legacy.mitserv.net        -> EX2007 (ex2007.mitserv.net)" in text


def test_dns_table_several_2007_servers_and_no_coexistence() -> None:
    [*_, legacy] = dns_table(SEED, ("EX2010", "ex2010.mitserv.net"), "legacy.mitserv.net",
                             [("EX2007A", "a.mitserv.net"), ("EX2007B", "b.mitserv.net")])
    assert legacy.points_to == ("EX2007A (a.mitserv.net) or EX2007B (b.mitserv.net) (one of them, or a load balancer "
                                "in front of them)")
    # Without coexistence every name (wildcards aside) goes to 2010.
    records = dns_table(["mail.mitserv.net", "*.mitserv.net"], ("EX2010", "ex2010.mitserv.net"), None, [])
    assert [r.name for r in records] == ["mail.mitserv.net"]
    assert render_dns([]) == ""
