"""Issue 16: where the lab now behaves as real Exchange does, seen as an admin's own pypsrp script sees it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from pypsrp.host import PSHost, PSHostUserInterface
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import TaggedValue

from orchestrator.lab.ca import LabCA, thumbprint
from orchestrator.lab.exchange import ExchangeServerModel, LabSettings, ServerInspector
from orchestrator.lab.exchange.model import CA, CertEntry
from orchestrator.lab.server import LabServer

from .conftest import ServerFactory
from .test_pypsrp import PASSWORD, USER, invoke, pool

SERVER = "EX2010A"


@pytest.fixture
def start(make_server: ServerFactory, settings: LabSettings) -> Iterator[Any]:
    started: list[LabServer] = []

    def run(name: str = SERVER, **changes: Any) -> tuple[ExchangeServerModel, LabServer]:
        model, registry = make_server("2010", name=name, lab_settings=replace(settings, **changes))
        srv = LabServer(model.name, registry, {USER: PASSWORD}, configurations=["Microsoft.Exchange",
                                                                                 "Microsoft.PowerShell"],
                        allow_unencrypted=True)
        srv.start()
        started.append(srv)
        return model, srv

    yield run
    for srv in started:
        errors = srv.errors
        srv.stop()
        assert not errors, errors


def failing(rp: RunspacePool, name: str, params: dict[str, Any]) -> str:
    """Run one command that must fail; its error record as PowerShell prints its message."""
    ps = PowerShell(rp)
    ps.add_cmdlet(name)
    for key, value in params.items():
        ps.add_parameter(key, value)
    ps.invoke()
    assert ps.had_errors, name
    return str(ps.streams.error[0])


def request(ems: RunspacePool) -> str:
    [csr] = invoke(ems, ("New-ExchangeCertificate", {
        "GenerateRequest": True, "SubjectName": "C=US, O=My Organization, CN=mail.mitserv.net",
        "DomainName": ["mail.mitserv.net"], "PrivateKeyExportable": True, "Server": SERVER}))
    return str(csr)


def test_import_of_a_response_whose_root_is_not_trusted_fails(start: Any, lab_ca: LabCA) -> None:
    model, srv = start(install_third_party_roots=False)
    with pool(srv, "Microsoft.Exchange") as ems:
        leaf = lab_ca.sign_csr(request(ems).encode())
        # The intermediate is in \CA (install-chain's work); the root is not in \Root.
        model.put(CertEntry(CA, lab_ca.intermediate_cert.public_bytes(Encoding.DER)))
        message = failing(ems, "Import-ExchangeCertificate", {"FileData": leaf.public_bytes(Encoding.DER),
                                                              "Server": SERVER})
    assert message == (
        f"A special Rpc error occurs on server {SERVER}: The certificate with thumbprint {thumbprint(leaf)} can't be "
        "imported: its chain doesn't end at a root certificate in the Trusted Root Certification Authorities store "
        f"({lab_ca.root_cert.subject.rfc4514_string().replace(',', ', ')}).")
    view = ServerInspector(model)
    assert len(view.thumbprints("REQUEST")) == 1 and view.certificate(thumbprint(leaf)) is None


def test_certificate_service_errors_come_wrapped_with_the_real_inner_texts(start: Any, lab_ca: LabCA) -> None:
    model, srv = start()
    model.put(CertEntry(CA, lab_ca.intermediate_cert.public_bytes(Encoding.DER)))
    with pool(srv, "Microsoft.Exchange") as ems:
        leaf = lab_ca.sign_csr(request(ems).encode())
        tp = thumbprint(leaf)
        ems.exchange_keys()
        # Export of a certificate with a key needs -Password; then a wrong PFX password; then a second import.
        [cert] = invoke(ems, ("Import-ExchangeCertificate", {"FileData": leaf.public_bytes(Encoding.DER),
                                                             "Server": SERVER}))
        assert cert.adapted_properties["HasPrivateKey"] is True
        assert failing(ems, "Export-ExchangeCertificate", {"Thumbprint": tp, "BinaryEncoded": True,
                                                           "Server": SERVER}) == (
            f"A special Rpc error occurs on server {SERVER}: The certificate with thumbprint {tp} has a private key; "
            "specify the Password parameter to export it.")
        [pfx] = invoke(ems, ("Export-ExchangeCertificate", {"Thumbprint": tp, "BinaryEncoded": True, "Server": SERVER,
                                                            "Password": TaggedValue("SS", "Pfx-Passw0rd!")}))
        data = pfx.adapted_properties["FileData"]
        assert failing(ems, "Import-ExchangeCertificate", {"FileData": data, "Server": SERVER,
                                                           "Password": TaggedValue("SS", "wrong")}) == (
            f"A special Rpc error occurs on server {SERVER}: The source data cannot be imported or the wrong password "
            "was specified.")
        assert failing(ems, "Import-ExchangeCertificate", {"FileData": data, "Server": SERVER,
                                                           "Password": TaggedValue("SS", "Pfx-Passw0rd!")}) == (
            f"A special Rpc error occurs on server {SERVER}: Cannot import certificate. A certificate with the "
            f"thumbprint {tp} already exists.")
    # Imported without -PrivateKeyExportable, the key cannot leave the second server.
    _, other = start(name="EX2010B")
    with pool(other, "Microsoft.Exchange") as ems2:
        ems2.exchange_keys()
        invoke(ems2, ("Import-ExchangeCertificate", {"FileData": data, "Server": "EX2010B",
                                                     "Password": TaggedValue("SS", "Pfx-Passw0rd!")}))
        assert failing(ems2, "Export-ExchangeCertificate", {"Thumbprint": tp, "BinaryEncoded": True,
                                                            "Server": "EX2010B",
                                                            "Password": TaggedValue("SS", "x")}) == (
            "A special Rpc error occurs on server EX2010B: The private key couldn't be exported as PKCS-12. It either "
            "couldn't be accessed or isn't exportable.")


def _enum(value: Any) -> tuple[str, int]:
    """A deserialized enum as a script sees it: its text and its number."""
    # pypsrp keeps an unknown enum's number as the object's one property set (<I32> beside <ToString>).
    return str(value), int(value.property_sets[0])


@pytest.mark.parametrize(("changes", "intermediate", "expected"), [
    ({}, True, ("Valid", "ThirdParty")),
    ({"install_third_party_roots": False, "import_requires_trusted_root": False}, True, ("Untrusted", "Unknown")),
    ({"import_requires_trusted_root": False}, False, ("Invalid", "Unknown")),
    ({"revocation_offline": True}, True, ("RevocationCheckFailure", "ThirdParty")),
])
def test_status_and_root_ca_type_as_a_server_computes_them(
        start: Any, lab_ca: LabCA, changes: dict[str, bool], intermediate: bool, expected: tuple[str, str]) -> None:
    model, srv = start(**changes)
    if intermediate:
        model.put(CertEntry(CA, lab_ca.intermediate_cert.public_bytes(Encoding.DER)))
    with pool(srv, "Microsoft.Exchange") as ems:
        leaf = lab_ca.sign_csr(request(ems).encode())
        invoke(ems, ("Import-ExchangeCertificate", {"FileData": leaf.public_bytes(Encoding.DER), "Server": SERVER}))
        certs = {c.adapted_properties["Thumbprint"]: c for c in invoke(ems, ("Get-ExchangeCertificate",
                                                                                {"Server": SERVER}))}
    ours = certs.pop(thumbprint(leaf)).adapted_properties
    assert (str(ours["Status"]), str(ours["RootCAType"])) == expected
    # The setup certificate: self-signed and in \Root, Valid with RootCAType Registry, which is 3 on the wire.
    [default] = certs.values()
    assert str(default.adapted_properties["Status"]) == "Valid"
    assert _enum(default.adapted_properties["RootCAType"]) == ("Registry", 3)


def test_a_self_signed_certificate_outside_root_is_valid_with_root_ca_type_none(start: Any) -> None:
    model, srv = start()
    [default] = ServerInspector(model).thumbprints("My")
    model.remove("Root", default)
    with pool(srv, "Microsoft.Exchange") as ems:
        [cert] = invoke(ems, ("Get-ExchangeCertificate", {"Thumbprint": default, "Server": SERVER}))
    assert (str(cert.adapted_properties["Status"]), str(cert.adapted_properties["RootCAType"])) == ("Valid", "None")


def test_rawdata_only_and_no_services_shapes(start: Any) -> None:
    _, srv = start(rawdata_only_output=True)
    with pool(srv, "Microsoft.Exchange") as ems:
        [cert] = invoke(ems, ("Get-ExchangeCertificate", {"Server": SERVER}))
    # As in the CSS-Exchange captures: RawData alone among the properties, SerializationData beside it.
    assert set(cert.adapted_properties) == {"RawData"}
    assert set(cert.extended_properties) == {"SerializationData"}
    assert str(cert).replace("\r", "").startswith("[Subject]\n  CN=EX2010A")
    _, other = start(name="EX2010B", omit_services_in_remote_output=True)
    with pool(other, "Microsoft.Exchange") as ems:
        [cert] = invoke(ems, ("Get-ExchangeCertificate", {"Server": "EX2010B"}))
    assert "Services" not in cert.adapted_properties and "ServicesStringForm" not in cert.adapted_properties
    assert str(cert.adapted_properties["Status"]) == "Valid"


def test_enable_without_force_half_applies_and_remove_as_real(start: Any, lab_ca: LabCA) -> None:
    model, srv = start()
    model.put(CertEntry(CA, lab_ca.intermediate_cert.public_bytes(Encoding.DER)))
    view = ServerInspector(model)
    [default] = view.thumbprints("My")
    with pool(srv, "Microsoft.Exchange") as ems:
        leaf = lab_ca.sign_csr(request(ems).encode())
        tp = thumbprint(leaf)
        invoke(ems, ("Import-ExchangeCertificate", {"FileData": leaf.public_bytes(Encoding.DER), "Server": SERVER}))
        message = failing(ems, "Enable-ExchangeCertificate", {"Thumbprint": tp, "Services": "IIS,POP,SMTP",
                                                              "Server": SERVER})
        assert "Overwrite the existing default SMTP certificate?" in message
        # IIS and POP went to the new certificate before the question; SMTP stayed where it was.
        assert view.serving() == {"https": tp, "pop3s": tp, "smtp": default, "imaps": default}
        # The IIS/POP-bound certificate can be removed (-Confirm:$false); the default SMTP one cannot.
        assert "it's being used (services: SMTP)" in failing(ems, "Remove-ExchangeCertificate", {
            "Thumbprint": default, "Confirm": False, "Server": SERVER})
        assert "Removing certificate with thumbprint" in failing(ems, "Remove-ExchangeCertificate", {
            "Thumbprint": tp, "Server": SERVER})
        invoke(ems, ("Remove-ExchangeCertificate", {"Thumbprint": tp, "Confirm": False, "Server": SERVER}))
    assert view.thumbprints("My") == [default]
    assert view.serving()["https"] is None and view.serving()["pop3s"] is None


class _Answers(PSHostUserInterface):
    """An admin at a console: answers each PromptForChoice with the next of `answers`, noting what was asked."""

    def __init__(self, answers: list[int]) -> None:
        super().__init__()
        self.answers = answers
        self.asked: list[tuple[str, str, list[str]]] = []

    def PromptForChoice(self, runspace: Any, pipeline: Any, caption: str, message: str, choices: list[Any],
                        default_choice: int) -> int:
        labels = [str(c.extended_properties["label"]) for c in choices]  # ChoiceDescription as remoting sends it
        self.asked.append((caption, message, labels))
        return self.answers.pop(0)


def test_smtp_prompt_is_a_real_host_call_when_the_client_offers_a_host(start: Any, lab_ca: LabCA) -> None:
    from pypsrp.wsman import WSMan

    model, srv = start()
    model.put(CertEntry(CA, lab_ca.intermediate_cert.public_bytes(Encoding.DER)))
    view = ServerInspector(model)
    [default] = view.thumbprints("My")
    ui = _Answers([1, 0])  # "No" first, then "Yes"
    host = PSHost(None, None, False, "admin console", None, ui, "1.0")
    wsman = WSMan("127.0.0.1", port=srv.port, path="PowerShell", auth="basic", username=USER, password=PASSWORD,
                  ssl=False, encryption="never", operation_timeout=5, read_timeout=10)
    with RunspacePool(wsman, configuration_name="Microsoft.Exchange", host=host) as ems:
        leaf = lab_ca.sign_csr(request(ems).encode())
        tp = thumbprint(leaf)
        invoke(ems, ("Import-ExchangeCertificate", {"FileData": leaf.public_bytes(Encoding.DER), "Server": SERVER}))
        # Answered "No": IIS moved, the default SMTP certificate stayed, and no error.
        invoke(ems, ("Enable-ExchangeCertificate", {"Thumbprint": tp, "Services": "IIS,SMTP", "Server": SERVER}))
        assert view.serving()["https"] == tp and view.serving()["smtp"] == default
        invoke(ems, ("Enable-ExchangeCertificate", {"Thumbprint": tp, "Services": "SMTP", "Server": SERVER}))
        assert view.serving()["smtp"] == tp
    assert len(ui.asked) == 2
    caption, message, labels = ui.asked[0]
    assert message.startswith("Overwrite the existing default SMTP certificate?") and tp in message
    assert labels == ["&Yes", "&No"]
