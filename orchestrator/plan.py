"""The migration as data: which commands run on which server, in what order, and why.

`build_plan(playbook, facts)` is pure: no network, no files. `facts` carries what is already
known (the CSR, the CA's certificate and chain); steps whose inputs are not known yet still
appear, with readable placeholders, so a dry-run before the CA has answered shows the whole
procedure. Executors rebuild the plan as facts arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from orchestrator.acme_issue.http01 import CHALLENGE_FOLDER as ACME_CHALLENGE_FOLDER
from orchestrator.commands import Blob, Command, LocalFile, Null, Param, Pending, Text, Thumbprint, text
from orchestrator.dialects import (
    Dialect,
    add_to_ca_store,
    add_to_root_store,
    dialect_for,
    ensure_folder,
    exported_pfx,
    read_stores,
    remote_path,
    remove_file,
    test_path,
    write_file,
)
from orchestrator.playbook import AcmeIssuer, Coexistence, FilesIssuer, LabIssuer, ManualIssuer, Playbook, Role, Server
from orchestrator.retire import PREVIOUS, export_backup, remove_certificate
from orchestrator.rollback import restore_backup


class StepName(str, Enum):
    REQUEST = "request"
    ISSUE = "issue"
    INSTALL_CHAIN = "install-chain"
    COMPLETE = "complete"
    ENABLE = "enable"
    EXPORT = "export"
    COPY = "copy"
    IMPORT = "import"
    CLEANUP = "cleanup"
    COEXISTENCE = "coexistence"
    VERIFY = "verify"
    RETIRE = "retire"


STEP_DESCRIPTIONS: dict[StepName, str] = {
    StepName.REQUEST: "source: New-ExchangeCertificate -GenerateRequest with the subject, the names and an "
                      "exportable key; exmig keeps the CSR",
    StepName.ISSUE: "workstation: the CA signs the CSR (manual: you submit it; files: read from disk; "
                    "lab: the rehearsal CA)",
    StepName.INSTALL_CHAIN: "every server: the CA's intermediate certificate(s) into LocalMachine\\CA "
                            "(certutil -addstore CA); with issuer.install_root its root into LocalMachine\\Root",
    StepName.COMPLETE: "source: Import-ExchangeCertificate with the CA's certificate completes the pending request",
    StepName.ENABLE: "every server: Enable-ExchangeCertificate -Services ... -Force (the SMTP overwrite answered)",
    StepName.EXPORT: "source: Export-ExchangeCertificate -BinaryEncoded -Password gives the PFX (kept in memory)",
    StepName.COPY: "2007 targets: write the PFX into the working folder (2007 imports from -Path)",
    StepName.IMPORT: "targets: Import-ExchangeCertificate with the PFX and its password (2007 -Path, 2010 -FileData)",
    StepName.CLEANUP: "2007 targets: remove the PFX from the working folder",
    StepName.COEXISTENCE: "2007 targets, with a coexistence section: the listed virtual directories' ExternalUrl moved "
                          "to the legacy host (Set-OwaVirtualDirectory ... -ExternalUrl https://legacy...), where "
                          "different; the values before are journaled for exmig rollback",
    StepName.VERIFY: "every server: Get-ExchangeCertificate by thumbprint reads the result back",
    StepName.RETIRE: "with retire_previous: every server: each certificate that served before and serves nothing "
                     "now is backed up (Export-ExchangeCertificate, a 0600 PFX beside the journal) and removed "
                     "(Remove-ExchangeCertificate by thumbprint)",
}

WORKSTATION = "workstation"


@dataclass(frozen=True)
class IntermediateFact:
    thumbprint: str
    subject: str
    file: str  # where the admin's copy is (shown by the dry-run)
    member: str | None  # set when `file` is a bundle holding more than this certificate
    der: bytes = field(repr=False)


@dataclass(frozen=True)
class RootFact:
    """The CA's root as the admin holds it, when the playbook says issuer.install_root (orchestrator/roots.py)."""

    thumbprint: str
    subject: str
    file: str
    der: bytes = field(repr=False)


@dataclass(frozen=True)
class Facts:
    """What is known before planning. Bytes are carried so the executor can send them; the plan
    only refers to them by key."""

    csr_pem: str | None = None
    issued_thumbprint: str | None = None
    issued_subject: str | None = None
    # Where the admin gave the CA's files (rendered in the dry-run as the file to read).
    issued_file: str | None = None
    issued_member: str | None = None
    intermediates: tuple[IntermediateFact, ...] = ()
    root: RootFact | None = None


class BranchName(str, Enum):
    RECOVER = "recover"  # request: export the CSR of a pending request whose reply was lost
    LEFTOVERS = "leftovers"  # install-chain: remove files an interrupted attempt left
    WITH_ENABLE = "with-enable"  # complete/import: this server's Enable in the same pipeline
    COPY = "copy"  # 2007 import: write this run's PFX first
    DISCARD = "discard"  # 2007 import: remove the PFX after a failed import
    WHERE_DIFFERENT = "where-different"  # coexistence: each URL set only where it differs
    BACKUP = "backup"  # retire: export a certificate before its removal
    REMOVE = "remove"  # retire: remove it
    ROLLBACK = "rollback"  # verify, with rollback_on_failure: enable what served before again


@dataclass(frozen=True)
class Branch:
    """Commands a step sends only in some situations, with the situation in words (the dry-run shows both)."""

    name: BranchName
    when: str
    commands: tuple[Command, ...]


@dataclass(frozen=True)
class Step:
    name: StepName
    server: str  # a playbook server name, or WORKSTATION
    why: str
    commands: tuple[Command, ...] = ()
    # For steps that run on the workstation: what happens there.
    local_action: str | None = None
    # What the step may read before deciding (orchestrator/reads.py), and what it may send besides `commands`.
    reads: tuple[Command, ...] = ()
    reads_when: str | None = None  # None: always read (where not known already)
    branches: tuple[Branch, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.server}:{self.name.value}"

    def branch(self, name: BranchName) -> tuple[Command, ...]:
        return next((b.commands for b in self.branches if b.name is name), ())

    @property
    def unresolved(self) -> list[str]:
        seen: list[str] = []
        for command in self.commands:
            for item in command.unresolved:
                if item not in seen:
                    seen.append(item)
        return seen


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    def select(self, servers: list[str] | None = None, steps: list[str] | None = None) -> Plan:
        wanted_servers = {s.lower() for s in servers} if servers else None
        wanted_steps = set(steps) if steps else None
        return Plan(tuple(
            s for s in self.steps
            if (wanted_servers is None or s.server.lower() in wanted_servers)
            and (wanted_steps is None or s.name.value in wanted_steps)
        ))

    def for_server(self, name: str) -> list[Step]:
        return [s for s in self.steps if s.server.lower() == name.lower()]

    @property
    def servers(self) -> list[str]:
        out: list[str] = []
        for step in self.steps:
            if step.server not in out:
                out.append(step.server)
        return out


def csr_file_name(playbook: Playbook) -> str:
    return f"{playbook.certificate.subject.CN}.csr"


def pfx_file_name(playbook: Playbook) -> str:
    return f"{playbook.certificate.subject.CN}.pfx"


def _issued_blob(facts: Facts) -> Blob:
    if facts.issued_file is not None and facts.issued_thumbprint is not None:
        return Blob("issued-certificate", LocalFile(facts.issued_file, facts.issued_member))
    return Blob("issued-certificate", Pending("the certificate file from the CA"))


def _chain_blobs(facts: Facts) -> list[tuple[str, Blob]]:
    """(file name on the server, blob) for each intermediate, or one placeholder while unknown."""
    if facts.issued_thumbprint is None:
        return [("intermediate.cer", Blob("intermediate", Pending("the intermediate certificate from the CA")))]
    return [
        (f"intermediate-{i.thumbprint[:8].lower()}.cer",
         Blob(f"intermediate:{i.thumbprint}", LocalFile(i.file, i.member)))
        for i in facts.intermediates
    ]


def _root_blob(facts: Facts) -> tuple[str, Blob]:
    if facts.root is None:
        return "root.cer", Blob("root", Pending("the CA's root certificate (issuer.root: FILE)"))
    return f"root-{facts.root.thumbprint[:8].lower()}.cer", Blob(f"root:{facts.root.thumbprint}",
                                                                 LocalFile(facts.root.file))


def _install_chain(server: Server, facts: Facts, install_root: bool = False) -> Step | None:
    commands: list[Command] = [ensure_folder(server)]
    if install_root:
        # Exchange imports only a certificate whose root the server trusts (orchestrator/roots.py).
        file_name, blob = _root_blob(facts)
        path = remote_path(server, file_name)
        commands += [write_file(server, path, blob), add_to_root_store(server, path), remove_file(server, path)]
    for file_name, blob in _chain_blobs(facts):
        path = remote_path(server, file_name)
        commands += [write_file(server, path, blob), add_to_ca_store(server, path), remove_file(server, path)]
    if len(commands) == 1:
        return None  # the CA's certificate chains straight to a root: nothing to install
    leftovers: list[Command] = []
    for command in commands:
        if command.name == "Remove-Item":
            target = command.param("Path")
            assert isinstance(target, Text)
            leftovers += [test_path(target.value), command]
    return Step(StepName.INSTALL_CHAIN, server.name,
                "Clients only trust the certificate if the server sends the CA's intermediate; "
                "Exchange builds that chain from LocalMachine\\CA.", tuple(commands),
                reads=(read_stores(),),
                branches=(Branch(BranchName.LEFTOVERS, "if the stores hold the chain already: each file an "
                                 "interrupted attempt left is removed (Remove-Item where Test-Path finds it)",
                                 tuple(leftovers)),))


def _issue_action(playbook: Playbook, facts: Facts) -> str:
    issuer = playbook.issuer
    if facts.issued_thumbprint is not None:
        return f"use the CA's certificate {facts.issued_thumbprint} ({facts.issued_file or 'given'})"
    if isinstance(issuer, ManualIssuer):
        return ("write the CSR to " + (issuer.csr_file or csr_file_name(playbook))
                + "; submit it to your CA, then run again with --certificate FILE (and --chain FILE)")
    if isinstance(issuer, FilesIssuer):
        return "read the CA's certificate and chain from " + ", ".join(
            [p for p in [issuer.certificate, issuer.bundle] if p] + list(issuer.chain))
    if isinstance(issuer, AcmeIssuer):
        if issuer.challenge == "dns-01":
            assert issuer.dns is not None
            how = (f"dns-01: _acme-challenge TXT records added to {issuer.dns.zone} at {issuer.dns.server} (RFC 2136, "
                   f"TSIG key {issuer.dns.tsig_name}), removed afterwards")
        else:
            servers = sorted({s for name in playbook.certificate.domains
                              for s in issuer.servers_for(name, playbook.servers, playbook.certificate)})
            how = (f"http-01: each name's token written under {ACME_CHALLENGE_FOLDER} on {', '.join(servers)} "
                   "(New-Item, Set-Content -Encoding Ascii with a web.config beside it), removed afterwards "
                   "(Remove-Item)")
        return f"finalize the CSR over ACME at {issuer.directory}; {how}"
    assert isinstance(issuer, LabIssuer)
    return "sign the CSR with the rehearsal lab's CA"


WITH_ENABLE_WHEN = ("in the same pipeline as the import, where the server takes several statements (PSRP 2.2+) "
                    "and the enable step is still to do")


def _with_enable(enable: Command) -> Branch:
    return Branch(BranchName.WITH_ENABLE, WITH_ENABLE_WHEN, (enable,))


def _certificates_read(dialect: Dialect, server: Server) -> tuple[Command, ...]:
    return (dialect.list_certificates(server),)


def _coexistence_step(server: Server, spec: Coexistence) -> Step:
    from orchestrator.coexistence import vdir_read, wanted
    from orchestrator.names_in_use import VDIR_BY_KEY

    reads = tuple(vdir_read(server.name, service).command for service in spec.service_names)
    sets: list[Command] = []
    for service in spec.service_names:
        kind = VDIR_BY_KEY[service]
        url = wanted(service, spec)
        # The identity the read returns; a default install's is shown ("EX2007\owa (Default Web Site)").
        identity = f"{server.name}\\{kind.name} (Default Web Site)"
        sets.append(Command(f"Set-{kind.noun}", (text("Identity", identity),
                                                 Param("ExternalUrl", Text(url) if url is not None else Null())),
                            affects=frozenset({"virtual_directories"})))
    return Step(StepName.COEXISTENCE, server.name,
                f"Exchange 2007 keeps serving its own mailboxes under {spec.legacy_host} once the primary names move "
                "to Exchange 2010.", reads=reads,
                branches=(Branch(BranchName.WHERE_DIFFERENT, "for each virtual directory whose ExternalUrl differs "
                                 "(the value before is journaled first, for exmig rollback)", tuple(sets)),))


def _with_coexistence(playbook: Playbook, spec: Coexistence, steps: list[Step]) -> list[Step]:
    """The coexistence step after each 2007 server's enable (the certificate that covers the legacy host is in
    place there first); the source only with coexistence.on_source."""
    out: list[Step] = []
    for step in steps:
        out.append(step)
        if step.name is not StepName.ENABLE:
            continue
        server = playbook.server(step.server)
        if server.version == 2007 and (server.role is Role.TARGET or spec.on_source):
            out.append(_coexistence_step(server, spec))
    return out


def build_plan(playbook: Playbook, facts: Facts = Facts()) -> Plan:
    source = playbook.source
    cert = playbook.certificate
    thumb = Thumbprint(facts.issued_thumbprint)
    pfx_name = pfx_file_name(playbook)
    src = dialect_for(source)
    steps: list[Step] = []
    source_reads = _certificates_read(src, source)

    steps.append(Step(
        StepName.REQUEST, source.name,
        "The key is generated on the source and never leaves it until the PFX export; it must be "
        "exportable so the certificate can go to the other servers.",
        tuple(src.new_request(source, cert, remote_path(source, csr_file_name(playbook)))),
        reads=source_reads,
        branches=(Branch(BranchName.RECOVER, "if a pending request for these names exists but its CSR is not in the "
                         "journal (an earlier reply was lost), instead of a new request: its CSR is exported again",
                         (src.export_request(source, Thumbprint(None, "thumbprint of the pending request")),)),),
    ))
    steps.append(Step(StepName.ISSUE, WORKSTATION, "A third-party CA signs the request so every client trusts it.",
                      local_action=_issue_action(playbook, facts)))

    issued_name = f"{cert.subject.CN}.cer"
    # http-01 renewals need the Default Web Site to answer plain HTTP (Dialect.enable).
    keep_http = isinstance(playbook.issuer, AcmeIssuer) and playbook.issuer.challenge == "http-01"
    source_enable = src.enable(source, thumb, source.services_for(cert), keep_http)
    source_steps = [
        _install_chain(source, facts, playbook.issuer.install_root),
        Step(StepName.COMPLETE, source.name,
             "Importing the CA's answer on the server that holds the pending request joins it with its private key.",
             tuple(src.import_response(source, _issued_blob(facts), issued_name)),
             reads=source_reads, reads_when="unless this run made the request",
             branches=(_with_enable(source_enable),)),
        Step(StepName.ENABLE, source.name,
             "Bind the certificate to the services; -Force answers the SMTP overwrite prompt.",
             (source_enable,), reads=source_reads, reads_when="unless this run imported the certificate"),
        Step(StepName.EXPORT, source.name,
             "The other servers need the private key too: export it as a password-protected PFX.",
             tuple(src.export(source, thumb, pfx_name)), reads=source_reads,
             reads_when="unless this run imported the certificate"),
    ]
    steps += [s for s in source_steps if s is not None]

    pfx = exported_pfx(pfx_name)
    for target in playbook.targets:
        assert target.role is Role.TARGET
        dialect = dialect_for(target)
        reads = _certificates_read(dialect, target)
        enable = dialect.enable(target, thumb, target.services_for(cert), keep_http)
        chain = _install_chain(target, facts, playbook.issuer.install_root)
        if chain is not None:
            steps.append(chain)
        imports = tuple(dialect.import_pfx(target, pfx, pfx_name, cert.exportable_on_targets))
        branches: tuple[Branch, ...] = (_with_enable(enable),)
        if target.version == 2007:
            path = remote_path(target, pfx_name)
            copy = (ensure_folder(target), write_file(target, path, pfx))
            steps.append(Step(StepName.COPY, target.name,
                              "Exchange 2007 imports a PFX only from a file on the server itself.", copy, reads=reads))
            branches = (
                Branch(BranchName.COPY, "first, if this run has not written the PFX (a file an earlier run left "
                       "carries that run's password)", copy),
                *branches,
                Branch(BranchName.DISCARD, "if the import fails: the PFX holds the private key (Remove-Item where "
                       "Test-Path finds it)", (test_path(path), remove_file(target, path))),
            )
        steps.append(Step(StepName.IMPORT, target.name, "Import the certificate with its private key from the PFX.",
                          imports, reads=reads, branches=branches))
        if target.version == 2007:
            path = remote_path(target, pfx_name)
            steps.append(Step(StepName.CLEANUP, target.name,
                              "The PFX holds the private key: it must not stay on the server's disk.",
                              (remove_file(target, path),), reads=(test_path(path),),
                              reads_when="unless this run wrote the file"))
        steps.append(Step(StepName.ENABLE, target.name,
                          "Bind the certificate to the services; -Force answers the SMTP overwrite prompt.",
                          (enable,), reads=reads, reads_when="unless this run imported the certificate"))

    if playbook.coexistence is not None:
        steps = _with_coexistence(playbook, playbook.coexistence, steps)

    for server in playbook.servers:
        # Read back fresh, and found by thumbprint (unique, unlike the names) in the server's list.
        dialect = dialect_for(server)
        rollback: tuple[Branch, ...] = ()
        if playbook.rollback_on_failure:
            rollback = (Branch(BranchName.ROLLBACK, "if the verification fails (rollback_on_failure): each certificate "
                               "recorded as serving before is enabled again for the services it had (a retired one "
                               "imported from its backup first, the Import lines), then the run stops",
                               (*restore_backup(server, "PREVIOUS", None),
                                dialect.enable(server, PREVIOUS, server.services_for(cert)))),)
        steps.append(Step(StepName.VERIFY, server.name,
                          "Read the certificate back and find it by thumbprint (unique, unlike the names).",
                          reads=_certificates_read(dialect, server), branches=rollback))
        if playbook.retire_previous:
            steps.append(_retire(server))
    return Plan(tuple(steps))


def _retire(server: Server) -> Step:
    """The thumbprints are facts of the server (the preflight's record, the certificates and TLS endpoints now):
    the plan shows the commands for one such certificate."""
    return Step(StepName.RETIRE, server.name,
                "The certificate that served before is removed by exact thumbprint once nothing uses it (no TLS "
                "endpoint presents it, IIS is not bound to it, it is not the default SMTP certificate), after its "
                "backup is on the workstation's disk; reads the certificates and what each TLS endpoint presents.",
                reads=_certificates_read(dialect_for(server), server),
                branches=(Branch(BranchName.BACKUP, "for each certificate that served before and serves nothing now: "
                                 "its PFX, written 0600 beside the journal and opened with the backup password before "
                                 "anything is removed", export_backup(server, PREVIOUS)),
                          Branch(BranchName.REMOVE, "then each such certificate (never the new one, one still bound, "
                                 "the default SMTP certificate, or Exchange's self-signed one unless "
                                 "retire_self_signed)", (remove_certificate(server, PREVIOUS),))))
