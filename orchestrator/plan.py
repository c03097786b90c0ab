"""The migration as data: which commands run on which server, in what order, and why.

`build_plan(playbook, facts)` is pure: no network, no files. `facts` carries what is already
known (the CSR, the CA's certificate and chain); steps whose inputs are not known yet still
appear, with readable placeholders, so a dry-run before the CA has answered shows the whole
procedure. Executors rebuild the plan as facts arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from orchestrator.commands import Blob, Command, LocalFile, Pending, Thumbprint
from orchestrator.dialects import (
    add_to_ca_store,
    add_to_root_store,
    dialect_for,
    ensure_folder,
    exported_pfx,
    remote_path,
    remove_file,
    write_file,
)
from orchestrator.playbook import FilesIssuer, LabIssuer, ManualIssuer, Playbook, Role, Server


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
    VERIFY = "verify"


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
    StepName.VERIFY: "every server: Get-ExchangeCertificate by thumbprint reads the result back",
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


@dataclass(frozen=True)
class Step:
    name: StepName
    server: str  # a playbook server name, or WORKSTATION
    why: str
    commands: tuple[Command, ...] = ()
    # For steps that run on the workstation: what happens there.
    local_action: str | None = None

    @property
    def key(self) -> str:
        return f"{self.server}:{self.name.value}"

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
    return Step(StepName.INSTALL_CHAIN, server.name,
                "Clients only trust the certificate if the server sends the CA's intermediate; "
                "Exchange builds that chain from LocalMachine\\CA.", tuple(commands))


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
    assert isinstance(issuer, LabIssuer)
    return "sign the CSR with the rehearsal lab's CA"


def build_plan(playbook: Playbook, facts: Facts = Facts()) -> Plan:
    source = playbook.source
    cert = playbook.certificate
    thumb = Thumbprint(facts.issued_thumbprint)
    pfx_name = pfx_file_name(playbook)
    src = dialect_for(source)
    steps: list[Step] = []

    steps.append(Step(
        StepName.REQUEST, source.name,
        "The key is generated on the source and never leaves it until the PFX export; it must be "
        "exportable so the certificate can go to the other servers.",
        tuple(src.new_request(source, cert, remote_path(source, csr_file_name(playbook)))),
    ))
    steps.append(Step(StepName.ISSUE, WORKSTATION, "A third-party CA signs the request so every client trusts it.",
                      local_action=_issue_action(playbook, facts)))

    issued_name = f"{cert.subject.CN}.cer"
    source_steps = [
        _install_chain(source, facts, playbook.issuer.install_root),
        Step(StepName.COMPLETE, source.name,
             "Importing the CA's answer on the server that holds the pending request joins it with its private key.",
             tuple(src.import_response(source, _issued_blob(facts), issued_name))),
        Step(StepName.ENABLE, source.name,
             "Bind the certificate to the services; -Force answers the SMTP overwrite prompt.",
             (src.enable(source, thumb, source.services_for(cert)),)),
        Step(StepName.EXPORT, source.name,
             "The other servers need the private key too: export it as a password-protected PFX.",
             tuple(src.export(source, thumb, pfx_name))),
    ]
    steps += [s for s in source_steps if s is not None]

    pfx = exported_pfx(pfx_name)
    for target in playbook.targets:
        assert target.role is Role.TARGET
        dialect = dialect_for(target)
        chain = _install_chain(target, facts, playbook.issuer.install_root)
        if chain is not None:
            steps.append(chain)
        if target.version == 2007:
            path = remote_path(target, pfx_name)
            steps.append(Step(StepName.COPY, target.name,
                              "Exchange 2007 imports a PFX only from a file on the server itself.",
                              (ensure_folder(target), write_file(target, path, pfx))))
        steps.append(Step(StepName.IMPORT, target.name,
                          "Import the certificate with its private key from the PFX.",
                          tuple(dialect.import_pfx(target, pfx, pfx_name, cert.exportable_on_targets))))
        if target.version == 2007:
            steps.append(Step(StepName.CLEANUP, target.name,
                              "The PFX holds the private key: it must not stay on the server's disk.",
                              (remove_file(target, remote_path(target, pfx_name)),)))
        steps.append(Step(StepName.ENABLE, target.name,
                          "Bind the certificate to the services; -Force answers the SMTP overwrite prompt.",
                          (dialect.enable(target, thumb, target.services_for(cert)),)))

    for server in playbook.servers:
        steps.append(Step(StepName.VERIFY, server.name,
                          "Read the certificate back by thumbprint (unique, unlike the names).",
                          (dialect_for(server).get_certificate(server, thumb),)))
    return Plan(tuple(steps))
