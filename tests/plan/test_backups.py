"""Issue 18: the retired certificates' backups on the workstation, their password, and the record of what
served before when the server sends RawData only."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from cryptography.x509.oid import NameOID

from orchestrator.backups import backup_folder, backup_path, check_backup, write_backup
from orchestrator.certs import thumbprint
from orchestrator.errors import ExmigError, UsageError
from orchestrator.playbook import SecretRef, load_playbook
from orchestrator.previous import held, served_before
from orchestrator.secrets_store import BACKUP_PASSWORD, PFX_PASSWORD, SecretStore
from tests.conftest import ROOT

PASSWORD = "Backup-Passw0rd!"  # noqa: S105 - a test's password


def _cert(cn: str, issuer_key: rsa.RSAPrivateKey | None = None) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(1))
            .sign(issuer_key or key, hashes.SHA256()))
    return cert, key


def _pfx(cert: x509.Certificate, key: rsa.RSAPrivateKey, password: str) -> bytes:
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption

    return pkcs12.serialize_key_and_certificates(b"x", key, cert, None, BestAvailableEncryption(password.encode()))


def test_a_backup_is_written_0600_beside_the_journal_and_never_overwritten(tmp_path: Path) -> None:
    journal = tmp_path / "journal.json"
    first, written = write_backup(journal, "EX2007", "a1b2", b"first")
    assert written and first == backup_path(journal, "EX2007", "A1B2") == tmp_path / "journal.backups" / "EX2007-A1B2.pfx"
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600 and stat.S_IMODE(os.stat(backup_folder(journal)).st_mode) == 0o700
    again, written = write_backup(journal, "EX2007", "A1B2", b"second")
    assert again == first and not written and first.read_bytes() == b"first"
    assert sorted(p.name for p in backup_folder(journal).iterdir()) == ["EX2007-A1B2.pfx"]  # no partial file left


def test_a_server_name_cannot_walk_out_of_the_backup_folder(tmp_path: Path) -> None:
    path = backup_path(tmp_path / "journal.json", "../../etc/EX", "AB")
    assert path.parent == tmp_path / "journal.backups"


def test_check_backup_opens_it_with_the_password_and_finds_the_certificate() -> None:
    cert, key = _cert("mail.mitserv.net")
    data = _pfx(cert, key, PASSWORD)
    check_backup(data, PASSWORD, thumbprint(cert))
    with pytest.raises(ExmigError, match=r"does not open with the backup password; nothing was removed"):
        check_backup(data, "wrong", thumbprint(cert))
    other, _ = _cert("other.mitserv.net")
    with pytest.raises(ExmigError, match=r"does not hold that certificate with its private key"):
        check_backup(data, PASSWORD, thumbprint(other))


def test_self_signed_is_read_from_rawdata_when_the_server_sends_nothing_else() -> None:
    own, own_key = _cert("EX2010")
    # Issuer and subject alike, but signed by another key: not self-signed (RootCAType would not tell either).
    issued, _ = _cert("mail.mitserv.net", issuer_key=own_key)
    same_name_other_key, _ = _cert("EX2010", issuer_key=rsa.generate_private_key(public_exponent=65537,
                                                                                 key_size=2048))
    certs = held([{"RawData": c.public_bytes(Encoding.DER)} for c in (own, issued, same_name_other_key)])
    assert [(c.thumbprint, c.self_signed, c.exportable) for c in certs] == [
        (thumbprint(own), True, None), (thumbprint(issued), False, None), (thumbprint(same_name_other_key), False, None)]
    record = served_before("EX2010", held([{"RawData": own.public_bytes(Encoding.DER)}]), {"https": thumbprint(own)})
    assert record["services"] == {"IIS": thumbprint(own), "SMTP": None, "POP": None, "IMAP": None}
    assert record["learned_from"] == {"IIS": "tls", "SMTP": "unknown", "POP": "unknown", "IMAP": "unknown"}
    assert record["certificates"][thumbprint(own)]["self_signed"] is True


def test_the_backup_password_is_its_own_secret_or_the_known_pfx_password(monkeypatch: pytest.MonkeyPatch) -> None:
    playbook = load_playbook(ROOT / "playbooks" / "lab.yml").playbook
    monkeypatch.setenv("EXMIG_BACKUP", PASSWORD)
    own = playbook.model_copy(update={"backup_password": SecretRef(env="EXMIG_BACKUP")})
    store = SecretStore(own, interactive=False)
    store.resolve([], pfx_password=True, backup_password=True)
    assert store.secret(BACKUP_PASSWORD) == PASSWORD and store.secret(PFX_PASSWORD) != PASSWORD
    monkeypatch.setenv("EXMIG_PFX", "Known-Pfx-Passw0rd!")
    shared = playbook.model_copy(update={"pfx_password": SecretRef(env="EXMIG_PFX")})
    store = SecretStore(shared, interactive=False)
    store.resolve([], pfx_password=True, backup_password=True)
    assert store.secret(BACKUP_PASSWORD) == store.secret(PFX_PASSWORD) == "Known-Pfx-Passw0rd!"
    with pytest.raises(UsageError, match=r"backup_password: no password for the backups \(pfx_password is generated\)"):
        SecretStore(playbook, interactive=False).secret(BACKUP_PASSWORD)
