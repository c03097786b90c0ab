"""The report as Markdown, for ticket systems that take it (GitHub, GitLab, Jira's Markdown, ...).

Values go through `escape` (inline text, table cells) or `fenced` (PowerShell, the CSR): a value from the playbook
or a server can neither start a heading, a link or raw HTML nor break a table or a code block."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from orchestrator.report.model import Report, SectionTable, StepOutcome

# CommonMark lets every ASCII punctuation character be backslash-escaped; these are the ones that mean something
# inside a line (emphasis, code, links, images, raw HTML and entities, tables, strikethrough). Characters that
# only mean something at the start of a line (# - + = 1.) need none: no value starts a line here.
_SIGNIFICANT = re.compile(r"([\\`*_{}\[\]()<>#!|~&])")


def escape(value: object) -> str:
    """One line of inert Markdown text."""
    text = " ".join(str(value).split())  # no line break can end a table row or start a block
    return _SIGNIFICANT.sub(r"\\\1", text)


def fenced(text: str, info: str = "") -> str:
    """A code block whose fence is longer than any backtick run inside (CommonMark: the closing fence must be at
    least as long as the opening one), so the content cannot close it."""
    text = text.replace("\r\n", "\n").rstrip()  # one line end throughout (Exchange writes the CSR with CRLF)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(escape(v) for v in row) + " |" for row in rows]
    return lines


def _steps(steps: Sequence[StepOutcome]) -> list[str]:
    if not steps:
        return ["_No step recorded yet._"]
    return _table(("Step", "Outcome", "Started (UTC)", "Finished (UTC)", "Attempts", "Message"),
                  ((s.step, s.outcome, s.started, s.finished or "", s.attempts, s.message or "") for s in steps))


def _section_table(table: SectionTable | None, what: str) -> list[str]:
    if table is None:
        return [f"_{what} not known yet: the servers are read when exmig run first connects (exmig run --check shows it now)._"]
    if not table.rows:
        return ["_None._"]
    return _table(table.columns, table.rows)


def render_markdown(report: Report) -> str:
    c = report.certificate
    out: list[str] = [
        f"# Certificate change record: {escape(c.subject)}",
        "",
        f"Playbook {escape(report.playbook)}, generated {escape(report.generated)} (UTC) by exmig "
        f"{escape(report.exmig_version)}"
        + (f"; runs started {escape(', '.join(report.runs_started))}" if report.runs_started else ""),
        "",
        f"**{'Run' if report.phase == 'run' else 'Plan'}: {escape(report.status)}**",
        "",
        "## Servers",
        "",
        *_table(("Server", "Exchange", "Role", "Host", "Steps recorded", "Outcome"),
                ((s.name, s.version, s.role, s.host, len(s.steps),
                  "not run" if not s.steps else "failed" if s.failed else "done") for s in report.servers)),
        "",
        "## Certificate",
        "",
        *_table(("Field", "Value"), (
            ("Subject", c.subject), ("Names", ", ".join(c.names)),
            ("Friendly name", c.friendly_name if c.friendly_name is not None else "none"),
            ("Services", ", ".join(c.services)), ("Key size", f"{c.key_size} bits"),
            ("Request thumbprint", c.request_thumbprint or "not requested yet"),
            ("Issued thumbprint", c.issued_thumbprint or "not issued yet"))),
        "",
    ]
    if c.chain:
        out += ["### Chain", "", *_table(("Subject", "Thumbprint"), ((x.subject, x.thumbprint) for x in c.chain)), ""]
    out += ["### Certificate request (CSR)", "", fenced(c.csr_pem) if c.csr_pem else "_No request made yet._", ""]
    if c.issued_pem:
        out += ["### Issued certificate", "", fenced(c.issued_pem), ""]
    out += ["## Names in use", "", *_section_table(report.names_in_use, "The names-in-use table is"), ""]
    if report.workstation_plan or report.workstation_steps:
        out += ["## This machine (workstation)", ""]
        out += [f"- **{escape(p.step)}**: {escape(p.why)}" for p in report.workstation_plan]
        out += ["", *_steps(report.workstation_steps), ""]
    for s in report.servers:
        out += [f"## {escape(s.name)} (Exchange {s.version}, {escape(s.role)}, {escape(s.host)})", "",
                "### Plan: the PowerShell exmig sends", "",
                fenced(s.powershell, "powershell") if s.powershell else "_No step of the plan runs on this server._",
                "", "### Steps run", "", *_steps(s.steps), "", "### Warnings from Exchange", ""]
        out += [f"- **{escape(step)}**: {escape(text)}" for step, text in s.warnings] or [
            "_None (not run yet)._" if not s.steps else "_None._"]
        out.append("")
    out += ["## Verification (server × service × name)", ""]
    v = report.verify
    if v.state == "checked":
        out += [f"{escape(v.summary)}; {escape(v.note)}.", "",
                *_table(("Server", "Service", "Name", "Result", "Days left", "Thumbprint seen", "Detail"),
                        ((f.server, f.service, f.name or "-", f.verdict, "" if f.days_left is None else f.days_left,
                          f.thumbprint_seen or "", f.detail) for f in v.rows))]
    else:
        out.append(f"_Not verified: {escape(v.note)}._")
    out += ["", "## DNS changes still to make", "", *_section_table(report.dns_changes, "The list of DNS changes is"), "",
            "---", "",
            "No secret is in this record: exmig never writes passwords, the PFX or private keys; in the PowerShell "
            "above a secret stands as the prompt that asks for it.", ""]
    return "\n".join(out)
