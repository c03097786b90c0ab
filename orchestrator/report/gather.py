"""From what exmig already knows to a `Report`: pure functions over the plan's text, the journal and the
verify findings (the CLI reads those; nothing here connects, prompts or touches files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cryptography import x509

from orchestrator.certs import thumbprint
from orchestrator.journal import Journal, StepRecord
from orchestrator.playbook import Playbook
from orchestrator.report.model import (
    CertificateRecord,
    ChainCertificate,
    PlannedStep,
    Report,
    SectionTable,
    ServerSection,
    StepOutcome,
    VerifyMatrix,
    VerifyRow,
)
from orchestrator.verify.report import Finding, summary

WORKSTATION = "workstation"  # the journal's and the plan's name for this machine (orchestrator.plan.WORKSTATION)


def step_outcome(record: StepRecord) -> StepOutcome:
    return StepOutcome(record.step, record.outcome, record.started, record.finished, record.attempts,
                       record.message, tuple(record.warnings))


def verify_matrix(findings: Sequence[Finding]) -> VerifyMatrix:
    rows = tuple(VerifyRow(f.server, f.service, f.name, f.verdict.label, f.verdict.severity, f.detail,
                           f.thumbprint_seen, f.days_left) for f in findings)
    return VerifyMatrix("checked", "checked when this report was made", rows, summary(findings) if findings else
                        "no checks")


def verify_not_run(why: str) -> VerifyMatrix:
    return VerifyMatrix("not_run", why)


def _chain(pems: Sequence[str]) -> tuple[ChainCertificate, ...]:
    out = []
    for pem in pems:
        for cert in x509.load_pem_x509_certificates(pem.encode()):
            out.append(ChainCertificate(cert.subject.rfc4514_string(), thumbprint(cert)))
    return tuple(out)


def _certificate(playbook: Playbook, journal: Journal | None) -> CertificateRecord:
    spec = playbook.certificate
    j = journal
    return CertificateRecord(
        subject=spec.subject.x500(), names=tuple(spec.domains), friendly_name=spec.friendly_name,
        services=tuple(s.value for s in spec.services), key_size=spec.key_size,
        csr_pem=j.csr_pem if j else None, request_thumbprint=j.request_thumbprint if j else None,
        issued_thumbprint=j.issued_thumbprint if j else None, issued_pem=j.issued_pem if j else None,
        chain=_chain(j.chain_pems) if j else ())


def _status(journal: Journal | None, servers: Sequence[ServerSection], workstation: Sequence[StepOutcome]) -> str:
    records = [*workstation, *(s for server in servers for s in server.steps)]
    if not records:
        return "planned, not run yet"
    failed = [f"{server.name} ({', '.join(s.step for s in server.steps if s.outcome == 'failed')})"
              for server in servers if server.failed]
    if any(s.outcome == "failed" for s in workstation):
        failed.insert(0, "this machine")
    if failed:
        return "failed on " + "; ".join(failed)
    running = [s.step for s in records if s.outcome == "running"]
    if running:
        return f"interrupted: {len(running)} step(s) started and not recorded as finished"
    if journal is not None and journal.csr_pem and not journal.issued_thumbprint:
        return "waiting for the CA: the request is made, the signed certificate not yet imported"
    return "every step run so far is done"


def build_report(playbook: Playbook, playbook_path: str, scripts: Mapping[str, str],
                 workstation_plan: Sequence[PlannedStep], journal: Journal | None, verify: VerifyMatrix,
                 generated: str, exmig_version: str, names_in_use: SectionTable | None = None,
                 dns_changes: SectionTable | None = None) -> Report:
    """`scripts`: per server, the plan's PowerShell as `exmig plan --format ps1` prints it (render_ps1)."""
    records = list(journal.steps.values()) if journal is not None else []
    sections = tuple(
        ServerSection(server.name, server.version, server.role.value, server.connection.host,
                      scripts.get(server.name),
                      tuple(step_outcome(r) for r in records if r.server.lower() == server.name.lower()))
        for server in playbook.servers)
    workstation = tuple(step_outcome(r) for r in records if r.server == WORKSTATION)
    return Report(
        playbook=playbook_path,
        generated=generated,
        exmig_version=exmig_version,
        phase="run" if records else "plan",
        status=_status(journal, sections, workstation),
        certificate=_certificate(playbook, journal),
        servers=sections,
        runs_started=tuple(str(run["started"]) for run in (journal.runs if journal else []) if "started" in run),
        workstation_plan=tuple(workstation_plan),
        workstation_steps=workstation,
        verify=verify,
        names_in_use=names_in_use,
        dns_changes=dns_changes,
    )
