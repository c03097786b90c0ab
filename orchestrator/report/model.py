"""The report as data: what a change record says, in plain values, before any HTML or Markdown.

Every field is public information about the change (names, commands, thumbprints, the CSR, outcomes). There is
no field for a secret: the gatherer never reads one (the plan shows a secret as the name of a prompt, the
journal holds none), so no renderer can print one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Phase = Literal["plan", "run"]
VerifyState = Literal["checked", "not_run", "unavailable"]


@dataclass(frozen=True)
class SectionTable:
    """A section's table as columns and rows of text. The names-in-use table and the DNS changes still to make
    (issue 17) arrive in this shape, so the report needs no knowledge of how they are found."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class StepOutcome:
    """One journal record: what a step did on a server, and when (UTC, ISO 8601)."""

    step: str
    outcome: str  # ok | changed | skipped | failed | running
    started: str
    finished: str | None
    attempts: int
    message: str | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedStep:
    """A step of the plan that runs on this machine (the workstation), not on a server."""

    step: str
    why: str


@dataclass(frozen=True)
class ServerSection:
    name: str
    version: int
    role: str
    host: str
    # The plan's PowerShell for this server exactly as `exmig plan --format ps1` prints it; None when the
    # server has no step in the plan.
    powershell: str | None
    steps: tuple[StepOutcome, ...] = ()

    @property
    def warnings(self) -> tuple[tuple[str, str], ...]:
        """(step, warning text) in journal order."""
        return tuple((s.step, w) for s in self.steps for w in s.warnings)

    @property
    def failed(self) -> bool:
        return any(s.outcome == "failed" for s in self.steps)


@dataclass(frozen=True)
class VerifyRow:
    server: str
    service: str
    name: str | None
    verdict: str  # as the verify table labels it: "ok", "wrong certificate", ...
    severity: str  # ok | warning | error
    detail: str
    thumbprint_seen: str | None
    days_left: int | None


@dataclass(frozen=True)
class VerifyMatrix:
    """`exmig verify`'s findings, or why there are none: `not_run` (nothing to verify yet, or not asked for),
    `unavailable` (the servers could not be asked: the note says why)."""

    state: VerifyState
    note: str
    rows: tuple[VerifyRow, ...] = ()
    summary: str = ""


@dataclass(frozen=True)
class ChainCertificate:
    subject: str
    thumbprint: str


@dataclass(frozen=True)
class CertificateRecord:
    subject: str
    names: tuple[str, ...]
    friendly_name: str | None
    services: tuple[str, ...]
    key_size: int
    csr_pem: str | None = None
    request_thumbprint: str | None = None
    issued_thumbprint: str | None = None
    issued_pem: str | None = None
    chain: tuple[ChainCertificate, ...] = ()


@dataclass(frozen=True)
class Report:
    playbook: str
    generated: str  # UTC, ISO 8601
    exmig_version: str
    phase: Phase  # plan: no step has run yet; run: the journal has records
    status: str  # one line: "planned, not run yet", "finished: every step done", "failed on EX2007", ...
    certificate: CertificateRecord
    servers: tuple[ServerSection, ...]
    runs_started: tuple[str, ...] = ()  # when each `exmig run` started (UTC), from the journal
    workstation_plan: tuple[PlannedStep, ...] = ()
    workstation_steps: tuple[StepOutcome, ...] = ()
    verify: VerifyMatrix = field(default_factory=lambda: VerifyMatrix("not_run", "not asked for"))
    # None: not known yet: the names in use are read when a run first connects (run --check shows them now); the
    # DNS changes exist where a 2010 source has 2007 targets.
    names_in_use: SectionTable | None = None
    dns_changes: SectionTable | None = None

    @property
    def failed_servers(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.servers if s.failed)
