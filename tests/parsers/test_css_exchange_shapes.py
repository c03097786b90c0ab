"""exmig's parsers on CLIXML in the structure of real servers' Get-ExchangeCertificate output
(tests/fixtures/css_exchange.py names the CSS-Exchange capture each one follows)."""

from __future__ import annotations

import pytest

from orchestrator import checks
from orchestrator.transport.winrs import parse_streams
from tests.fixtures import css_exchange


def _parse(text: str) -> list[checks.CertInfo]:
    # As powershell.exe -OutputFormat xml streams it; PSRP output goes through the same deserializer and to_python.
    output, errors, warnings = parse_streams("#< CLIXML\r\n" + text, "")
    assert errors == [] and warnings == []
    return checks.certificates(output)


def test_rawdata_only_objects_give_their_facts_from_rawdata() -> None:
    text, made = css_exchange.rawdata_only()
    infos = _parse(text)
    assert [i.thumbprint for i in infos] == [m.thumbprint for m in made]
    for info in infos:
        # Nothing but RawData: what the server did not say stays unknown, never guessed.
        assert (info.status, info.services, info.has_private_key) == (None, None, None)
        assert info.public_key_der
    assert infos[0].domains == () and infos[0].subject == "CN=Microsoft Exchange Server Auth Certificate"
    assert infos[2].domains == ("mail.contoso.lab", "autodiscover.contoso.lab", "e2k16-1.contoso.lab")
    assert checks.find(infos, made[2].thumbprint.lower()) is infos[2]
    assert checks.services_enabled(infos, made[2].thumbprint, [], journal_says_done=False).done is False


@pytest.mark.filterwarnings("error")  # reading C=Germany must not print a Python warning at the admin
def test_broken_objects_and_odd_subjects() -> None:
    text, made = css_exchange.broken()
    infos = _parse(text)
    assert [i.thumbprint for i in infos] == [m.thumbprint for m in made]
    azure, german = infos
    assert azure.subject == "DC=Windows Azure CRP Certificate Generator" and azure.domains == ()
    # C=Germany is not a two-letter country code; exmig reads the certificate anyway.
    assert german.subject == "CN=domain.com,OU=IT,O=Contoso,L=Cologne,ST=NRW,C=Germany"
    assert german.domains == ("domain.com", "sub.domain.com")
    assert checks.installed_with_key(infos, made[1].thumbprint).done  # key not reported: present is enough


def test_multiple_matches_are_told_apart_by_thumbprint() -> None:
    text, made = css_exchange.multiple_matches()
    infos = _parse(text)
    localhost = [i for i in infos if i.subject == "CN=localhost"]
    assert len(localhost) == 2 and localhost[0].thumbprint != localhost[1].thumbprint
    assert checks.find(infos, made[2].thumbprint) is infos[2]
    assert checks.find(infos, made[0].thumbprint) is infos[0]
    # Not pending requests (no Status says so): never adopted as this playbook's request.
    found = checks.matching_requests(infos, "localhost", ["localhost"])
    assert found.mine == () and found.ambiguous == ()
