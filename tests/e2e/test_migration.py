"""The seed's whole procedure, run by the real CLI against the lab, checked from outside with raw pypsrp and TLS."""

from __future__ import annotations

import hashlib
import socket
import ssl
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from tests.e2e.conftest import Lab, ca_store, file_exists, props, raw_invoke, raw_pool

SERVICES = {"IIS", "SMTP", "POP", "IMAP"}
SUBJECT_CN = "mail.mitserv.net"


def exchange_certificates(lab: Lab, name: str) -> list[dict[str, Any]]:
    emulated = lab.server(name)
    if emulated.server.version == 2010:
        with raw_pool(emulated, "Microsoft.Exchange") as pool:
            return [props(o) for o in raw_invoke(pool, "Get-ExchangeCertificate", Server=name)]
    with raw_pool(emulated, "Microsoft.PowerShell") as pool:
        raw_invoke(pool, "Add-PSSnapin", Name="Microsoft.Exchange.Management.PowerShell.Admin")
        return [props(o) for o in raw_invoke(pool, "Get-ExchangeCertificate")]


def presented_thumbprint(lab: Lab, name: str, service_port: int, sni: str) -> str:
    context = ssl.create_default_context(cafile=str(lab.site.ca_file))
    with socket.create_connection(("127.0.0.1", service_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            return hashlib.sha1(tls.getpeercert(binary_form=True)).hexdigest().upper()


def modifying_commands(events: list[dict[str, Any]]) -> list[str]:
    reads = {"Get-ExchangeCertificate", "Get-ChildItem", "Test-Path", "Export-ExchangeCertificate", "Get-Content"}
    return [e["command"] for e in events if e["event"] == "command" and e["command"] not in reads]


def test_full_migration_then_a_second_run_changes_nothing(lab: Lab) -> None:
    proc, events = lab.run_json()
    assert proc.returncode == 0, proc.stderr
    summary = next(e for e in events if e["event"] == "summary")
    assert all(e["severity"] != "error" for e in events if e["event"] == "verify")
    assert summary["event"] == "summary" and summary["counts"].get("failed", 0) == 0, summary
    # The lab CA signed it; the issue step names the thumbprint.
    thumb = next(e["reason"].split()[-1] for e in events if e.get("step") == "issue" and e.get("phase") == "end")
    intermediate = hashlib.sha1(lab.site.ca.intermediate_cert.public_bytes(Encoding.DER)).hexdigest().upper()
    for name in ("EX2010", "EX2007"):
        certs = exchange_certificates(lab, name)
        ours = [c for c in certs if c["Thumbprint"] == thumb]
        assert len(ours) == 1, name
        cert = ours[0]
        assert cert["HasPrivateKey"] is True
        assert str(cert["Status"]) == "Valid"
        assert {s.strip() for s in str(cert["Services"]).split(",")} >= SERVICES
        with_subject = [c for c in certs if f"CN={SUBJECT_CN}" in str(c["Subject"])]
        assert len(with_subject) == 1, (name, [c["Thumbprint"] for c in with_subject])
        assert intermediate in ca_store(lab, name)
    assert not file_exists(lab, "EX2007", "C:\\Certs\\mail.mitserv.net.pfx")

    for name in ("EX2010", "EX2007"):
        emulated = lab.server(name)
        ports = emulated.tls.ports
        for sni in emulated.server.names_for(lab.playbook.certificate):
            for service in ("https", "imaps", "pop3s"):
                assert presented_thumbprint(lab, name, ports[service], sni) == thumb, (name, service, sni)

    again, events2 = lab.run_json()
    assert again.returncode == 0, again.stderr
    summary2 = next(e for e in events2 if e["event"] == "summary")
    assert summary2["counts"].get("changed", 0) == 0, summary2
    assert "0 changed" in summary2["line"]
    assert modifying_commands(events2) == []
