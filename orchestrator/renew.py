"""`exmig renew`: whether the certificate the servers present must be renewed, from what their TLS endpoints
hand a client (verify's view), and the journal set aside so the run that follows makes a new request.

Certificate lifetimes are shrinking (CA/Browser Forum: at most 200 days from March 2026, 100 from March 2027,
47 from March 2029), so this runs from cron or a systemd timer: unattended, with exit codes a monitor reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.playbook import Playbook, Server, Service
from orchestrator.verify.tls_probe import probe

TLS_KIND = {Service.IIS: "https", Service.SMTP: "smtp", Service.POP: "pop3s", Service.IMAP: "imaps"}


@dataclass(frozen=True)
class Presentation:
    """What one endpoint presented: the leaf's thumbprint and days left (None: nothing, or unreachable)."""

    server: str
    service: str
    name: str
    thumbprint: str | None
    days_left: int | None
    problem: str | None = None


def presented(playbook: Playbook, servers: Sequence[Server], timeout: float = 10.0,
              now: dt.datetime | None = None) -> list[Presentation]:
    """Probe each server's TLS services once, with the certificate's first name each server answers for."""
    from orchestrator.certs import thumbprint

    moment = now or dt.datetime.now(dt.UTC)
    out: list[Presentation] = []
    for server in servers:
        names = server.names_for(playbook.certificate)
        ports = dict(server.tls_ports.items())
        for service in server.services_for(playbook.certificate):
            kind = TLS_KIND.get(service)
            if kind is None or not names:
                continue
            seen = probe(server.connection.host, ports[kind], kind, names[0], timeout)  # type: ignore[arg-type]
            leaf = seen.leaf
            if leaf is None:
                out.append(Presentation(server.name, kind, names[0], None, None, seen.error or "nothing presented"))
                continue
            days = (leaf.not_valid_after_utc - moment).days
            out.append(Presentation(server.name, kind, names[0], thumbprint(leaf), days))
    return out


@dataclass(frozen=True)
class RenewDecision:
    renew: bool
    reason: str


def decide(presentations: Iterable[Presentation], days: int) -> RenewDecision:
    """Renew when any endpoint presents nothing, or a certificate valid for `days` days or fewer."""
    seen = list(presentations)
    if not seen:
        return RenewDecision(True, "no server presents a certificate for the playbook's services")
    missing = [p for p in seen if p.days_left is None]
    if missing:
        first = missing[0]
        return RenewDecision(True, f"{first.server} {first.service} ({first.name}) presents no certificate: "
                                   f"{first.problem}")
    soonest = min(seen, key=lambda p: p.days_left if p.days_left is not None else 0)
    assert soonest.days_left is not None
    if soonest.days_left <= days:
        return RenewDecision(True, f"{soonest.server} {soonest.service} presents {soonest.thumbprint}, valid for "
                                   f"{soonest.days_left} more days (renewing at {days} or fewer)")
    return RenewDecision(False, f"nothing to renew: every certificate presented is valid for at least "
                                f"{soonest.days_left} more days (more than {days})")


def set_aside(journal: Path, now: dt.datetime | None = None) -> Path | None:
    """The finished migration's journal moved beside itself (kept for the record and for `exmig rollback`), so
    the renewal starts with a new request; None when there was none."""
    if not journal.exists():
        return None
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = journal.with_name(f"{journal.stem}.{stamp}{journal.suffix}")
    journal.rename(target)
    return target
