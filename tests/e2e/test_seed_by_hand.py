"""Issue 4's acceptance: the seed's procedure typed command by command with raw pypsrp (no exmig code)
against an emulated 2010 and 2007, then the TLS services checked with Python's ssl and openssl s_client."""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from pypsrp.powershell import PowerShell
from pypsrp.serializer import TaggedValue

from tests.e2e.conftest import Lab, raw_invoke, raw_pool

NAMES = ["mail.mitserv.net", "autodiscover.mitserv.net", "legacy.mitserv.net"]
PFX_PASSWORD = "Seed-Pfx-Passw0rd"
SNAPIN = "Microsoft.Exchange.Management.PowerShell.Admin"


def presented(port: int, sni: str, cafile: Path, starttls: bool = False) -> str:
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if starttls:
            raw.recv(1024)
            raw.sendall(b"EHLO client\r\n")
            raw.recv(4096)
            raw.sendall(b"STARTTLS\r\n")
            assert raw.recv(1024).startswith(b"220")
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            return hashlib.sha1(tls.getpeercert(binary_form=True)).hexdigest().upper()


def s_client_leaf(port: int, sni: str, starttls: bool) -> str:
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni, "-showcerts"]
    if starttls:
        args += ["-starttls", "smtp"]
    out = subprocess.run(args, input=b"", capture_output=True, timeout=20, check=False).stdout
    pem = out[out.index(b"-----BEGIN CERTIFICATE-----"):out.index(b"-----END CERTIFICATE-----") + 25]
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    return hashlib.sha1(der).hexdigest().upper()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_seed_procedure_by_hand_then_tls(lab: Lab) -> None:
    ex10, ex07 = lab.server("EX2010"), lab.server("EX2007")
    # 1. the request on 2010 (the Exchange endpoint only takes commands: the CSR comes back as text)
    with raw_pool(ex10, "Microsoft.Exchange") as ems:
        [csr] = raw_invoke(ems, "New-ExchangeCertificate", GenerateRequest=None,
                           SubjectName="c=US, s=My State, l=MyCity, o=My Organization, CN=mail.mitserv.net",
                           DomainName=NAMES, KeySize=2048, PrivateKeyExportable=True, Server="EX2010")
    # 2. the CA signs it and returns the leaf and its intermediate
    leaf = lab.site.ca.sign_csr(str(csr).encode())
    thumb = hashlib.sha1(leaf.public_bytes(Encoding.DER)).hexdigest().upper()
    intermediate = lab.site.ca.intermediate_cert.public_bytes(Encoding.DER)
    # 3. the intermediate into LocalMachine\CA, on both servers
    for emulated in (ex10, ex07):
        with raw_pool(emulated, "Microsoft.PowerShell") as shell:
            raw_invoke(shell, "New-Item", Path="C:\\Certs", ItemType="Directory", Force=None)
            raw_invoke(shell, "Set-Content", Path="C:\\Certs\\intermediate.cer", Value=intermediate, Encoding="Byte")
            ps = PowerShell(shell)
            ps.add_cmdlet("certutil.exe").add_argument("-addstore").add_argument("CA").add_argument(
                "C:\\Certs\\intermediate.cer")
            lines = ps.invoke()
            assert any("completed successfully" in str(line) for line in lines), lines
    # 4.-6. complete, enable (-Force answers the SMTP prompt), export
    with raw_pool(ex10, "Microsoft.Exchange") as ems:
        [imported] = raw_invoke(ems, "Import-ExchangeCertificate", FileData=leaf.public_bytes(Encoding.DER),
                                Server="EX2010")
        assert imported.adapted_properties["Thumbprint"] == thumb
        raw_invoke(ems, "Enable-ExchangeCertificate", Thumbprint=thumb, Services=["IIS", "SMTP", "POP", "IMAP"],
                   Force=None, Server="EX2010")
        ems.exchange_keys()
        [exported] = raw_invoke(ems, "Export-ExchangeCertificate", Thumbprint=thumb, BinaryEncoded=None,
                                Password=TaggedValue("SS", PFX_PASSWORD), Server="EX2010")
        pfx = exported.adapted_properties["FileData"]
    # 7. on 2007: copy the PFX, import it with -Path and the password, enable it
    with raw_pool(ex07, "Microsoft.PowerShell") as shell:
        raw_invoke(shell, "Set-Content", Path="C:\\Certs\\mitserv.pfx", Value=pfx, Encoding="Byte")
        raw_invoke(shell, "Add-PSSnapin", Name=SNAPIN)
        shell.exchange_keys()
        [imported07] = raw_invoke(shell, "Import-ExchangeCertificate", Path="C:\\Certs\\mitserv.pfx",
                                  Password=TaggedValue("SS", PFX_PASSWORD))
        assert imported07.adapted_properties["Thumbprint"] == thumb
        raw_invoke(shell, "Enable-ExchangeCertificate", Thumbprint=thumb, Services=["IIS", "SMTP", "POP", "IMAP"],
                   Force=None)
        raw_invoke(shell, "Remove-Item", Path="C:\\Certs\\mitserv.pfx")

    for emulated in (ex10, ex07):
        view = emulated.inspector.certificate(thumb)
        assert view is not None
        assert (view.has_private_key, view.status, view.services) == (True, "Valid", "IMAP, POP, IIS, SMTP")
        ports = emulated.tls.ports
        for name in NAMES:
            for service in ("https", "smtp", "imaps", "pop3s"):
                starttls = service == "smtp"
                assert presented(ports[service], name, lab.site.ca_file, starttls) == thumb, (service, name)
            assert s_client_leaf(ports["https"], name, False) == thumb
            assert s_client_leaf(ports["smtp"], name, True) == thumb
