"""The servers' warnings reach the admin: the live display, `warning` events in --json, the journal, status."""

from __future__ import annotations

import json
from dataclasses import replace

from orchestrator.lab.registry import CommandCall, Session
from tests.e2e.conftest import Lab

WARNING = ("The certificate with thumbprint ABC will not be used for SMTP on this server: a certificate "
           "with [brackets] takes precedence.")


def _warn_in(lab: Lab, server: str, cmdlet: str, configuration: str, text: str) -> None:
    """The emulated server's cmdlet writes a warning record as well (as Exchange does in its WARNING: lines)."""
    registry = lab.server(server).winrm.registry
    session = Session(configuration=configuration, username="lab", snapins={
        "Microsoft.Exchange.Management.PowerShell.Admin"})
    spec = registry.command(cmdlet, session)

    def handler(call: CommandCall) -> None:
        spec.handler(call)
        call.write_warning(text)

    registry.register(replace(spec, handler=handler))


def test_warnings_are_shown_in_json_events_the_journal_and_the_console(lab: Lab) -> None:
    _warn_in(lab, "EX2010", "Enable-ExchangeCertificate", "Microsoft.Exchange", WARNING)
    proc, events = lab.run_json("--no-verify")
    assert proc.returncode == 0, proc.stderr
    warnings = [e for e in events if e["event"] == "warning"]
    assert warnings == [{"event": "warning", "server": "EX2010", "step": "enable",
                         "cmdlet": "Enable-ExchangeCertificate", "text": WARNING, "time": warnings[0]["time"]}]
    journal = json.loads((lab.tmp / ".exmig" / "lab.journal.json").read_text())
    assert journal["steps"]["EX2010:enable"]["warnings"] == [f"EX2010: Enable-ExchangeCertificate: {WARNING}"]
    status = lab.exmig("status", str(lab.playbook_path))
    assert f"warning  EX2010: Enable-ExchangeCertificate: {WARNING}" in status.stdout

    # The console display (a second run only reads: EX2007's Get-ExchangeCertificate warns).
    _warn_in(lab, "EX2007", "Get-ExchangeCertificate", "Microsoft.PowerShell", "Get warned")
    console = lab.exmig("run", str(lab.playbook_path), "--yes", "--no-verify")
    assert console.returncode == 0, console.stderr
    lines = [line for line in console.stdout.splitlines() if line.lstrip().startswith("warning")]
    assert lines and all("EX2007" in line and "Get-ExchangeCertificate: Get warned" in line for line in lines)
