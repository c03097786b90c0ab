"""Server errors reach the admin in one line: server, command, the inner text (2010's RPC wrapping removed)
and the fix, classified on that text only. Sent with exmig's own PSRP transport to a lab 2010 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.commands import Blob, Command, LocalFile, Param, Secret, Switch, Text
from orchestrator.connect import session_spec
from orchestrator.lab.site import EmulatedServer, LabSite
from orchestrator.playbook import Server, load_playbook
from orchestrator.server_errors import classify, inner_text
from orchestrator.transport.base import RemoteError
from orchestrator.transport.psrp import ConnectionSettings, PsrpServerSession
from tests.e2e.conftest import LAB_PLAYBOOK


class Values:
    """The executor's side of a call: bytes and secrets by key."""

    def __init__(self, blobs: dict[str, bytes], secrets: dict[str, str]) -> None:
        self.blobs, self.secrets = blobs, secrets

    def blob(self, key: str) -> bytes:
        return self.blobs[key]

    def secret(self, key: str) -> str:
        return self.secrets[key]


@pytest.fixture
def ex2010(tmp_path: Path) -> Iterator[tuple[Server, EmulatedServer, LabSite]]:
    site = LabSite(load_playbook(LAB_PLAYBOOK).playbook, tmp_path / "lab", use_playbook_ports=False,
                   tls_services=False)
    site.start()
    try:
        yield site.playbook_for_lab().server("EX2010"), site.servers["EX2010"], site
    finally:
        site.stop()


def _session(server: Server, emulated: EmulatedServer) -> PsrpServerSession:
    return PsrpServerSession(session_spec(server), ConnectionSettings(
        host="127.0.0.1", auth="ntlm", username=emulated.username, password=emulated.password, verify_tls=False,
        operation_timeout=5, read_timeout=15))


def test_wrapped_errors_become_one_line_with_the_fix(ex2010: tuple[Server, EmulatedServer, LabSite]) -> None:
    server, emulated, _ = ex2010
    [default] = emulated.inspector.thumbprints("My")
    session = _session(server, emulated)
    try:
        values = Values({}, {"pw": "Pfx-Passw0rd!"})
        export = Command("Export-ExchangeCertificate", (
            Param("Thumbprint", Text(default)), Param("BinaryEncoded", Switch()), Param("Server", Text("EX2010"))))
        with pytest.raises(RemoteError) as caught:
            session.invoke(export, values)  # type: ignore[arg-type]
        assert caught.value.kind == "export-needs-password"
        line = str(caught.value)
        assert line == (f"EX2010: Export-ExchangeCertificate: The certificate with thumbprint {default} has a private "
                        "key; specify the Password parameter to export it; export with -Password (exmig always does; "
                        "a script without it gets this error)")
        assert "Rpc error" not in line and "\n" not in line
        assert caught.value.remote_message.startswith("A special Rpc error occurs on server EX2010: ")
        # The setup certificate's key is not exportable: the real inner text, classified on it.
        export_pfx = Command("Export-ExchangeCertificate", (*export.params, Param("Password", Secret("pw", "pw"))))
        with pytest.raises(RemoteError) as caught:
            session.invoke(export_pfx, values)  # type: ignore[arg-type]
        assert caught.value.kind == "key-not-exportable"
        assert str(caught.value).startswith("EX2010: Export-ExchangeCertificate: The private key couldn't be exported "
                                            "as PKCS-12. It either couldn't be accessed or isn't exportable; ")
        assert "certificate.private_key_exportable: true" in str(caught.value)
        # A PFX that the password does not open.
        garbage = Command("Import-ExchangeCertificate", (
            Param("FileData", Blob("pfx", LocalFile("x"))), Param("Password", Secret("pw", "pw")),
            Param("Server", Text("EX2010"))))
        values.blobs["pfx"] = _foreign_pfx()
        with pytest.raises(RemoteError) as caught:
            session.invoke(garbage, values)  # type: ignore[arg-type]
        assert caught.value.kind == "pfx-password"
        assert str(caught.value).startswith("EX2010: Import-ExchangeCertificate: The source data cannot be imported "
                                            "or the wrong password was specified; the PFX password")
    finally:
        session.close()


def _foreign_pfx() -> bytes:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other.example")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    legacy = (serialization.PrivateFormat.PKCS12.encryption_builder()
              .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1())
              .build(b"another password"))
    return pkcs12.serialize_key_and_certificates(b"x", key, cert, None, legacy)


@pytest.mark.parametrize(("message", "kind"), [
    ("A special Rpc error occurs on server EX1: Cannot import certificate. A certificate with the thumbprint "
     "ABC123 already exists.", "already-present"),
    ("A special Rpc error occurs on server EX1: The certificate with thumbprint ABC was found but is not valid for "
     "use with Exchange Server (reason: PrivateKeyMissing).", "private-key-missing"),
    # Classified on the text, whatever id or category came with it; an unknown text stays unclassified.
    ("The source data cannot be imported or the wrong password was specified.", "pfx-password"),
    ("A special Rpc error occurs on server EX1: Something nobody has seen.", None),
])
def test_classified_on_the_inner_text(message: str, kind: str | None) -> None:
    known = classify(message)
    assert (known.kind if known else None) == kind
    assert not inner_text(message).startswith("A special Rpc error")
