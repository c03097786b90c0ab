"""The seed procedure, command by command, on an emulated Exchange 2010 and 2007 server."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

from orchestrator.lab.ca import LabCA, request_signature_valid, thumbprint
from orchestrator.lab.exchange import EMS_2007_SNAPIN, ServerInspector
from orchestrator.lab.objects import LabObject, Secret
from orchestrator.lab.registry import LabError

from .conftest import ServerFactory
from .helpers import Shell

SUBJECT = "c=US, s=My State, l=MyCity, o=My Organization, ou=IT, CN=mail.mitserv.net"
DOMAINS = ["mail.mitserv.net", "autodiscover.mitserv.net", "legacy.mitserv.net"]
PASSWORD = Secret("P@ssw0rd-for-pfx")


def certutil(registry, shell: Shell, *args: str):  # type: ignore[no-untyped-def]
    native = registry.native("certutil.exe")
    assert native is not None
    return native.handler(list(args), shell.session)


def request_on_2010(ems: Shell) -> str:
    data = ems.one(
        "New-ExchangeCertificate", ("GenerateRequest", True), ("SubjectName", SUBJECT),
        ("DomainName", DOMAINS), ("KeySize", 2048), ("PrivateKeyExportable", True),
    )
    assert isinstance(data, str)
    return data


def test_seed_procedure_2010_then_2007(make_server: ServerFactory, lab_ca: LabCA) -> None:
    model10, reg10 = make_server("2010")
    ems = Shell(reg10, "Microsoft.Exchange")
    ps10 = Shell(reg10, "Microsoft.PowerShell")

    # 1. Request on 2010: PEM text, real PKCS#10 with the subject (DER order reversed, as Windows does) and SANs.
    data = request_on_2010(ems)
    assert data.startswith("-----BEGIN NEW CERTIFICATE REQUEST-----\r\n")
    csr = x509.load_pem_x509_csr(data.replace("NEW CERTIFICATE REQUEST", "CERTIFICATE REQUEST").encode())
    # Signed with SHA-1 as Exchange's requests are (LabSettings.request_signature_hash).
    assert request_signature_valid(csr) and csr.signature_hash_algorithm.name == "sha1"
    assert csr.public_key().key_size == 2048
    assert csr.subject.rdns[0].get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mail.mitserv.net"
    assert csr.subject.get_attributes_for_oid(NameOID.STATE_OR_PROVINCE_NAME)[0].value == "My State"
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == DOMAINS
    pending = [c for c in ems.run(("Get-ExchangeCertificate", [])).output if str(c.get("Status")) == "PendingRequest"]
    assert len(pending) == 1
    assert str(pending[0].get("RootCAType")) == "Unknown"
    assert pending[0].get("Subject") == "C=US, S=My State, L=MyCity, O=My Organization, OU=IT, CN=mail.mitserv.net"

    # Saved with Set-Content as in the blog (working folder created first).
    ps10.one("New-Item", ("Path", "C:\\Certs"), ("ItemType", "Directory"))
    ps10.one("Set-Content", ("Path", "C:\\Certs\\mitserv.csr"), ("Value", data))
    assert ServerInspector(model10).file("c:\\certs\\MITSERV.csr") == data.encode("ascii") + b"\r\n"

    # 2. The CA signs; the response and the intermediate land on the server.
    leaf = lab_ca.sign_csr(data.encode("ascii"))
    leaf_tp = thumbprint(leaf)
    leaf_pem = leaf.public_bytes(Encoding.PEM)
    ps10.one("Set-Content", ("Path", "C:\\Certs\\458c16fd3f3.crt"), ("Value", leaf_pem), ("Encoding", "Byte"))
    ps10.one("Set-Content", ("Path", "C:\\Certs\\intermediate.crt"), ("Value", lab_ca.intermediate_pem),
             ("Encoding", "Byte"))

    # 3. Intermediate into LocalMachine\CA with certutil.
    out = certutil(reg10, ps10, "-addstore", "CA", "C:\\Certs\\intermediate.crt")
    assert out.exit_code == 0
    assert out.stdout.endswith("CertUtil: -addstore command completed successfully.\r\n")
    listed = ps10.run(("Get-ChildItem", [("Path", "Cert:\\LocalMachine\\CA")])).output
    assert thumbprint(lab_ca.intermediate_cert) in [o.get("Thumbprint") for o in listed]

    # 4. Import the CA response: completes the pending request (private key, exportable inherited).
    file_data = ps10.one("Get-Content", ("Path", "C:\\Certs\\458c16fd3f3.crt"), ("Encoding", "Byte"),
                         ("ReadCount", 0))
    imported = ems.one("Import-ExchangeCertificate", ("FileData", file_data))
    assert imported.get("Thumbprint") == leaf_tp
    assert imported.get("HasPrivateKey") is True
    assert imported.get("PrivateKeyExportable") is True
    assert str(imported.get("Status")) == "Valid"
    assert str(imported.get("RootCAType")) == "ThirdParty"
    assert not [c for c in ems.run(("Get-ExchangeCertificate", [])).output
                if str(c.get("Status")) == "PendingRequest"]

    # 5. Enable by thumbprint (positional on 2010), piped, with -Force (no host to answer the prompt).
    result = ems.run(("Get-ExchangeCertificate", [(None, leaf_tp)]),
                     ("Enable-ExchangeCertificate", [("Services", "IIS,SMTP,POP,IMAP"), ("Force", None)]))
    assert result.output == [] and result.errors == []
    cert10 = ems.one("Get-ExchangeCertificate", (None, leaf_tp))
    assert str(cert10.get("Services")) == "IMAP, POP, IIS, SMTP"
    assert cert10.get("Services").value == 1 | 2 | 8 | 16

    # 6. Export with the key as PKCS#12 (3DES, readable by Windows 2008).
    exported = ems.run(("Get-ExchangeCertificate", [(None, leaf_tp)]),
                       ("Export-ExchangeCertificate", [("BinaryEncoded", True), ("Password", PASSWORD)])).output
    assert len(exported) == 1 and isinstance(exported[0], LabObject)
    pfx = exported[0].get("FileData")
    assert isinstance(pfx, bytes) and pfx[:1] == b"\x30"

    # 7. Exchange 2007: copy the PFX, load the EMS snap-in, import with -Path, enable.
    model07, reg07 = make_server("2007")
    ps07 = Shell(reg07, "Microsoft.PowerShell")
    ps07.one("New-Item", ("Path", "C:\\scripts"), ("ItemType", "Directory"))
    ps07.one("Set-Content", ("Path", "C:\\scripts\\mitserv.pfx"), ("Value", pfx), ("Encoding", "Byte"))
    sha = ps07.one("Get-FileHash", ("Path", "C:\\scripts\\mitserv.pfx"), ("Algorithm", "SHA256"))
    assert sha.get("Hash") == hashlib.sha256(pfx).hexdigest().upper()
    try:
        ps07.run(("Import-ExchangeCertificate", [("Path", "c:\\scripts\\mitserv.pfx"), ("Password", PASSWORD)]))
    except LabError as err:
        assert err.error_id == "CommandNotFoundException"
    else:
        raise AssertionError("2007 cmdlets must not exist before Add-PSSnapin")
    ps07.one("Add-PSSnapin", (None, EMS_2007_SNAPIN))
    imported07 = ps07.one("Import-ExchangeCertificate", ("Path", "c:\\scripts\\mitserv.pfx"), ("Password", PASSWORD))
    assert imported07.get("Thumbprint") == leaf_tp
    assert imported07.get("HasPrivateKey") is True
    result = ps07.run(("Get-ExchangeCertificate", [("Thumbprint", leaf_tp)]),
                      ("Enable-ExchangeCertificate", [("Services", "IIS,SMTP,POP,IMAP"), ("Force", None)]))
    assert result.errors == []

    # End state: same certificate, key, trust and services on both servers.
    cert07 = ps07.one("Get-ExchangeCertificate", ("Thumbprint", leaf_tp))
    for cert in (cert10, cert07):
        assert cert.get("Thumbprint") == leaf_tp
        assert cert.get("HasPrivateKey") is True
        assert str(cert.get("Status")) == "Valid"
        assert str(cert.get("Services")) == "IMAP, POP, IIS, SMTP"
    for model in (model10, model07):
        inspector = ServerInspector(model)
        assert set(inspector.serving().values()) == {leaf_tp}
        served = inspector.served_cert("https")
        assert served is not None
        leaf_out, key_out, chain_out = served
        assert leaf_out == leaf_pem
        assert b"PRIVATE KEY" in key_out
        assert chain_out == [lab_ca.intermediate_pem]


def test_second_2010_server_imports_pfx_with_filedata(make_server: ServerFactory, lab_ca: LabCA) -> None:
    model_a, reg_a = make_server("2010", name="EX2010A")
    model_b, reg_b = make_server("2010", name="EX2010B")
    ems_a, ems_b = Shell(reg_a, "Microsoft.Exchange"), Shell(reg_b, "Microsoft.Exchange")
    leaf = lab_ca.sign_csr(request_on_2010(ems_a).encode())
    # Without the intermediate in \CA the chain does not reach a trusted root: the import is refused
    # (import_requires_trusted_root) and the request stays pending.
    with pytest.raises(LabError, match="can't be imported: its chain doesn't end at a root"):
        ems_a.one("Import-ExchangeCertificate", ("FileData", leaf.public_bytes(Encoding.DER)))
    assert len(ServerInspector(model_a).thumbprints("REQUEST")) == 1
    ps_a = Shell(reg_a, "Microsoft.PowerShell")
    ps_a.one("Set-Content", ("Path", "C:\\Windows\\Temp\\inter.cer"), ("Value", lab_ca.intermediate_pem),
             ("Encoding", "Byte"))
    assert certutil(reg_a, ps_a, "-addstore", "-f", "CA", "C:\\Windows\\Temp\\inter.cer").exit_code == 0
    completed = ems_a.one("Import-ExchangeCertificate", ("FileData", leaf.public_bytes(Encoding.DER)))
    assert (str(completed.get("Status")), completed.get("HasPrivateKey")) == ("Valid", True)
    tp = thumbprint(leaf)
    pfx = ems_a.one("Export-ExchangeCertificate", (None, tp), ("BinaryEncoded", True),
                    ("Password", PASSWORD)).get("FileData")
    # Cookbook form: -FileData $cert.FileData -Password $pw -Server cas2.
    assert ServerInspector(model_b).thumbprints("CA") == []
    imported = ems_b.one("Import-ExchangeCertificate", ("FileData", pfx), ("Password", PASSWORD),
                         ("Server", "EX2010B"))
    assert imported.get("Thumbprint") == tp
    assert imported.get("PrivateKeyExportable") is False  # 2010 default without -PrivateKeyExportable
    assert str(imported.get("Status")) == "Valid"  # the PFX carried the intermediate into \CA


def test_p7b_response_completes_request_and_installs_intermediate(make_server: ServerFactory, lab_ca: LabCA) -> None:
    model, reg = make_server("2010")
    ems = Shell(reg, "Microsoft.Exchange")
    leaf = lab_ca.sign_csr(request_on_2010(ems).encode())
    p7b = pkcs7.serialize_certificates([leaf, lab_ca.intermediate_cert], Encoding.PEM)
    imported = ems.one("Import-ExchangeCertificate", ("FileData", p7b))
    assert imported.get("HasPrivateKey") is True
    assert str(imported.get("Status")) == "Valid"
    assert ServerInspector(model).thumbprints("CA") == [thumbprint(lab_ca.intermediate_cert)]
