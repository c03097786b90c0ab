"""State directory: survives a reload, keys 0600, atomic and thread-safe updates; lab settings."""

from __future__ import annotations

import json
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from orchestrator.lab.ca import LabCA, thumbprint
from orchestrator.lab.exchange import ExchangeServerModel, LabSettings, ServerInspector, build_registry

from .conftest import ServerFactory
from .helpers import Shell
from .test_errors import issued_2010


def test_state_survives_reload(make_server: ServerFactory, lab_ca: LabCA, tmp_path: Path) -> None:
    model, reg, ems, tp, _ = issued_2010(make_server, lab_ca)
    ems.run(("Enable-ExchangeCertificate", [(None, tp), ("Services", "IIS,SMTP,POP,IMAP"), ("Force", None)]))
    pending = ems.one("New-ExchangeCertificate", ("GenerateRequest", None), ("SubjectName", "CN=next.mitserv.net"))
    ps = Shell(reg, "Microsoft.PowerShell")
    ps.one("New-Item", ("Path", "C:\\Certs"), ("ItemType", "Directory"))
    ps.one("Set-Content", ("Path", "C:\\Certs\\next.csr"), ("Value", pending))
    before = ServerInspector(model)
    stores, services = before.stores(), before.services()
    served = before.served_cert("smtp")

    again = ExchangeServerModel.load_or_create(model.state_dir, name="EX2010A", version="2010",
                                               fqdn="ex2010a.mitserv.net")
    after = ServerInspector(again)
    assert after.stores() == stores
    assert after.services() == services
    assert after.served_cert("smtp") == served
    assert after.file("C:\\Certs\\next.csr") == pending.encode("ascii") + b"\r\n"
    # The pending request kept its private key: a CA response still completes it after the restart.
    leaf = lab_ca.sign_csr(pending.encode())
    ems2 = Shell(build_registry(again, LabSettings(third_party_roots=(lab_ca.root_pem,))), "Microsoft.Exchange")
    done = ems2.one("Import-ExchangeCertificate", ("FileData", leaf.public_bytes(Encoding.DER)))
    assert done.get("HasPrivateKey") is True and done.get("Thumbprint") == thumbprint(leaf)

    state_dir = model.state_dir
    assert state_dir is not None
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    keys = list((state_dir / "keys").iterdir())
    assert keys and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    state_text = (state_dir / "state.json").read_text()
    assert "PRIVATE KEY" not in state_text
    assert json.loads(state_text)["default_smtp"] == tp
    assert not [p for p in state_dir.rglob(".*.tmp")]


def test_removed_key_is_deleted_from_disk(make_server: ServerFactory) -> None:
    model, reg = make_server("2010")
    ems = Shell(reg, "Microsoft.Exchange")
    assert model.state_dir is not None
    count = len(list((model.state_dir / "keys").iterdir()))
    ems.one("New-ExchangeCertificate", ("GenerateRequest", None))
    assert len(list((model.state_dir / "keys").iterdir())) == count + 1
    tp = ServerInspector(model).thumbprints("REQUEST")[0]
    ems.one("Remove-ExchangeCertificate", (None, tp), ("Confirm", False))
    assert len(list((model.state_dir / "keys").iterdir())) == count


def test_concurrent_enables_keep_single_owner(make_server: ServerFactory) -> None:
    model, reg = make_server("2010")
    ems = Shell(reg, "Microsoft.Exchange")
    thumbs = []
    for i in range(3):
        cert = ems.one("New-ExchangeCertificate", ("SubjectName", f"CN=s{i}.mitserv.net"), ("Services", "None"),
                       ("DomainName", [f"s{i}.mitserv.net"]))
        thumbs.append(cert.get("Thumbprint"))

    def worker(tp: str) -> None:
        shell = Shell(reg, "Microsoft.Exchange")
        for _ in range(5):
            shell.run(("Enable-ExchangeCertificate", [(None, tp), ("Services", "IIS,POP"), ("Force", None)]))

    threads = [threading.Thread(target=worker, args=(tp,)) for tp in thumbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    owners = [tp for tp, s in ServerInspector(model).services().items() if "IIS" in s]
    assert len(owners) == 1
    assert [tp for tp, s in ServerInspector(model).services().items() if "POP" in s] == owners


def test_output_settings(make_server: ServerFactory, lab_ca: LabCA) -> None:
    _, reg = make_server("2010", lab_settings=LabSettings(omit_services_in_remote_output=True,
                                                          request_pem_header="CERTIFICATE REQUEST",
                                                          exchange_endpoint_has_file_cmdlets=True))
    ems = Shell(reg, "Microsoft.Exchange")
    cert = ems.run(("Get-ExchangeCertificate", [])).output[0]
    assert not cert.has("Services") and cert.has("Thumbprint")
    text = ems.one("New-ExchangeCertificate", ("GenerateRequest", None))
    assert text.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert ems.one("Test-Path", ("Path", "C:\\Windows")) is True
    _, reg = make_server("2010", name="EX2010R", lab_settings=LabSettings(rawdata_only_output=True))
    only = Shell(reg, "Microsoft.Exchange").run(("Get-ExchangeCertificate", [])).output[0]
    assert list(only.adapted) == ["RawData"]


def test_default_certificate_and_object_shape(make_server: ServerFactory) -> None:
    _, reg = make_server("2010")
    cert = Shell(reg, "Microsoft.Exchange").run(("Get-ExchangeCertificate", [])).output[0]
    assert cert.type_names[:2] == ["Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
                                   "System.Security.Cryptography.X509Certificates.X509Certificate2"]
    assert cert.extended == {}
    assert cert.get("Subject") == "CN=EX2010A"
    assert cert.get("CertificateDomains").items == ["EX2010A", "ex2010a.mitserv.net"]
    assert cert.get("CertificateDomains").type_names[0].startswith("Microsoft.Exchange.Data.MultiValuedProperty`1")
    assert str(cert.get("Services")) == "IMAP, POP, IIS, SMTP"
    assert cert.get("ServicesStringForm") == "IP.WS."
    assert cert.get("IsSelfSigned") is True
    assert (str(cert.get("Status")), str(cert.get("RootCAType"))) == ("Valid", "Registry")
    assert cert.get("Identity") == f"ex2010a.mitserv.net\\{cert.get('Thumbprint')}"
    assert cert.get("PublicKeySize") == 2048


def test_dates_drive_status(make_server: ServerFactory, lab_ca: LabCA, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    clock = {"now": now}
    model = ExchangeServerModel.load_or_create(tmp_path / "clocked", name="EX2010C", version="2010",
                                               fqdn="ex2010c.mitserv.net", clock=lambda: clock["now"])
    reg = build_registry(model, LabSettings(third_party_roots=(lab_ca.root_pem,)))
    ems = Shell(reg, "Microsoft.Exchange")
    leaf = lab_ca.sign_csr(ems.one("New-ExchangeCertificate", ("GenerateRequest", None)).encode(), days=30,
                           not_before=now + timedelta(days=2))
    cert = ems.one("Import-ExchangeCertificate",
                   ("FileData", leaf.public_bytes(Encoding.PEM) + lab_ca.intermediate_pem))
    assert str(cert.get("Status")) == "DateInvalid"  # not yet valid
    clock["now"] = now + timedelta(days=3)
    assert str(ems.one("Get-ExchangeCertificate", (None, thumbprint(leaf))).get("Status")) == "Valid"
    clock["now"] = now + timedelta(days=40)
    assert str(ems.one("Get-ExchangeCertificate", (None, thumbprint(leaf))).get("Status")) == "DateInvalid"
