"""Every error case with its exact text and FullyQualifiedErrorId."""

from __future__ import annotations

import os
from datetime import UTC

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from orchestrator.lab.ca import LabCA, thumbprint
from orchestrator.lab.exchange import EMS_2007_SNAPIN, LabSettings, ServerInspector
from orchestrator.lab.exchange.certificate import windows_datetime
from orchestrator.lab.exchange.model import CA, CertEntry
from orchestrator.lab.objects import Secret
from orchestrator.lab.registry import LabError

from .conftest import ServerFactory
from .helpers import Shell
from .test_procedure import PASSWORD

TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks."


def fails(shell: Shell, *stages: tuple[str, list]) -> LabError:  # type: ignore[type-arg]
    with pytest.raises(LabError) as info:
        shell.run(*stages)
    return info.value


def issued_2010(make_server: ServerFactory, lab_ca: LabCA, exportable: bool = True,
                with_intermediate: bool = True):  # type: ignore[no-untyped-def]
    model, reg = make_server("2010")
    ems = Shell(reg, "Microsoft.Exchange")
    data = ems.one("New-ExchangeCertificate", ("GenerateRequest", None), ("SubjectName", "CN=mail.mitserv.net"),
                   ("DomainName", ["mail.mitserv.net"]), ("PrivateKeyExportable", exportable))
    leaf = lab_ca.sign_csr(data.encode())
    chain = [leaf, lab_ca.intermediate_cert] if with_intermediate else [leaf]
    blob = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    ems.one("Import-ExchangeCertificate", ("FileData", blob))
    return model, reg, ems, thumbprint(leaf), leaf


# --- version syntax -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("command", "args", "name"),
    [
        ("Import-ExchangeCertificate", [("Path", "c:\\scripts\\mitserv.pfx"), ("Password", PASSWORD)], "Path"),
        ("New-ExchangeCertificate", [("GenerateRequest", None), ("Path", "C:\\Certs\\x.csr")], "Path"),
        ("Export-ExchangeCertificate", [("Thumbprint", "AB"), ("Path", "C:\\x.pfx")], "Path"),
        ("Import-ExchangeCertificate", [("FileName", "C:\\x.pfx")], "FileName"),
    ],
)
def test_2007_syntax_on_2010_is_named_parameter_not_found(make_server: ServerFactory, command: str,
                                                          args: list, name: str) -> None:  # type: ignore[type-arg]
    _, reg = make_server("2010")
    err = fails(Shell(reg, "Microsoft.Exchange"), (command, args))
    assert err.message == f"A parameter cannot be found that matches parameter name '{name}'."
    assert err.error_id == f"NamedParameterNotFound,{TASKS}{command.replace('-', '')}"
    assert err.exception_type == "System.Management.Automation.ParameterBindingException"


@pytest.mark.parametrize(
    ("command", "args", "name"),
    [
        ("Import-ExchangeCertificate", [("FileData", b"\x30")], "FileData"),
        ("Get-ExchangeCertificate", [("Server", "EX2007A")], "Server"),
        ("Import-ExchangeCertificate", [("Path", "C:\\x.pfx"), ("PrivateKeyExportable", True)], "PrivateKeyExportable"),
    ],
)
def test_2010_syntax_on_2007_is_named_parameter_not_found(make_server: ServerFactory, command: str,
                                                          args: list, name: str) -> None:  # type: ignore[type-arg]
    _, reg = make_server("2007")
    ps = Shell(reg, "Microsoft.PowerShell")
    ps.one("Add-PSSnapin", ("Name", EMS_2007_SNAPIN))
    err = fails(ps, (command, args))
    assert err.message == f"A parameter cannot be found that matches parameter name '{name}'."
    assert err.error_id == f"NamedParameterNotFound,{TASKS}{command.replace('-', '')}"


def test_visibility_per_endpoint_and_snapin(make_server: ServerFactory) -> None:
    _, reg10 = make_server("2010")
    _, reg07 = make_server("2007")
    not_found = "The term 'Get-ExchangeCertificate' is not recognized as the name of a cmdlet, function, script " \
        "file, or operable program. Check the spelling of the name, or if a path was included, verify that " \
        "the path is correct and try again."
    for shell in (Shell(reg10, "Microsoft.PowerShell"), Shell(reg07, "Microsoft.PowerShell")):
        err = fails(shell, ("Get-ExchangeCertificate", []))
        assert (err.message, err.error_id) == (not_found, "CommandNotFoundException")
    # The restricted Exchange endpoint has no file cmdlets (default setting).
    err = fails(Shell(reg10, "Microsoft.Exchange"), ("Get-Content", [("Path", "C:\\x")]))
    assert err.error_id == "CommandNotFoundException"
    ps07 = Shell(reg07, "Microsoft.PowerShell")
    result = ps07.run(("Add-PSSnapin", [("Name", "Microsoft.Exchange.Management.PowerShell.E2010")]))
    assert [e.message for e in result.errors] == [
        "The Windows PowerShell snap-in 'Microsoft.Exchange.Management.PowerShell.E2010' is not installed on "
        "this machine."]
    assert result.errors[0].error_id == "AddPSSnapInRead,Microsoft.PowerShell.Commands.AddPSSnapinCommand"
    ps07.one("Add-PSSnapin", ("Name", EMS_2007_SNAPIN))
    assert len(ps07.run(("Get-ExchangeCertificate", [])).output) == 1
    names = [o.get("Name") for o in ps07.run(("Get-PSSnapin", [])).output]
    assert EMS_2007_SNAPIN in names


# --- Enable ---------------------------------------------------------------------------------------

def test_smtp_without_force_fails_with_the_overwrite_prompt(make_server: ServerFactory, lab_ca: LabCA) -> None:
    model, _, ems, tp, leaf = issued_2010(make_server, lab_ca)
    default = next(e for e in model.entries("My") if e.thumbprint != tp)
    err = fails(ems, ("Enable-ExchangeCertificate", [(None, tp), ("Services", "IIS,SMTP")]))
    assert err.message == (
        "A command that prompts the user failed because the host program or the command type does not support "
        "user interaction. The host was attempting to request confirmation with the following message: "
        "Overwrite the existing default SMTP certificate?\r\n\r\n"
        f"Current certificate: '{default.thumbprint}' (expires {windows_datetime(default.cert.not_valid_after_utc)})\r\n"
        f"Replace it with certificate: '{tp}' (expires {windows_datetime(leaf.not_valid_after_utc)})"
    )
    assert err.error_id == f"HostFunctionNotImplemented,{TASKS}EnableExchangeCertificate"
    # Half-changed, as a real server leaves it: IIS moved before the SMTP question (enable_applies_before_smtp_prompt).
    assert ServerInspector(model).services()[tp] == "IIS"
    assert ServerInspector(model).serving()["https"] == tp and ServerInspector(model).serving()["smtp"] != tp
    # Without SMTP no prompt; IIS/POP/IMAP move off the self-signed certificate (the Hoffman transcript).
    ems.run(("Enable-ExchangeCertificate", [(None, tp), ("Services", ["IIS", "POP", "IMAP"]),
                                            ("DoNotRequireSsl", None)]))
    # Services is computed: SMTP shows on the new certificate too (enabled for POP/IMAP, the transport can read its
    # key) while the default SMTP certificate is still the old one.
    assert ServerInspector(model).services() == {default.thumbprint: "SMTP", tp: "IMAP, POP, IIS, SMTP"}
    assert ServerInspector(model).serving()["smtp"] == default.thumbprint
    assert ServerInspector(model).iis_require_ssl() is False
    ems.run(("Enable-ExchangeCertificate", [(None, tp), ("Services", "SMTP"), ("Force", None)]))
    # 2010 keeps SMTP on the old certificate but the default SMTP certificate moves.
    assert ServerInspector(model).services()[default.thumbprint] == "SMTP"
    assert ServerInspector(model).serving()["smtp"] == tp


def test_smtp_moves_completely_on_2007(make_server: ServerFactory, lab_ca: LabCA) -> None:
    _, reg10, ems, tp, _ = issued_2010(make_server, lab_ca)
    pfx = ems.one("Export-ExchangeCertificate", (None, tp), ("BinaryEncoded", None), ("Password", PASSWORD))
    model07, reg07 = make_server("2007")
    ps = Shell(reg07, "Microsoft.PowerShell")
    ps.one("Add-PSSnapin", ("Name", EMS_2007_SNAPIN))
    ps.one("Set-Content", ("Path", "C:\\Windows\\Temp\\c.pfx"), ("Value", pfx.get("FileData")), ("Encoding", "Byte"))
    imported = ps.one("Import-ExchangeCertificate", (None, "C:\\Windows\\Temp\\c.pfx"), ("Password", PASSWORD))
    assert imported.get("PrivateKeyExportable") is False  # lab choice for 2007 PFX imports
    err = fails(ps, ("Enable-ExchangeCertificate", [("Thumbprint", tp), ("Services", "SMTP")]))
    assert "Overwrite the existing default SMTP certificate?" in err.message
    ps.run(("Enable-ExchangeCertificate", [("Thumbprint", tp), ("Services", "SMTP,IIS"), ("Force", None)]))
    services = ServerInspector(model07).services()
    assert services[tp] == "IIS, SMTP"
    assert sorted(services.values()) == ["IIS, SMTP", "IMAP, POP"]


def test_private_key_missing(make_server: ServerFactory, lab_ca: LabCA) -> None:
    model, reg = make_server("2010")
    # The chain must build (import_requires_trusted_root): the intermediate is in \\CA, as install-chain leaves it.
    model.put(CertEntry(CA, lab_ca.intermediate_cert.public_bytes(serialization.Encoding.DER)))
    ems = Shell(reg, "Microsoft.Exchange")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.mitserv.net")])).sign(key, hashes.SHA256())
    leaf = lab_ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM))
    imported = ems.one("Import-ExchangeCertificate", ("FileData", leaf.public_bytes(serialization.Encoding.DER)))
    assert imported.get("HasPrivateKey") is False
    tp = thumbprint(leaf)
    err = fails(ems, ("Enable-ExchangeCertificate", [(None, tp), ("Services", "IIS"), ("Force", None)]))
    assert err.message == (f"The certificate with thumbprint {tp} was found but is not valid for use with Exchange "
                           "Server (reason: PrivateKeyMissing).")
    assert err.error_id == f"DA6D9EA1,{TASKS}EnableExchangeCertificate"
    err = fails(ems, ("Enable-ExchangeCertificate", [(None, tp), ("Services", "IIS"), ("Server", "EX2010A")]))
    assert err.message.startswith("A special Rpc error occurs on server EX2010A: The certificate with thumbprint")
    err = fails(ems, ("Export-ExchangeCertificate", [(None, tp), ("Password", PASSWORD)]))
    assert err.message == (f"The certificate with thumbprint {tp} doesn't have a private key, so it can't be "
                           "exported with a password.")


def test_unknown_thumbprint_and_services(make_server: ServerFactory) -> None:
    _, reg = make_server("2010")
    ems = Shell(reg, "Microsoft.Exchange")
    err = fails(ems, ("Enable-ExchangeCertificate", [(None, "0" * 40), ("Services", "IIS")]))
    assert err.message == f"The certificate with thumbprint {'0' * 40} was not found."
    assert err.error_id == f"9E4F2A17,{TASKS}EnableExchangeCertificate"
    result = ems.run(("Get-ExchangeCertificate", [(None, "ab" * 20)]))
    assert result.output == [] and result.errors[0].message == f"The certificate with thumbprint {'AB' * 20} was not found."
    tp = ems.run(("Get-ExchangeCertificate", [])).output[0].get("Thumbprint")
    err = fails(ems, ("Enable-ExchangeCertificate", [(None, tp), ("Services", "Federation")]))
    assert err.message == "You can't use the Enable-ExchangeCertificate cmdlet to enable a certificate for federation."
    err = fails(ems, ("Enable-ExchangeCertificate", [(None, tp), ("Services", "IIS,HTTP")]))
    assert err.message == (
        "Cannot bind parameter 'Services'. Cannot convert value \"IIS,HTTP\" to type "
        "\"Microsoft.Exchange.Data.Directory.SystemConfiguration.AllowedServices\". Error: \"Unable to match the "
        "identifier name HTTP to a valid enumerator name.  Specify one of the following enumerator names and try "
        "again: None, IMAP, POP, UM, IIS, SMTP, Federation\"")
    err = fails(ems, ("Get-ExchangeCertificate", [("Server", "OTHER")]))
    assert err.message == "The operation couldn't be performed because object 'OTHER' couldn't be found on " \
        "'dc01.mitserv.net'."


def test_federation_is_no_service_name_on_2007(make_server: ServerFactory) -> None:
    _, reg = make_server("2007")
    ps = Shell(reg, "Microsoft.PowerShell")
    ps.one("Add-PSSnapin", ("Name", EMS_2007_SNAPIN))
    tp = ps.run(("Get-ExchangeCertificate", [])).output[0].get("Thumbprint")
    err = fails(ps, ("Enable-ExchangeCertificate", [("Thumbprint", tp), ("Services", "Federation")]))
    assert err.message.endswith("try again: None, IMAP, POP, UM, IIS, SMTP\"")


# --- New ---------------------------------------------------------------------------------------------

def test_new_request_validation(make_server: ServerFactory) -> None:
    _, reg = make_server("2010")
    ems = Shell(reg, "Microsoft.Exchange")
    err = fails(ems, ("New-ExchangeCertificate", [("GenerateRequest", None), ("KeySize", 512)]))
    assert err.message == ("Cannot validate argument on parameter 'KeySize'. The argument \"512\" does not belong "
                           "to the set \"1024,2048,4096\" specified by the ValidateSet attribute. Supply an argument "
                           "that is in the set and then try the command again.")
    err = fails(ems, ("New-ExchangeCertificate", [("GenerateRequest", None), ("DomainName", ["mail_x.mitserv.net"])]))
    assert err.message.startswith("The domain name 'mail_x.mitserv.net' isn't valid.")
    err = fails(ems, ("New-ExchangeCertificate", [("GenerateRequest", None), ("SubjectName", "xx=1, CN=a")]))
    assert err.error_id == f"CannotConvertArgumentNoMessage,{TASKS}NewExchangeCertificate"


def test_new_request_variants(make_server: ServerFactory) -> None:
    from cryptography import x509

    _, reg10 = make_server("2010")
    ems = Shell(reg10, "Microsoft.Exchange")
    binary = ems.one("New-ExchangeCertificate", ("GenerateRequest", None), ("BinaryEncoded", None),
                     ("KeySize", 1024))
    csr = x509.load_der_x509_csr(binary.get("FileData"))
    assert csr.public_key().key_size == 1024
    # Without -DomainName the server's host name and FQDN go in.
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["EX2010A", "ex2010a.mitserv.net"]
    # 2007: -Path writes Base64 text to the server and returns the request with its Thumbprint.
    model07, reg07 = make_server("2007")
    ps = Shell(reg07, "Microsoft.PowerShell")
    ps.one("Add-PSSnapin", ("Name", EMS_2007_SNAPIN))
    ps.one("New-Item", ("Path", "C:\\Certs"), ("ItemType", "Directory"))
    req = ps.one("New-ExchangeCertificate", ("GenerateRequest", True), ("SubjectName", "c=US, o=Org, cn=mail.x.net"),
                 ("DomainName", ["mail.x.net"]), ("Path", "C:\\Certs\\req.txt"), ("PrivateKeyExportable", True))
    assert str(req.get("Status")) == "PendingRequest"
    assert req.get("Thumbprint") in ServerInspector(model07).thumbprints("REQUEST")
    text = ServerInspector(model07).file("C:\\certs\\req.txt")
    assert text is not None and text.startswith(b"-----BEGIN NEW CERTIFICATE REQUEST-----\r\n")
    err = fails(ps, ("New-ExchangeCertificate", [("GenerateRequest", True), ("Path", "C:\\Certs\\req.txt")]))
    assert err.message == "The file 'C:\\Certs\\req.txt' already exists. Use the Force parameter to overwrite it."


# --- Import / Export ------------------------------------------------------------------------------------

def _self_signed_pfx(encryption: serialization.KeySerializationEncryption) -> bytes:
    from datetime import datetime, timedelta

    from orchestrator.lab.exchange import pki
    from orchestrator.lab.exchange.x500 import parse_dn

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = pki.self_signed(key, parse_dn("CN=other.mitserv.net"), ["other.mitserv.net"],
                           datetime.now(UTC) - timedelta(days=1), 30)
    return pkcs12.serialize_key_and_certificates(b"x", key, cert, None, encryption)


def test_pfx_errors(make_server: ServerFactory) -> None:
    _, reg = make_server("2010")
    ems = Shell(reg, "Microsoft.Exchange")
    legacy = (serialization.PrivateFormat.PKCS12.encryption_builder()
              .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1()).build(b"right"))
    pfx = _self_signed_pfx(legacy)
    err = fails(ems, ("Import-ExchangeCertificate", [("FileData", pfx), ("Password", Secret("wrong"))]))
    assert (err.message, err.error_id) == ("The source data cannot be imported or the wrong password was specified.",
                                           f"1E4A7B33,{TASKS}ImportExchangeCertificate")
    # With -Server (as exmig sends it on 2010) the certificate service's text comes wrapped.
    err = fails(ems, ("Import-ExchangeCertificate", [("FileData", pfx), ("Password", Secret("wrong")),
                                                     ("Server", "EX2010A")]))
    assert err.message == ("A special Rpc error occurs on server EX2010A: The source data cannot be imported or "
                           "the wrong password was specified.")
    assert err.exception_type == "System.InvalidOperationException"
    aes = _self_signed_pfx(serialization.BestAvailableEncryption(b"right"))
    err = fails(ems, ("Import-ExchangeCertificate", [("FileData", aes), ("Password", Secret("right"))]))
    assert (err.message, err.error_id) == ("The source data cannot be imported or the wrong password was specified.",
                                           f"1E4A7B34,{TASKS}ImportExchangeCertificate")
    err = fails(ems, ("Import-ExchangeCertificate", [("FileData", os.urandom(300))]))
    assert (err.message, err.error_id) == ("Cannot find the requested object.",
                                           f"7D0C5E61,{TASKS}ImportExchangeCertificate")
    ok = ems.one("Import-ExchangeCertificate", ("FileData", pfx), ("Password", Secret("right")),
                 ("PrivateKeyExportable", True))
    assert ok.get("PrivateKeyExportable") is True and ok.get("HasPrivateKey") is True
    # Self-signed and not in this server's \Root: a real server still says Valid, with RootCAType None.
    assert (str(ok.get("Status")), str(ok.get("RootCAType"))) == ("Valid", "None")
    err = fails(ems, ("Import-ExchangeCertificate", [("FileData", pfx), ("Password", Secret("right"))]))
    assert err.message == f"Cannot import certificate. A certificate with the thumbprint {ok.get('Thumbprint')} " \
        "already exists."


def test_non_exportable_key_cannot_be_exported(make_server: ServerFactory, lab_ca: LabCA) -> None:
    _, _, ems, tp, _ = issued_2010(make_server, lab_ca, exportable=False)
    err = fails(ems, ("Export-ExchangeCertificate", [(None, tp), ("BinaryEncoded", None), ("Password", PASSWORD)]))
    assert err.message == ("The private key couldn't be exported as PKCS-12. It either couldn't be accessed or "
                           "isn't exportable.")
    assert err.error_id == f"B3E2F0A4,{TASKS}ExportExchangeCertificate"
    # Without -Password a certificate with a key is an error (export_keyed_needs_password), not a bare certificate.
    err = fails(ems, ("Export-ExchangeCertificate", [(None, tp)]))
    assert err.message == (f"The certificate with thumbprint {tp} has a private key; specify the Password "
                           "parameter to export it.")


def test_exported_pfx_is_legacy_3des(make_server: ServerFactory, lab_ca: LabCA) -> None:
    from orchestrator.lab.exchange import pki

    _, _, ems, tp, _ = issued_2010(make_server, lab_ca)
    pfx = ems.one("Export-ExchangeCertificate", (None, tp), ("BinaryEncoded", None), ("Password", PASSWORD))
    oids = pki.pfx_encryption_oids(pfx.get("FileData"))
    assert pki.PBES2_OID not in oids
    assert "1.2.840.113549.1.12.1.3" in oids  # pbeWithSHAAnd3-KeyTripleDES-CBC
    loaded = pkcs12.load_pkcs12(pfx.get("FileData"), PASSWORD.reveal().encode())
    assert loaded.key is not None and len(loaded.additional_certs) == 1  # the intermediate


# --- Remove ---------------------------------------------------------------------------------------------

def test_remove_needs_confirm_false_and_refuses_only_the_default_smtp_cert(make_server: ServerFactory,
                                                                            lab_ca: LabCA) -> None:
    model, _, ems, tp, _ = issued_2010(make_server, lab_ca)
    err = fails(ems, ("Remove-ExchangeCertificate", [(None, tp)]))
    assert err.message.startswith("A command that prompts the user failed because the host program")
    assert f'Removing certificate with thumbprint "{tp}".' in err.message
    old = next(t for t in ServerInspector(model).thumbprints("My") if t != tp)
    err = fails(ems, ("Remove-ExchangeCertificate", [(None, old), ("Confirm", False)]))
    assert err.message == (f"You can't remove the certificate with thumbprint {old} because it's being used "
                           "(services: SMTP).")
    # An IIS-bound certificate can be removed, and HTTPS then has no certificate: its clients break.
    ems.run(("Enable-ExchangeCertificate", [(None, tp), ("Services", "IIS")]))
    ems.run(("Remove-ExchangeCertificate", [(None, tp), ("Confirm", False)]))
    assert tp not in ServerInspector(model).thumbprints("My")
    assert ServerInspector(model).serving()["https"] is None


# --- Windows commands -------------------------------------------------------------------------------------

def test_file_and_certutil_errors(make_server: ServerFactory) -> None:
    _, reg = make_server("2010")
    ps = Shell(reg, "Microsoft.PowerShell")
    result = ps.run(("Get-Content", [("Path", "C:\\x"), ("Encoding", "Byte"), ("ReadCount", 0)]))
    assert result.output == []
    assert [(e.message, e.error_id) for e in result.errors] == [
        ("Cannot find path 'C:\\x' because it does not exist.",
         "PathNotFound,Microsoft.PowerShell.Commands.GetContentCommand")]
    result = ps.run(("Remove-Item", [("Path", "C:\\Certs\\x.pfx")]))
    assert result.errors[0].error_id == "PathNotFound,Microsoft.PowerShell.Commands.RemoveItemCommand"
    result = ps.run(("Set-Content", [("Path", "C:\\Certs\\x.pfx"), ("Value", b"1"), ("Encoding", "Byte")]))
    assert result.errors[0].message == "Could not find a part of the path 'C:\\Certs\\x.pfx'."
    assert ps.one("Test-Path", ("Path", "C:\\Certs")) is False
    ps.one("Set-Content", ("Path", "C:\\Windows\\Temp\\x.p12"), ("Value", b"\x01\x02"), ("Encoding", "Byte"))
    assert ps.one("Test-Path", (None, "c:\\windows\\temp\\X.P12")) is True
    native = reg.native("C:\\Windows\\System32\\certutil.exe")
    assert native is not None
    out = native.handler(["-addstore", "CA", "C:\\Windows\\Temp\\x.p12"], ps.session)
    assert out.stdout == ("CertUtil: -addstore command FAILED: 0x80092009 (-2146885623 CRYPT_E_NO_MATCH)\r\n"
                          "CertUtil: Cannot find the requested object.\r\n")
    assert out.exit_code == -2146885623
    out = native.handler(["-addstore", "CA", "C:\\nope.cer"], ps.session)
    assert "ERROR_FILE_NOT_FOUND" in out.stdout and out.exit_code != 0
    ps.one("Remove-Item", ("Path", "C:\\Windows\\Temp\\x.p12"))
    assert ps.one("Test-Path", ("Path", "C:\\Windows\\Temp\\x.p12")) is False


# --- more cmdlet behaviour ------------------------------------------------------------------------------

def test_2007_export_path_and_request_export(make_server: ServerFactory, lab_ca: LabCA, settings: LabSettings) -> None:
    from cryptography import x509

    from orchestrator.lab.ca import request_signature_valid

    _, reg10, ems, tp, _ = issued_2010(make_server, lab_ca)
    pfx = ems.one("Export-ExchangeCertificate", (None, tp), ("BinaryEncoded", None), ("Password", PASSWORD))
    model07, reg07 = make_server("2007")
    ps = Shell(reg07, "Microsoft.PowerShell")
    ps.one("Add-PSSnapin", ("Name", EMS_2007_SNAPIN))
    ps.one("Set-Content", ("Path", "C:\\Windows\\Temp\\c.pfx"), ("Value", pfx.get("FileData")), ("Encoding", "Byte"))
    # The 2007 usage that pipes the import straight into Enable.
    ps.run(("Import-ExchangeCertificate", [("Path", "C:\\Windows\\Temp\\c.pfx"), ("Password", PASSWORD)]),
           ("Enable-ExchangeCertificate", [("Services", "IIS")]))
    assert ServerInspector(model07).serving()["https"] == tp
    # 2007 PFX imports are not exportable (lab choice), so a 2007 export with the key fails...
    err = fails(ps, ("Export-ExchangeCertificate", [("Thumbprint", tp), ("Password", PASSWORD),
                                                    ("Path", "C:\\Windows\\Temp\\out.pfx")]))
    assert err.error_id == f"B3E2F0A4,{TASKS}ExportExchangeCertificate"
    # ...and so does one without -Password (export_keyed_needs_password); with that setting off the certificate
    # alone is written as Base64 text, and a second write needs -Force.
    err = fails(ps, ("Export-ExchangeCertificate", [("Thumbprint", tp), ("Path", "C:\\Windows\\Temp\\out.cer")]))
    assert "has a private key; specify the Password parameter" in err.message
    settings.export_keyed_needs_password = False
    ps.one("Export-ExchangeCertificate", ("Thumbprint", tp), ("Path", "C:\\Windows\\Temp\\out.cer"))
    written = ServerInspector(model07).file("C:\\Windows\\Temp\\out.cer")
    assert written is not None and x509.load_pem_x509_certificate(written)
    err = fails(ps, ("Export-ExchangeCertificate", [("Thumbprint", tp), ("Path", "C:\\Windows\\Temp\\out.cer")]))
    assert err.message.startswith("The file 'C:\\Windows\\Temp\\out.cer' already exists.")
    ps.one("Export-ExchangeCertificate", ("Thumbprint", tp), ("Path", "C:\\Windows\\Temp\\out.cer"), ("Force", None))
    # A pending request exports as its PKCS#10.
    _, reg = make_server("2010", name="EX2010Q")
    ems2 = Shell(reg, "Microsoft.Exchange")
    ems2.one("New-ExchangeCertificate", ("GenerateRequest", None))
    [pending] = [c for c in ems2.run(("Get-ExchangeCertificate", [])).output
                 if str(c.get("Status")) == "PendingRequest"]
    der = ems2.one("Export-ExchangeCertificate", (None, pending.get("Thumbprint")), ("BinaryEncoded", None))
    request = x509.load_der_x509_csr(der.get("FileData"))
    # Signed with SHA-1, as Exchange signs requests (LabSettings.request_signature_hash).
    assert request_signature_valid(request) and request.signature_hash_algorithm.name == "sha1"


def test_get_by_domain_and_cert_drive(make_server: ServerFactory, lab_ca: LabCA) -> None:
    model, reg, ems, tp, _ = issued_2010(make_server, lab_ca)
    by_domain = ems.run(("Get-ExchangeCertificate", [("DomainName", ["MAIL.mitserv.net"])])).output
    assert [c.get("Thumbprint") for c in by_domain] == [tp]
    ps = Shell(reg, "Microsoft.PowerShell")
    assert ps.one("Test-Path", ("Path", f"Cert:\\LocalMachine\\My\\{tp}")) is True
    assert ps.one("Test-Path", ("Path", "Cert:\\LocalMachine\\CA\\" + "0" * 40)) is False
    [mine] = ps.run(("Get-ChildItem", [("Path", f"Cert:\\LocalMachine\\My\\{tp}")])).output
    assert mine.get("HasPrivateKey") is True and isinstance(mine.get("RawData"), bytes)
    assert mine.get("PSParentPath") == "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\My"
    # Self-signed certificate created by New-ExchangeCertificate (no -GenerateRequest) with SMTP needs -Force.
    err = fails(ems, ("New-ExchangeCertificate", [("SubjectName", "CN=self.mitserv.net")]))
    assert "Overwrite the existing default SMTP certificate?" in err.message
    assert len(ServerInspector(model).thumbprints("My")) == 2  # nothing left behind
    made = ems.one("New-ExchangeCertificate", ("SubjectName", "CN=self.mitserv.net"), ("Force", None))
    assert str(made.get("Services")) == "IMAP, POP, SMTP" and str(made.get("Status")) == "Valid"


# --- values in error texts are PowerShell's, never Python's ------------------------------------------

@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, '""'), (b"\x01\x02", '"System.Byte[]"'), (["a"], '"System.Object[]"'), (1.5, '"System.Double"'),
     ({"a": 1}, '"System.Collections.Hashtable"')],
)
def test_a_bool_parameter_names_the_value_as_powershell_does(make_server: ServerFactory, value: object,
                                                            shown: str) -> None:
    # -PrivateKeyExportable sent as a bare switch arrives as $null (pypsrp's <Nil/>).
    _, reg = make_server("2010")
    err = fails(Shell(reg, "Microsoft.Exchange"),
                ("New-ExchangeCertificate", [("GenerateRequest", None), ("PrivateKeyExportable", value)]))
    assert err.message == (
        f"Cannot process argument transformation on parameter 'PrivateKeyExportable'. Cannot convert value {shown} "
        'to type "System.Boolean". Boolean parameters accept only Boolean values and numbers, such as $True, '
        "$False, 1 or 0.")


@pytest.mark.parametrize("value", [None, True, b"\x00", [1, 2], 2.5, {"k": "v"}, ("t",)])
def test_no_python_name_in_binding_errors(make_server: ServerFactory, value: object) -> None:
    _, reg = make_server("2010")
    ems = Shell(reg, "Microsoft.Exchange")
    texts = []
    for args in ([("KeySize", value)], [("SubjectName", value)], [("DomainName", [value])], [(None, value)],
                 [("PrivateKeyExportable", value)]):
        try:
            ems.run(("New-ExchangeCertificate", [("GenerateRequest", None), *args]))
        except LabError as err:
            texts.append(err.message)
    assert texts
    for text in texts:
        for python in ("None", "NoneType", "bytes", "b'", "list", "dict", "tuple", "float", "[1, 2]", "{'k'"):
            assert python not in text, text


def test_set_content_onto_a_folder_is_access_denied_not_a_lab_failure(make_server: ServerFactory) -> None:
    _, reg = make_server("2010")
    ps = Shell(reg, "Microsoft.PowerShell")
    result = ps.run(("Set-Content", [("Path", "C:\\Windows\\Temp"), ("Value", b"1"), ("Encoding", "Byte")]))
    assert [(e.message, e.error_id) for e in result.errors] == [
        ("Access to the path 'C:\\Windows\\Temp' is denied.",
         "GetContentWriterUnauthorizedAccessError,Microsoft.PowerShell.Commands.SetContentCommand")]
