"""Issue 18 against the lab: the record of what served before, the retire and rollback decisions' commands sent
as they are with raw pypsrp, and the backups they leave. The step machinery that will send them (issue 15) is not
under test here: this proves the decisions' commands do on a server what the decisions say."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import TaggedValue
from pypsrp.wsman import WSMan

from orchestrator.backups import backup_path, check_backup, write_backup
from orchestrator.commands import Blob, Command, Flag, LocalFile, Number, Secret, Shell, Switch, Text, TextList
from orchestrator.decision import Noop, Send
from orchestrator.lab.ca import thumbprint
from orchestrator.lab.exchange import EMS_2007_SNAPIN
from orchestrator.lab.exchange.model import MY, CertEntry
from orchestrator.lab.exchange.pki import der, key_pem
from orchestrator.lab.options import LabBehaviour
from orchestrator.lab.site import EmulatedServer, LabSite
from orchestrator.playbook import load_playbook
from orchestrator.previous import Held, held_certificates, served_before
from orchestrator.retire import RetireOptions, backup_capture, retire
from orchestrator.rollback import rollback
from orchestrator.secrets_store import BACKUP_PASSWORD
from orchestrator.verify.tls_probe import SERVICE_KINDS, probe

from .test_previous_certificate import LAB_PLAYBOOK

BACKUP_PW = "Backup-Passw0rd!"  # noqa: S105 - a test's password


class Shells:
    """One server's sessions, as exmig keeps them: the Exchange shell and the full-language one."""

    def __init__(self, server: EmulatedServer) -> None:
        self.server = server
        self.pools: dict[Shell, RunspacePool] = {}

    def _open(self, path: str, configuration: str) -> RunspacePool:
        wsman = WSMan("127.0.0.1", port=self.server.winrm.port, path=path, ssl=False, auth="ntlm",
                      username=self.server.username, password=self.server.password, operation_timeout=5,
                      read_timeout=10)
        rp = RunspacePool(wsman, configuration_name=configuration)
        rp.open()
        rp.exchange_keys()  # SecureString parameters need the session key
        return rp

    def pool(self, shell: Shell) -> RunspacePool:
        if self.server.server.version == 2007:
            shell = Shell.SYSTEM  # one session: the snap-in in Microsoft.PowerShell
        if shell not in self.pools:
            if shell is Shell.EXCHANGE:
                self.pools[shell] = self._open("PowerShell", "Microsoft.Exchange")
            else:
                self.pools[shell] = self._open("wsman", "Microsoft.PowerShell")
                if self.server.server.version == 2007:
                    self.run_raw(self.pools[shell], "Add-PSSnapin", {"Name": EMS_2007_SNAPIN})
        return self.pools[shell]

    @staticmethod
    def run_raw(rp: RunspacePool, name: str, params: dict[str, Any]) -> list[Any]:
        ps = PowerShell(rp)
        ps.add_cmdlet(name)
        for key, value in params.items():
            ps.add_parameter(key, value)
        out = ps.invoke()
        assert not ps.had_errors, (name, [str(e) for e in ps.streams.error])
        return out

    def send(self, command: Command, captured: dict[str, bytes]) -> list[Any]:
        """A Command exactly as it is: cmdlet and typed parameters (secrets as SecureString)."""
        params: dict[str, Any] = {}
        for p in command.params:
            v = p.value
            assert p.name is not None
            if isinstance(v, Text):
                params[p.name] = v.value
            elif isinstance(v, TextList):
                params[p.name] = list(v.values)
            elif isinstance(v, (Switch,)):
                params[p.name] = v.present
            elif isinstance(v, Flag):
                params[p.name] = v.value
            elif isinstance(v, Number):
                params[p.name] = v.value
            elif isinstance(v, Secret):
                assert v.key == BACKUP_PASSWORD
                params[p.name] = TaggedValue("SS", BACKUP_PW)
            elif isinstance(v, Blob):
                assert isinstance(v.origin, LocalFile)
                params[p.name] = Path(v.origin.path).read_bytes()
            else:
                params[p.name] = v.value  # Thumbprint
        out = self.run_raw(self.pool(command.shell), command.name, params)
        if command.capture:
            captured[command.capture] = _bytes(out)
        return out

    def certificates(self) -> list[Held]:
        """The decisions' fact, read with the command it declares."""
        read = held_certificates(self.server.server)
        return read.parse([o.adapted_properties for o in self.send(read.command, {})])

    def close(self) -> None:
        for rp in self.pools.values():
            rp.close()


def _bytes(out: list[Any]) -> bytes:
    for item in out:
        if isinstance(item, (bytes, bytearray)):
            return bytes(item)
        props = getattr(item, "adapted_properties", {})
        if isinstance(props.get("FileData"), (bytes, bytearray)):
            return bytes(props["FileData"])
    return b""


def _presented(server: EmulatedServer) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for kind in SERVICE_KINDS:
        seen = probe("127.0.0.1", server.tls.ports[kind], kind, "mail.mitserv.net", timeout=10)
        out[kind] = seen.assessment.leaf_thumbprint if seen.assessment else None
    return out


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Any]:
    """lab(faulty=()) -> a started LabSite with the previous certificate; stopped after the sessions closed."""
    started: list[LabSite] = []

    def start(faulty: tuple[str, ...] = ()) -> LabSite:
        site = LabSite(load_playbook(LAB_PLAYBOOK), tmp_path / "lab", use_playbook_ports=False)
        site.settings = LabBehaviour(previous_certificate=True, enable_keeps_iis_binding=faulty).apply(site.settings)
        started.append(site.start())
        return site

    yield start
    for site in started:
        site.stop()


@pytest.fixture
def shells(lab: Any) -> Iterator[list[Shells]]:
    opened: list[Shells] = []
    yield opened
    for s in opened:
        s.close()


@pytest.mark.parametrize("name", ["EX2010", "EX2007"])
def test_record_retire_and_rollback_from_the_backup(tmp_path: Path, lab: Any, shells: list[Shells], name: str) -> None:
    site = lab()
    server = site.servers[name]
    sh = Shells(server)
    shells.append(sh)
    previous = _presented(server)["https"]
    assert previous is not None
    own = next(t for t in server.inspector.thumbprints(MY) if t != previous)

    # (a) What served before, as the journal will hold it.
    record = served_before(name, sh.certificates(), _presented(server))
    assert record["services"] == dict.fromkeys(("IIS", "SMTP", "POP", "IMAP"), previous)
    assert record["learned_from"] == dict.fromkeys(("IIS", "SMTP", "POP", "IMAP"), "tls")
    assert record["certificates"][previous]["exportable"] is True
    assert record["certificates"][previous]["self_signed"] is False
    assert json.loads(json.dumps(record)) == record

    new = _new_certificate(site, server)
    enable = {"Thumbprint": new, "Services": ["IIS", "SMTP", "POP", "IMAP"], "Force": True}
    sh.run_raw(sh.pool(Shell.EXCHANGE), "Enable-ExchangeCertificate",
               {**enable, **({"Server": name} if server.server.version == 2010 else {})})
    now = _presented(server)
    assert now == dict.fromkeys(SERVICE_KINDS, new)

    # (b) Retire: the backup first, kept on disk and checked, then the removal.
    decision = retire(server.server, sh.certificates(), record, new, now, RetireOptions(), default_smtp=new)
    assert isinstance(decision, Send), decision
    journal = tmp_path / "journal.json"
    captured: dict[str, bytes] = {}
    for pipeline in decision.pipelines:
        for command in pipeline:
            if command.name == "Remove-ExchangeCertificate":
                data = captured[backup_capture(previous)]
                check_backup(data, BACKUP_PW, previous)
                write_backup(journal, name, previous, data)
            sh.send(command, captured)
    kept = backup_path(journal, name, previous)
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    key, cert, _ = pkcs12.load_key_and_certificates(kept.read_bytes(), BACKUP_PW.encode())
    assert key is not None and cert is not None and thumbprint(cert) == previous
    left = {c.thumbprint for c in sh.certificates()}
    assert previous not in left and own in left and new in left  # the self-signed certificate stays
    assert _presented(server) == dict.fromkeys(SERVICE_KINDS, new)
    assert server.inspector.file(f"C:\\Certs\\exmig-backup-{previous}.pfx") is None  # no PFX left on 2007
    # A second run: nothing to do.
    again = retire(server.server, sh.certificates(), record, new, _presented(server), RetireOptions(),
                   default_smtp=new)
    assert again == Noop(f"{previous} is gone already")

    # (c) Roll back from the backup: every service presents the previous certificate again.
    back = rollback(server.server, sh.certificates(), record, _presented(server), backups={previous: kept})
    assert isinstance(back, Send), back
    for pipeline in back.pipelines:
        for command in pipeline:
            sh.send(command, {})
    assert _presented(server) == dict.fromkeys(SERVICE_KINDS, previous)
    assert rollback(server.server, sh.certificates(), record, _presented(server)) == Noop(
        f"{previous} serves IIS, SMTP, POP, IMAP as before")


def test_after_the_binding_fault_the_rollback_restores_every_service(lab: Any, shells: list[Shells]) -> None:
    site = lab(faulty=("EX2007",))
    server = site.servers["EX2007"]
    sh = Shells(server)
    shells.append(sh)
    record = served_before("EX2007", sh.certificates(), _presented(server))
    previous = record["services"]["IIS"]
    new = _new_certificate(site, server)
    sh.run_raw(sh.pool(Shell.EXCHANGE), "Enable-ExchangeCertificate",
               {"Thumbprint": new, "Services": ["IIS", "SMTP", "POP", "IMAP"], "Force": True})
    now = _presented(server)
    assert now["https"] == previous and now["smtp"] == new  # what a verify after enable catches
    # Retiring now would break HTTPS: the decision keeps it.
    kept = retire(server.server, sh.certificates(), record, new, now, RetireOptions(), default_smtp=new)
    assert kept == Noop(f"{previous} still serves IIS")
    back = rollback(server.server, sh.certificates(), record, now)
    assert isinstance(back, Send)
    for pipeline in back.pipelines:
        for command in pipeline:
            sh.send(command, {})
    assert _presented(server) == dict.fromkeys(SERVICE_KINDS, previous)


def _new_certificate(site: LabSite, server: EmulatedServer) -> str:
    """The migration's outcome, set up directly on the model (not under test): the new certificate from the lab CA
    for the playbook's names, with its key, as Import-ExchangeCertificate leaves it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = site.playbook.certificate.domains
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(key, hashes.SHA256()))
    cert = site.ca.sign_csr(csr.public_bytes(serialization.Encoding.DER))
    with server.model.transaction():
        server.model.put(CertEntry(MY, der(cert), key_pem(key), exportable=True, friendly_name="mitserv.net"))
    return thumbprint(cert)
