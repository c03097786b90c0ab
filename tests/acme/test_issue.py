"""The ACME client against real pebble: dns-01 through bind9, the account key, a resumed order, the refusals."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orchestrator.acme_issue import Rfc2136Responder, issue
from orchestrator.acme_issue.client import ACCOUNT_FILE, ACCOUNT_KEY, ORDER_FILE, _Session, translate
from orchestrator.acme_issue.errors import (
    AcmeAccountRefused,
    AcmeCsrRefused,
    AcmeNameRefused,
    DnsUpdateRefused,
)
from orchestrator.roots import signed
from tests.acme.conftest import BLOCKED, NAMES, AcmeLab, make_csr

REPO = Path(__file__).resolve().parents[2]


def _spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _challenge_records(lab: AcmeLab) -> dict[str, list[str]]:
    return {n: lab.dns.txt(f"_acme-challenge.{n}") for n in NAMES}


def _orders_of_account(lab: AcmeLab, state: Path) -> list[str]:
    """The account's orders as pebble lists them (RFC 8555 §7.1.2.1), all pages."""
    session = _Session(lab.settings(), state)
    account = session.account()
    url = session.post_as_get(account).json()["orders"]
    found: list[str] = []
    for _ in range(20):
        response = session.post_as_get(url)
        found += response.json()["orders"]
        following = [link for link in response.headers.get("Link", "").split(",") if 'rel="next"' in link]
        if not following:
            break
        url = following[0].split(";")[0].strip().strip("<>")
    return found


def test_dns01_finalizes_the_servers_csr_and_removes_the_records(acme_lab: AcmeLab, tmp_path: Path) -> None:
    csr_pem, key = make_csr()
    result = issue(csr_pem, acme_lab.settings(), tmp_path / "state", acme_lab.dns_responder())
    leaf = result.issued.leaf
    # The certificate is for the server's own key (which never left it) and every name.
    assert _spki(leaf.public_key()) == _spki(key.public_key())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(NAMES)
    # The chain the CA sent builds up to pebble's root, which is what the servers must trust.
    root = x509.load_pem_x509_certificate(acme_lab.pebble.root_pem())
    [intermediate] = result.issued.intermediates
    assert signed(leaf, intermediate) and signed(intermediate, root)
    assert x509.load_pem_x509_certificate(result.leaf_pem.encode()) == leaf
    assert [x509.load_pem_x509_certificate(p.encode()) for p in result.chain_pems] == [intermediate]
    # No record is left behind; the state says nothing is placed.
    assert _challenge_records(acme_lab) == {n: [] for n in NAMES}
    state = json.loads((tmp_path / "state" / ORDER_FILE).read_text())
    assert state["placed"] == [] and state["order"] == result.order_url and state["certificate"]


def test_account_key_is_created_private_and_reused(acme_lab: AcmeLab, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = issue(make_csr()[0], acme_lab.settings(), state, acme_lab.dns_responder())
    key_file = state / ACCOUNT_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    key_before, account_before = key_file.read_bytes(), json.loads((state / ACCOUNT_FILE).read_text())
    account_of_first = json.loads((state / ORDER_FILE).read_text())["account"]
    # A new request (a renewal): a new order under the same account, with the same key.
    second = issue(make_csr()[0], acme_lab.settings(), state, acme_lab.dns_responder())
    assert second.order_url != first.order_url and not second.resumed
    assert key_file.read_bytes() == key_before
    assert json.loads((state / ACCOUNT_FILE).read_text()) == account_before
    assert json.loads((state / ORDER_FILE).read_text())["account"] == account_of_first == account_before["uri"]
    assert sorted(_orders_of_account(acme_lab, state)) == sorted([first.order_url, second.order_url])


_CRASHING_RUN = """
import os, signal, sys
from pathlib import Path
from orchestrator.acme_issue import issue, AcmeSettings, Rfc2136Responder
directory, ca, kid, zone, server, tsig_name, state = sys.argv[1:8]
class KilledAfterPlacing(Rfc2136Responder):
    def ready(self):
        super().ready()
        os.kill(os.getpid(), signal.SIGKILL)  # as a kill -9 between placing and answering
settings = AcmeSettings(directory, None, kid, os.environ["TEST_EAB_HMAC"], Path(ca), timeout=30)
issue(sys.stdin.read(), settings, Path(state), KilledAfterPlacing(server, zone, tsig_name, os.environ["TEST_TSIG"]))
"""


def test_an_order_killed_midway_is_resumed_not_repeated(acme_lab: AcmeLab, tmp_path: Path) -> None:
    state = tmp_path / "state"
    csr_pem, key = make_csr()
    env = {**os.environ, "TEST_EAB_HMAC": acme_lab.hmac, "TEST_TSIG": acme_lab.dns.tsig_secret}
    s = acme_lab.settings()
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASHING_RUN, s.directory, str(s.ca_bundle), str(s.eab_kid), "mitserv.net",
         acme_lab.dns.server, acme_lab.dns.tsig_name, str(state)],
        input=csr_pem, text=True, env=env, cwd=REPO, capture_output=True, timeout=60)
    assert crashed.returncode == -9, crashed.stderr
    saved = json.loads((state / ORDER_FILE).read_text())
    # Killed with the order open and the records out: both are in the state file.
    assert saved["order"] and len(saved["placed"]) == len(NAMES)
    assert all(_challenge_records(acme_lab).values())
    result = issue(csr_pem, acme_lab.settings(), state, acme_lab.dns_responder())
    assert result.resumed and result.order_url == saved["order"]
    assert _spki(result.issued.leaf.public_key()) == _spki(key.public_key())
    assert _orders_of_account(acme_lab, state) == [saved["order"]]
    assert _challenge_records(acme_lab) == {n: [] for n in NAMES}
    # And once more after success (a crash after issuance): the same certificate, still one order.
    again = issue(csr_pem, acme_lab.settings(), state, acme_lab.dns_responder())
    assert again.issued.leaf == result.issued.leaf and _orders_of_account(acme_lab, state) == [saved["order"]]


# --- refusals: one line each, naming the reason and the fix ---------------------------------------------


def _one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def test_wrong_eab_hmac(acme_lab: AcmeLab, tmp_path: Path) -> None:
    from orchestrator.lab.acme_services import new_eab_hmac

    wrong = new_eab_hmac()
    with pytest.raises(AcmeAccountRefused) as exc:
        issue(make_csr()[0], acme_lab.settings(eab_hmac=wrong), tmp_path, acme_lab.dns_responder())
    text = _one_line(exc)
    assert "external account binding" in text and "issuer.eab" in text and wrong not in text
    assert not (tmp_path / ACCOUNT_FILE).exists() and not (tmp_path / ORDER_FILE).exists()


def test_missing_eab_where_the_ca_requires_it(acme_lab: AcmeLab, tmp_path: Path) -> None:
    with pytest.raises(AcmeAccountRefused) as exc:
        issue(make_csr()[0], acme_lab.settings(eab_kid=None, eab_hmac=None), tmp_path, acme_lab.dns_responder())
    assert "requires external account binding" in _one_line(exc) and "issuer.eab.kid" in str(exc.value)


def test_wrong_tsig_secret(acme_lab: AcmeLab, tmp_path: Path) -> None:
    import base64

    wrong = base64.b64encode(b"not the zone's key, 32 bytes ok!").decode()
    with pytest.raises(DnsUpdateRefused) as exc:
        issue(make_csr()[0], acme_lab.settings(), tmp_path, acme_lab.dns_responder(secret=wrong))
    text = _one_line(exc)
    assert "TSIG" in text and "issuer.dns.tsig_secret" in text and wrong not in text
    assert _challenge_records(acme_lab) == {n: [] for n in NAMES}


def test_a_name_the_ca_refuses(acme_lab: AcmeLab, tmp_path: Path) -> None:
    with pytest.raises(AcmeNameRefused) as exc:
        issue(make_csr(["mail.mitserv.net", BLOCKED])[0], acme_lab.settings(), tmp_path, acme_lab.dns_responder())
    text = _one_line(exc)
    assert BLOCKED in text and "certificate.domains" in text
    assert not (tmp_path / ORDER_FILE).exists()  # no order was opened


def test_a_csr_the_ca_refuses(acme_lab: AcmeLab, tmp_path: Path) -> None:
    """pebble refuses a request whose key is an account's own (badCSR): the refusal of the request itself."""
    from orchestrator.acme_issue.client import account_key

    own = account_key(tmp_path).key._wrapped  # the account key pebble will know (josepy wraps it)
    with pytest.raises(AcmeCsrRefused) as exc:
        issue(make_csr(key=own)[0], acme_lab.settings(), tmp_path, acme_lab.dns_responder())
    assert "refused the certificate request" in _one_line(exc) and "public key for a known account" in str(exc.value)
    assert _challenge_records(acme_lab) == {n: [] for n in NAMES}


def test_a_sha1_request_refused_names_exchange_and_the_fix() -> None:
    """Let's Encrypt refuses SHA-1-signed requests (letsencrypt/boulder#6374, badCSR "signature algorithm not
    supported"); pebble 2.4 still issues for them, so the CA's answer is given here as boulder words it."""
    from orchestrator.lab.exchange import pki

    csr_pem, key = make_csr()
    sha1 = pki.resign_request(x509.load_pem_x509_csr(csr_pem.encode()), key, "sha1")
    error = messages.Error.with_code("badCSR", detail="Error finalizing order :: signature algorithm not supported")
    text = str(translate(error, "finalization", sha1.public_bytes(serialization.Encoding.PEM)))
    assert "SHA-1" in text and "New-ExchangeCertificate" in text and "HashAlgorithm = SHA256" in text
    assert "SHA-1" not in str(translate(error, "finalization", csr_pem.encode()))


def test_pebble_issues_for_the_labs_sha1_request(acme_lab: AcmeLab, tmp_path: Path) -> None:
    """What the lab's CA does with an Exchange-style (SHA-1) request: pebble 2.4 issues; Let's Encrypt would not."""
    from orchestrator.acme_issue import signature_hash
    from orchestrator.lab.exchange import pki

    csr_pem, key = make_csr(["mail.mitserv.net"])
    sha1 = pki.resign_request(x509.load_pem_x509_csr(csr_pem.encode()), key, "sha1")
    sha1_pem = sha1.public_bytes(serialization.Encoding.PEM).decode()
    assert signature_hash(sha1_pem) == "sha1"
    result = issue(sha1_pem, acme_lab.settings(), tmp_path, acme_lab.dns_responder())
    assert _spki(result.issued.leaf.public_key()) == _spki(key.public_key())


def test_a_name_server_that_never_answers(acme_lab: AcmeLab, tmp_path: Path) -> None:
    """The zone names two servers; the second (127.0.0.2, where nothing listens) never shows the record."""
    from orchestrator.acme_issue.errors import DnsNotPropagated
    from orchestrator.lab.acme_services import LabDns

    primary = LabDns(tmp_path / "primary", name_servers={"ns1": "127.0.0.1", "ns2": "127.0.0.2"}).start()
    try:
        responder = Rfc2136Responder(primary.server, "mitserv.net", primary.tsig_name, primary.tsig_secret,
                                     propagation_timeout=1.0, propagation_interval=0.2)
        assert responder.authoritative_servers() == ["127.0.0.1", "127.0.0.2"]
        started = time.monotonic()
        with pytest.raises(DnsNotPropagated) as exc:
            issue(make_csr(["mail.mitserv.net"])[0], acme_lab.settings(), tmp_path / "state", responder)
        assert time.monotonic() - started < 10  # bounded by propagation_timeout, not by query timeouts
        text = _one_line(exc)
        assert "127.0.0.2" in text and "_acme-challenge.mail.mitserv.net" in text
        assert primary.txt("_acme-challenge.mail.mitserv.net") == []  # removed after the failure
    finally:
        primary.stop()


def test_an_unreachable_directory(tmp_path: Path) -> None:
    from orchestrator.acme_issue.client import AcmeSettings
    from orchestrator.acme_issue.errors import AcmeUnreachable
    from orchestrator.lab.children import free_port

    closed = f"https://127.0.0.1:{free_port('127.0.0.1', udp=False)}/dir"
    with pytest.raises(AcmeUnreachable) as exc:
        issue(make_csr()[0], AcmeSettings(closed), tmp_path, None)  # type: ignore[arg-type]
    assert _one_line(exc).startswith(f"issuer.directory: cannot read the ACME directory {closed} (")


def test_a_replaced_account_key_registers_a_new_account(acme_lab: AcmeLab, tmp_path: Path) -> None:
    first = _Session(acme_lab.settings(), tmp_path).account()
    assert _Session(acme_lab.settings(), tmp_path).account() == first
    (tmp_path / ACCOUNT_KEY).unlink()
    second = _Session(acme_lab.settings(), tmp_path).account()
    assert second != first and json.loads((tmp_path / ACCOUNT_FILE).read_text())["uri"] == second
