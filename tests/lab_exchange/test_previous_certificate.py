"""Issue 18's lab: servers that start with the certificate that served before, and Enable's binding fault,
seen as an admin's own pypsrp script and a mail client see them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from orchestrator.errors import UsageError
from orchestrator.lab.exchange import EMS_2007_SNAPIN
from orchestrator.lab.options import LabBehaviour
from orchestrator.lab.site import EmulatedServer, LabSite
from orchestrator.playbook import load_playbook
from orchestrator.verify.tls_probe import SERVICE_KINDS, probe

LAB_PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "lab.yml"


def _site(tmp_path: Path, **behaviour: Any) -> LabSite:
    loaded = load_playbook(LAB_PLAYBOOK)
    site = LabSite(loaded, tmp_path / "lab", use_playbook_ports=False)
    site.settings = LabBehaviour(**behaviour).apply(site.settings)
    return site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LabSite]:
    with _site(tmp_path, previous_certificate=True, enable_keeps_iis_binding=("ex2007",)) as running:
        yield running


def _pool(server: EmulatedServer) -> RunspacePool:
    exchange = server.server.version == 2010
    wsman = WSMan("127.0.0.1", port=server.winrm.port, path="PowerShell" if exchange else "wsman", ssl=False,
                  auth="ntlm", username=server.username, password=server.password, operation_timeout=5,
                  read_timeout=10)
    return RunspacePool(wsman, configuration_name="Microsoft.Exchange" if exchange else "Microsoft.PowerShell")


def _run(rp: RunspacePool, server: EmulatedServer, name: str, **params: Any) -> list[Any]:
    if server.server.version == 2007:
        snapin = PowerShell(rp)
        snapin.add_cmdlet("Add-PSSnapin").add_parameter("Name", EMS_2007_SNAPIN)
        snapin.invoke()
    ps = PowerShell(rp)
    ps.add_cmdlet(name)
    for key, value in params.items():
        ps.add_parameter(key, value)
    out = ps.invoke()
    assert not ps.had_errors, [str(e) for e in ps.streams.error]
    return out


def _presented(server: EmulatedServer) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for service in SERVICE_KINDS:
        seen = probe("127.0.0.1", server.tls.ports[service], service, "mail.mitserv.net", timeout=10)
        out[service] = seen.assessment.leaf_thumbprint if seen.assessment else None
    return out


def test_each_server_starts_with_the_previous_certificate_serving_all_four_services(site: LabSite) -> None:
    names = load_playbook(LAB_PLAYBOOK).playbook.certificate.domains
    for server in site.servers.values():
        with _pool(server) as rp:
            certs = {str(c.adapted_properties["Thumbprint"]): c.adapted_properties
                     for c in _run(rp, server, "Get-ExchangeCertificate")}
        previous = [p for p in certs.values() if not p["IsSelfSigned"]]
        own = [p for p in certs.values() if p["IsSelfSigned"]]
        assert len(previous) == 1 and len(own) == 1, server.server.name  # Exchange's own one is still there
        [old] = previous
        assert str(old["Services"]) == "IMAP, POP, IIS, SMTP"
        assert old["PrivateKeyExportable"] is True and old["HasPrivateKey"] is True
        assert str(old["RootCAType"]) == "ThirdParty" and str(old["Status"]) == "Valid"
        leaf = x509.load_der_x509_certificate(old["RawData"])
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName) == names
        left = leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=19) < left <= dt.timedelta(days=20)
        # A mail client, a browser: every TLS service presents it, with the intermediate it chains through.
        assert _presented(server) == dict.fromkeys(SERVICE_KINDS, old["Thumbprint"])
        seen = probe("127.0.0.1", server.tls.ports["https"], "https", "mail.mitserv.net", timeout=10,
                     roots=[x509.load_pem_x509_certificate(site.ca.root_pem)])
        assert seen.assessment is not None and seen.assessment.trusted, seen.assessment


def test_a_restarted_lab_does_not_bring_a_removed_previous_certificate_back(tmp_path: Path) -> None:
    with _site(tmp_path, previous_certificate=True) as first:
        server = first.servers["EX2010"]
        [old] = [t for t, s in server.inspector.services().items() if server.inspector.certificate(t).root_ca_type
                 == "ThirdParty"]
        with server.model.transaction():
            server.model.remove("My", old)
    with _site(tmp_path, previous_certificate=True) as second:
        assert second.servers["EX2010"].inspector.certificate(old) is None
        assert second.notes()[:2] == [
            f"note: {name}: its saved state in {tmp_path / 'lab' / name} is kept, so --previous-certificate does not "
            "apply to it; remove that folder for a server that starts with one" for name in ("EX2010", "EX2007")]


def _new_certificate(rp: RunspacePool, server: EmulatedServer) -> str:
    """A second certificate with a key on the server (self-signed, enabled for nothing)."""
    params: dict[str, Any] = {"DomainName": ["mail.mitserv.net"], "PrivateKeyExportable": True, "Services": "None"}
    [cert] = _run(rp, server, "New-ExchangeCertificate", **params)
    return str(cert.adapted_properties["Thumbprint"])


def test_the_binding_fault_answers_success_and_leaves_iis_on_the_previous_certificate(site: LabSite) -> None:
    faulty, healthy = site.servers["EX2007"], site.servers["EX2010"]
    before = _presented(faulty)
    with _pool(faulty) as rp:
        new = _new_certificate(rp, faulty)
        assert _run(rp, faulty, "Enable-ExchangeCertificate", Thumbprint=new, Services="IIS,POP,IMAP,SMTP",
                    Force=True) == []
        services = {str(c.adapted_properties["Thumbprint"]): str(c.adapted_properties["Services"])
                    for c in _run(rp, faulty, "Get-ExchangeCertificate")}
    assert "IIS" in services[before["https"] or ""] and "IIS" not in services[new]
    after = _presented(faulty)
    assert after["https"] == before["https"]  # the site binding did not change
    assert {after[s] for s in ("smtp", "imaps", "pop3s")} == {new}  # the rest did
    # The server without the fault moves IIS.
    with _pool(healthy) as rp:
        new10 = _new_certificate(rp, healthy)
        _run(rp, healthy, "Enable-ExchangeCertificate", Thumbprint=new10, Services="IIS", Force=True,
             Server="EX2010")
    assert _presented(healthy)["https"] == new10


def test_remove_takes_a_certificate_iis_still_uses_as_real_exchange_does(site: LabSite) -> None:
    server = site.servers["EX2010"]
    with _pool(server) as rp:
        new = _new_certificate(rp, server)
        # The new certificate becomes the default SMTP certificate; IIS stays on the previous one.
        _run(rp, server, "Enable-ExchangeCertificate", Thumbprint=new, Services="SMTP", Force=True, Server="EX2010")
        old = _presented(server)["https"]
        assert old is not None and old != new
        _run(rp, server, "Remove-ExchangeCertificate", Thumbprint=old, Confirm=False, Server="EX2010")
    assert server.inspector.certificate(old) is None
    assert _presented(server)["https"] is None  # HTTPS now presents nothing: every client breaks


def test_the_fault_must_name_a_server_of_the_playbook() -> None:
    with pytest.raises(UsageError, match=r"--enable-keeps-iis-binding EX2013: the playbook has no server EX2013"):
        LabBehaviour(enable_keeps_iis_binding=("EX2013",)).check(["EX2010", "EX2007"])


def test_without_the_switch_the_servers_hold_only_their_own_certificate(tmp_path: Path) -> None:
    with _site(tmp_path) as plain:
        for server in plain.servers.values():
            assert len(server.inspector.thumbprints("My")) == 1
    assert replace(LabBehaviour(), previous_certificate=True).apply(plain.settings).previous_certificate
