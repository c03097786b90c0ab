"""Verdicts for `exmig verify`: one `Finding` per server x service x name, and how they are shown.

`judge` is pure: it turns what a probe saw (`tls_probe.Presented`) and what the migration should have
produced (thumbprint, intermediates) into exactly one verdict. When several things are wrong at once the
first of this order wins, because it is the one to fix first (fixing a later one changes nothing while an
earlier one stands):

    unreachable > wrong_certificate > expired > name_mismatch > untrusted (self-signed)
    > missing_intermediate > untrusted (other) > expires_soon > ok

Severity: `expires_soon`, `not_reported` and `revocation_unchecked` are warnings -- shown, but the exit status stays 0. An
expiring certificate is correct today, and blocking a DNS change on it helps no one. `not_reported` is for
the management-session checks where a server's remote output simply omits a field (some Exchange builds
leave Services out); it is not evidence of a problem, and the TLS checks on the same server are the proof
for those services. Everything else fails the run with `ExitCode.VERIFY_FAILED`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from rich.table import Table
from rich.text import Text

from orchestrator.errors import ExitCode
from orchestrator.verify.tls_probe import Presented, names_cover

__all__ = [
    "Finding",
    "Verdict",
    "exit_code",
    "findings_table",
    "judge",
    "render_json",
    "render_json_lines",
    "summary",
]

Severity = Literal["ok", "warning", "error"]


class Verdict(str, Enum):
    OK = "ok"
    WRONG_CERTIFICATE = "wrong_certificate"
    MISSING_INTERMEDIATE = "missing_intermediate"
    NAME_MISMATCH = "name_mismatch"
    UNTRUSTED = "untrusted"
    EXPIRED = "expired"
    EXPIRES_SOON = "expires_soon"
    UNREACHABLE = "unreachable"
    NOT_REPORTED = "not_reported"
    # Status RevocationCheckFailure: the server cannot reach the CA's revocation list (orchestrator/status.py).
    REVOCATION_UNCHECKED = "revocation_unchecked"

    @property
    def severity(self) -> Severity:
        if self is Verdict.OK:
            return "ok"
        if self in (Verdict.EXPIRES_SOON, Verdict.NOT_REPORTED, Verdict.REVOCATION_UNCHECKED):
            return "warning"
        return "error"

    @property
    def label(self) -> str:
        """As the table shows it: "wrong certificate"."""
        return self.value.replace("_", " ")


_STYLE: dict[Severity, str] = {"ok": "green", "warning": "yellow", "error": "bold red"}


@dataclass(frozen=True)
class Finding:
    """One check's outcome. `service` is a TLS service kind (https, smtp, imaps, pop3s) or, for checks
    over the management session, whatever that check is about (e.g. "certificate", "IIS", "CA store");
    `name` is the SNI name, or None when no name is involved."""

    server: str
    service: str
    name: str | None
    verdict: Verdict
    detail: str
    thumbprint_seen: str | None = None
    days_left: int | None = None

    @property
    def failing(self) -> bool:
        return self.verdict.severity == "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "service": self.service,
            "name": self.name,
            "verdict": self.verdict.value,
            "severity": self.verdict.severity,
            "detail": self.detail,
            "thumbprint_seen": self.thumbprint_seen,
            "days_left": self.days_left,
        }


def _norm(thumb: str) -> str:
    # Windows shows thumbprints with spaces in places (certmgr) and in either case.
    return thumb.replace(" ", "").replace(":", "").upper()


def judge(
    presented: Presented,
    expected_thumbprint: str,
    expected_intermediates: Iterable[str] = (),
    sni: str | None = None,
    warn_days: int = 30,
    *,
    server: str | None = None,
) -> Finding:
    """The one verdict for what `presented` shows, given what the migration should have put there.

    `expected_intermediates`: thumbprints of every intermediate the server must send (all of them, so a
    two-level chain is checked whole). Empty: only require that some sent certificate issued the leaf.
    `sni` defaults to the name the probe asked for (pass that one: the trust check was made for it; another
    name only changes the name-coverage check); `server` (the playbook's server name) defaults to the host."""
    name = sni if sni is not None else presented.sni
    where = server if server is not None else presented.host
    a = presented.assessment

    def finding(verdict: Verdict, detail: str) -> Finding:
        return Finding(where, presented.service, name, verdict, detail,
                       a.leaf_thumbprint if a else None, a.days_left if a else None)

    if not presented.reachable or a is None:
        stage = f"{presented.stage} " if presented.stage else ""
        reason = presented.error or "no answer"
        return finding(Verdict.UNREACHABLE, f"{presented.endpoint}: {stage}failed: {reason}")
    expected = _norm(expected_thumbprint)
    until = f"{a.not_after:%Y-%m-%d %H:%M} UTC"
    if a.leaf_thumbprint != expected:
        return finding(
            Verdict.WRONG_CERTIFICATE,
            f"presents {a.leaf_thumbprint} ({a.subject}, issued by {a.issuer}, valid until {until}); "
            f"expected {expected}",
        )
    if a.not_after <= a.checked_at:
        ago = (a.checked_at - a.not_after) // dt.timedelta(days=1)
        return finding(Verdict.EXPIRED, f"expired {until} ({ago} days ago)")
    covered = a.covers_sni if name == presented.sni else names_cover(a.dns_names, a.ip_addresses, name)
    if not covered:
        names = ", ".join(a.dns_names + a.ip_addresses) or "none"
        return finding(Verdict.NAME_MISMATCH, f"{name} is not among the certificate's names ({names})")
    if a.self_signed:
        return finding(Verdict.UNTRUSTED, "self-signed: no client trusts it unless installed by hand")
    if a.issuer_sent is None:
        return finding(
            Verdict.MISSING_INTERMEDIATE,
            f"the server does not send the intermediate that issued the certificate ({a.issuer}); "
            "clients that do not already have it cannot build the chain",
        )
    missing = sorted({_norm(t) for t in expected_intermediates} - set(a.sent_thumbprints[1:]))
    if missing:
        return finding(
            Verdict.MISSING_INTERMEDIATE,
            f"the chain sent lacks the expected intermediate(s) {', '.join(missing)}",
        )
    if not a.trusted:
        store = {"given": "the given roots", "system": "the system store", "none": "no trust store"}[
            a.trust_store]
        return finding(Verdict.UNTRUSTED, f"does not verify to {store}: {a.trust_error}")
    if a.days_left < warn_days:
        return finding(
            Verdict.EXPIRES_SOON, f"expires {until}, in {a.days_left} days (warning below {warn_days} days)"
        )
    protocol = f", {presented.tls_version}" if presented.tls_version else ""
    return finding(
        Verdict.OK, f"valid until {until}; covers {name}; chain sent includes the intermediate{protocol}"
    )


# ---------------------------------------------------------------------------------------------- output


def exit_code(findings: Iterable[Finding]) -> int:
    """0 unless some finding is an error (warnings do not fail the run); then ExitCode.VERIFY_FAILED."""
    return int(ExitCode.VERIFY_FAILED) if any(f.failing for f in findings) else int(ExitCode.OK)


def summary(findings: Sequence[Finding]) -> str:
    """One line, e.g. "24 checks: 21 ok, 1 warning, 2 problems (wrong certificate: 1, unreachable: 1)"."""
    counts = Counter(f.verdict.severity for f in findings)
    problems = Counter(f.verdict.label for f in findings if f.failing)

    def n(k: int, word: str) -> str:
        return f"{k} {word}{'' if k == 1 else 's'}"

    line = f"{n(len(findings), 'check')}: {counts['ok']} ok, {n(counts['warning'], 'warning')}, " \
           f"{n(counts['error'], 'problem')}"
    if problems:
        line += " (" + ", ".join(f"{label}: {k}" for label, k in sorted(problems.items())) + ")"
    return line


def findings_table(findings: Sequence[Finding], title: str | None = "exmig verify") -> Table:
    """A rich table, server x service x name -> verdict, in the order given (grouped by server as given).

    The server is printed once per group and groups are separated by a rule, so a glance down the Result
    column finds the broken endpoint."""
    table = Table(title=title, caption=summary(findings) if findings else "no checks", show_lines=False)
    table.add_column("Server", no_wrap=True)
    table.add_column("Service", no_wrap=True)
    table.add_column("Name", no_wrap=True)
    table.add_column("Result", no_wrap=True)
    table.add_column("Days left", justify="right", no_wrap=True)
    table.add_column("Thumbprint seen", no_wrap=True)
    table.add_column("Detail", overflow="fold")
    for i, f in enumerate(findings):
        first = i == 0 or findings[i - 1].server != f.server
        last = i == len(findings) - 1 or findings[i + 1].server != f.server
        table.add_row(
            f.server if first else "",
            f.service,
            f.name or "-",
            Text(f.verdict.label, style=_STYLE[f.verdict.severity]),
            "" if f.days_left is None else str(f.days_left),
            "" if f.thumbprint_seen is None else f"{f.thumbprint_seen[:12]}…",
            f.detail,
            end_section=last,
        )
    return table


def render_json(findings: Iterable[Finding]) -> str:
    """A JSON array of findings (keys as in `Finding.to_dict`)."""
    return json.dumps([f.to_dict() for f in findings], indent=2)


def render_json_lines(findings: Iterable[Finding]) -> str:
    """One JSON object per line, for log pipelines; ends with a newline when not empty."""
    return "".join(json.dumps(f.to_dict()) + "\n" for f in findings)
