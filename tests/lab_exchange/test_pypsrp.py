"""End to end: the seed procedure with the real pypsrp/pywinrm clients against lab servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import winrm
from cryptography.hazmat.primitives.serialization import Encoding
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import TaggedValue
from pypsrp.wsman import WSMan

from orchestrator.lab.ca import LabCA, thumbprint
from orchestrator.lab.exchange import EMS_2007_SNAPIN, ServerInspector
from orchestrator.lab.server import LabServer

from .conftest import ServerFactory

USER, PASSWORD = "admin", "Lab-Passw0rd!"
PFX_PASSWORD = "Pfx-Passw0rd!"


@pytest.fixture
def servers(make_server: ServerFactory) -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {}
    for version in ("2010", "2007"):
        model, registry = make_server(version)
        configs = ["Microsoft.Exchange", "Microsoft.PowerShell"] if version == "2010" else ["Microsoft.PowerShell"]
        srv = LabServer(model.name, registry, {USER: PASSWORD}, configurations=configs, allow_unencrypted=True)
        srv.start()
        started[version] = (model, srv)
    yield started
    for _, srv in started.values():
        errors = srv.errors
        srv.stop()
        assert not errors, errors


def pool(srv: LabServer, configuration: str) -> RunspacePool:
    path = "PowerShell" if configuration == "Microsoft.Exchange" else "wsman"
    wsman = WSMan("127.0.0.1", port=srv.port, path=path, auth="basic", username=USER, password=PASSWORD,
                  ssl=False, encryption="never", operation_timeout=5, read_timeout=10)
    return RunspacePool(wsman, configuration_name=configuration)


def invoke(rp: RunspacePool, *commands: tuple[str, dict[str, Any]]) -> list[Any]:
    ps = PowerShell(rp)
    for name, params in commands:
        ps.add_cmdlet(name)
        for key, value in params.items():
            ps.add_parameter(key, value)
    out = ps.invoke()
    assert not ps.had_errors, [str(e) for e in ps.streams.error]
    return out


def test_seed_procedure_over_pypsrp_and_pywinrm(servers: dict[str, Any], lab_ca: LabCA) -> None:
    model10, srv10 = servers["2010"]
    model07, srv07 = servers["2007"]
    with pool(srv10, "Microsoft.Exchange") as ems, pool(srv10, "Microsoft.PowerShell") as ps10:
        [request] = invoke(ems, ("New-ExchangeCertificate", {
            "GenerateRequest": True, "SubjectName": "c=US, s=My State, l=MyCity, o=My Organization, CN=mail.mitserv.net",
            "DomainName": ["mail.mitserv.net", "autodiscover.mitserv.net", "legacy.mitserv.net"],
            "KeySize": 2048, "PrivateKeyExportable": True}))
        assert request.startswith("-----BEGIN NEW CERTIFICATE REQUEST-----")
        leaf = lab_ca.sign_csr(request.encode())
        tp = thumbprint(leaf)
        invoke(ps10, ("New-Item", {"Path": "C:\\Certs", "ItemType": "Directory"}))
        invoke(ps10, ("Set-Content", {"Path": "C:\\Certs\\intermediate.cer", "Value": lab_ca.intermediate_pem,
                                      "Encoding": "Byte"}))
        # certutil runs in the cmd shell (WinRS), as exmig would run it.
        cmd = winrm.Session(srv10.url("wsman"), auth=(USER, PASSWORD), transport="basic",
                            operation_timeout_sec=5, read_timeout_sec=10)
        r = cmd.run_cmd("certutil", ["-addstore", "CA", "C:\\Certs\\intermediate.cer"])
        assert r.status_code == 0, r.std_out
        assert b"CertUtil: -addstore command completed successfully." in r.std_out

        [cert] = invoke(ems, ("Import-ExchangeCertificate", {"FileData": leaf.public_bytes(Encoding.DER)}))
        props = cert.adapted_properties
        assert props["Thumbprint"] == tp and props["HasPrivateKey"] is True
        assert str(props["Status"]) == "Valid"
        assert invoke(ems, ("Get-ExchangeCertificate", {"Thumbprint": tp}),
                      ("Enable-ExchangeCertificate", {"Services": "IIS,SMTP,POP,IMAP", "Force": None})) == []
        [got] = invoke(ems, ("Get-ExchangeCertificate", {"Thumbprint": tp}))
        assert str(got.adapted_properties["Services"]) == "IMAP, POP, IIS, SMTP"
        ems.exchange_keys()
        [exported] = invoke(ems, ("Get-ExchangeCertificate", {"Thumbprint": tp}), ("Export-ExchangeCertificate", {
            "BinaryEncoded": True, "Password": TaggedValue("SS", PFX_PASSWORD)}))
        pfx = exported.adapted_properties["FileData"]
        assert isinstance(pfx, bytes)

    with pool(srv07, "Microsoft.PowerShell") as ps07:
        invoke(ps07, ("New-Item", {"Path": "C:\\scripts", "ItemType": "Directory"}))
        invoke(ps07, ("Set-Content", {"Path": "C:\\scripts\\mitserv.pfx", "Value": pfx, "Encoding": "Byte"}))
        invoke(ps07, ("Add-PSSnapin", {"Name": EMS_2007_SNAPIN}))
        ps07.exchange_keys()
        [imported] = invoke(ps07, ("Import-ExchangeCertificate", {
            "Path": "c:\\scripts\\mitserv.pfx", "Password": TaggedValue("SS", PFX_PASSWORD)}))
        assert imported.adapted_properties["Thumbprint"] == tp
        invoke(ps07, ("Get-ExchangeCertificate", {"Thumbprint": tp}),
               ("Enable-ExchangeCertificate", {"Services": "IIS,SMTP,POP,IMAP", "Force": None}))
        # Without -Force the client (no host) sees PowerShell's prompt failure.
        [old] = [t for t in ServerInspector(model07).thumbprints("My") if t != tp]
        ps = PowerShell(ps07)
        ps.add_cmdlet("Enable-ExchangeCertificate").add_parameter("Thumbprint", old).add_parameter("Services", "SMTP")
        ps.invoke()
        assert ps.had_errors
        assert "Overwrite the existing default SMTP certificate?" in str(ps.streams.error[0])

    for model in (model10, model07):
        view = ServerInspector(model).certificate(tp)
        assert view is not None
        assert (view.has_private_key, view.status, view.services) == (True, "Valid", "IMAP, POP, IIS, SMTP")
