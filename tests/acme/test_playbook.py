"""`issuer: {type: acme}` in a playbook: parsed, checked with one-line errors, its secrets resolved once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.errors import PlaybookError, UsageError
from orchestrator.playbook import AcmeIssuer, load_playbook
from orchestrator.secrets_store import ACME_EAB_HMAC, ACME_TSIG_SECRET, SecretStore

ROOT = Path(__file__).resolve().parents[2]

DNS01 = """\
issuer:
  type: acme
  directory: https://acme.example.net/directory
  contact: hostmaster@mitserv.net
  eab: {kid: kid-1, hmac: {env: EXMIG_EAB_HMAC}}
  challenge: dns-01
  dns:
    server: 127.0.0.1:5300
    zone: mitserv.net
    tsig_name: exmig-acme
    tsig_secret: {env: EXMIG_TSIG_SECRET}
"""

HTTP01 = """\
issuer:
  type: acme
  directory: https://acme.example.net/directory
  challenge: http-01
  client_names: {mail.mitserv.net: EX2010, autodiscover.mitserv.net: EX2010, legacy.mitserv.net: EX2007}
"""


def playbook_with(tmp_path: Path, issuer: str, name: str = "acme.yml") -> Path:
    """playbooks/mitserv.yml with its issuer block replaced."""
    text = (ROOT / "playbooks" / "mitserv.yml").read_text()
    text = re.sub(r"^issuer:\n(?:  .*\n)+", issuer, text, flags=re.MULTILINE)
    path = tmp_path / name
    path.write_text(text)
    return path


def test_dns01_issuer_is_parsed(tmp_path: Path) -> None:
    issuer = load_playbook(playbook_with(tmp_path, DNS01)).playbook.issuer
    assert isinstance(issuer, AcmeIssuer) and issuer.challenge == "dns-01"
    assert issuer.dns is not None and issuer.dns.tsig_algorithm == "hmac-sha256" and issuer.dns.zone == "mitserv.net"
    assert issuer.eab is not None and issuer.eab.hmac.env == "EXMIG_EAB_HMAC"


def test_http01_names_go_to_the_servers_they_point_at(tmp_path: Path) -> None:
    from orchestrator.acme_issue.setup import http01_targets

    loaded = load_playbook(playbook_with(tmp_path, HTTP01))
    assert http01_targets(loaded) == {"mail.mitserv.net": ["EX2010"], "autodiscover.mitserv.net": ["EX2010"],
                                      "legacy.mitserv.net": ["EX2007"]}
    # Without client_names: every server whose names include it (all of them, as the servers list none).
    loaded = load_playbook(playbook_with(tmp_path, HTTP01.replace(
        "  client_names: {mail.mitserv.net: EX2010, autodiscover.mitserv.net: EX2010, legacy.mitserv.net: EX2007}\n",
        "")))
    assert set(map(tuple, http01_targets(loaded).values())) == {("EX2010", "EX2007")}


@pytest.mark.parametrize(("change", "field", "says"), [
    (("hmac: {env: EXMIG_EAB_HMAC}", "hmac: c2VjcmV0"), "issuer.eab.hmac", "must not be written in the playbook"),
    (("tsig_secret: {env: EXMIG_TSIG_SECRET}", "tsig_secret: {generate: true}"), "issuer.dns.tsig_secret",
     "`env: VARIABLE` or `prompt: true`"),
    (("challenge: dns-01", "challenge: tls-alpn-01"), "issuer.challenge", "use 'dns-01' or 'http-01'"),
    (("https://acme.example.net/directory", "http://acme.example.net/directory"), "issuer.directory",
     "not an https URL"),
    (("zone: mitserv.net", "zone: example.com"), "issuer.dns.zone", "example.com does not hold mail.mitserv.net"),
    (("server: 127.0.0.1:5300", "server: 127.0.0.1:99999"), "issuer.dns.server", "out of range"),
    (("tsig_name: exmig-acme", "tsig_name: 'exmig acme'"), "issuer.dns.tsig_name", "not a TSIG key name"),
    (("contact: hostmaster@mitserv.net", "contact: hostmaster"), "issuer.contact", "not an e-mail address"),
])
def test_dns01_errors_are_one_line_naming_file_and_field(tmp_path: Path, change: tuple[str, str], field: str,
                                                         says: str) -> None:
    path = playbook_with(tmp_path, DNS01.replace(*change))
    with pytest.raises(PlaybookError) as exc:
        load_playbook(path)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{path}:") and f": {field}:" in text and says in text, text


@pytest.mark.parametrize(("issuer", "says"), [
    (DNS01.replace("  dns:\n    server: 127.0.0.1:5300\n    zone: mitserv.net\n    tsig_name: exmig-acme\n"
                   "    tsig_secret: {env: EXMIG_TSIG_SECRET}\n", ""), "challenge dns-01 needs `dns:"),
    (HTTP01.replace("EX2007}", "EX2013}"), "there is no server 'EX2013'"),
    (HTTP01.replace("mail.mitserv.net: EX2010,", "www.mitserv.net: EX2010,"), "www.mitserv.net is not in "
                                                                               "certificate.domains"),
    (HTTP01 + "  dns: {server: ns1, zone: mitserv.net, tsig_name: k, tsig_secret: {env: X}}\n",
     "`dns:` is for challenge dns-01"),
])
def test_issuer_rules(tmp_path: Path, issuer: str, says: str) -> None:
    with pytest.raises(PlaybookError, match=re.escape(says)) as exc:
        load_playbook(playbook_with(tmp_path, issuer))
    assert "\n" not in str(exc.value)


def test_a_wildcard_cannot_be_proven_over_http01(tmp_path: Path) -> None:
    path = playbook_with(tmp_path, HTTP01.replace("  client_names: {mail.mitserv.net: EX2010, autodiscover.mitserv.net:"
                                                  " EX2010, legacy.mitserv.net: EX2007}\n", ""))
    path.write_text(path.read_text().replace("    - legacy.mitserv.net ", "    - '*.mitserv.net' "))
    with pytest.raises(PlaybookError, match=r": certificate\.domains\[2\]: the wildcard \*\.mitserv\.net cannot be "
                                            r"proven over issuer\.challenge http-01 .*use challenge: dns-01$"):
        load_playbook(path)


def test_the_issuers_secrets_are_resolved_once_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_playbook(playbook_with(tmp_path, DNS01))
    monkeypatch.setenv("EXMIG_EX2010_PASSWORD", "pw10")
    monkeypatch.setenv("EXMIG_EX2007_PASSWORD", "pw07")
    monkeypatch.setenv("EXMIG_EAB_HMAC", "hmac-value")
    monkeypatch.setenv("EXMIG_TSIG_SECRET", "dHNpZy12YWx1ZQ==")
    store = SecretStore(loaded.playbook, interactive=False)
    assert store.issuer_secrets() == [ACME_EAB_HMAC, ACME_TSIG_SECRET]
    store.resolve(loaded.playbook.servers, pfx_password=True)
    monkeypatch.delenv("EXMIG_EAB_HMAC")  # resolved before the run started: later changes do not matter
    assert store.secret(ACME_EAB_HMAC) == "hmac-value" and store.secret(ACME_TSIG_SECRET) == "dHNpZy12YWx1ZQ=="
    assert {"hmac-value", "dHNpZy12YWx1ZQ=="} <= set(store.all_values())


def test_an_unset_issuer_secret_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_playbook(playbook_with(tmp_path, DNS01))
    monkeypatch.setenv("EXMIG_EX2010_PASSWORD", "pw10")
    monkeypatch.setenv("EXMIG_EX2007_PASSWORD", "pw07")
    monkeypatch.delenv("EXMIG_EAB_HMAC", raising=False)
    with pytest.raises(UsageError, match=r"^issuer\.eab\.hmac: environment variable EXMIG_EAB_HMAC is not set; "
                                         r"export it with the ACME EAB HMAC key for kid-1$"):
        SecretStore(loaded.playbook, interactive=False).resolve(loaded.playbook.servers, pfx_password=False)


def test_settings_for_the_client_come_from_the_playbook_and_the_store(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.acme_issue.setup import acme_settings, dns_responder, state_dir_for

    loaded = load_playbook(playbook_with(tmp_path, DNS01))
    monkeypatch.setenv("EXMIG_EAB_HMAC", "aG1hYw")
    monkeypatch.setenv("EXMIG_TSIG_SECRET", "dHNpZy12YWx1ZQ==")
    store = SecretStore(loaded.playbook, interactive=False)
    settings = acme_settings(loaded, store)
    assert (settings.directory, settings.eab_kid, settings.eab_hmac) == ("https://acme.example.net/directory", "kid-1",
                                                                         "aG1hYw")
    assert "aG1hYw" not in repr(settings)
    responder = dns_responder(loaded, store)
    assert (responder.address, responder.port, responder.zone) == ("127.0.0.1", 5300, "mitserv.net")
    assert "dHNpZy12YWx1ZQ==" not in repr(responder)
    assert state_dir_for(tmp_path / ".exmig" / "acme.journal.json") == tmp_path / ".exmig" / "acme.acme"
