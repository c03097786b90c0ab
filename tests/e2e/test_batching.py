"""Several commands per pipeline where the server's PowerShell allows it (PSRP 2.2+), one per pipeline
where it does not (PowerShell 2.0, protocol 2.1): same end state, fewer requests, and never a batch sent
to a server that would run only its first statement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.certs import thumbprint
from tests.e2e.conftest import Lab, build_lab, ca_store, put_file_in_the_way, raw_invoke, raw_pool


def _files(lab: Lab, name: str, folder: str) -> list[str]:
    pool = raw_pool(lab.server(name), "Microsoft.PowerShell")
    with pool:
        if not raw_invoke(pool, "Test-Path", Path=folder)[0]:
            return []
        return [str(o) for o in raw_invoke(pool, "Get-ChildItem", Path=folder)]


def _commands(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["server"], e["command"]) for e in events if e["event"] == "command"]


def _migrate(tmp: Path, powershell: str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    lab = build_lab(tmp, windows_powershell=powershell)
    try:
        proc, events = lab.run_json()
        assert proc.returncode == 0, proc.stderr
        assert next(e for e in events if e["event"] == "summary")["counts"].get("failed", 0) == 0
        # Commands, not all requests: a pipeline slower than the lab's 50 ms Receive hold costs one more
        # Receive, which timing decides.
        requests = {name: lab.server(name).winrm.log.count("Command") for name in ("EX2010", "EX2007")}
        # Same end state either way: the intermediate in LocalMachine\CA, no file left behind.
        intermediate = thumbprint(lab.site.ca.intermediate_cert)
        for name in ("EX2010", "EX2007"):
            assert intermediate in ca_store(lab, name), name
            assert not [f for f in _files(lab, name, "C:\\Certs") if f.lower().endswith((".cer", ".pfx"))], name
        # A second run still finds everything in place.
        again, events2 = lab.run_json()
        assert again.returncode == 0, again.stderr
        assert next(e for e in events2 if e["event"] == "summary")["counts"].get("changed", 0) == 0
        return _commands(events), requests
    finally:
        lab.site.stop()


def test_batches_where_the_endpoint_allows_them(tmp_path: Path) -> None:
    """PowerShell 2.0 (protocol 2.1, no ExtraCmds): the FullLanguage endpoints (/wsman, 2007's session) take
    a step's commands in one pipeline through the dispatcher script, as 5.1 takes them as statements; the
    no-language Exchange 2010 endpoint keeps one command per pipeline."""
    old_commands, old = _migrate(tmp_path / "ps2", "2.0")
    commands, new = _migrate(tmp_path / "ps5", "5.1")
    chain = "New-Item + Set-Content + certutil.exe + Remove-Item"
    for run in (old_commands, commands):
        batches = [c for c in run if " + " in c[1]]
        # install-chain's four commands on both servers, and the 2007 copy's two, each in one pipeline.
        assert ("EX2010", chain) in batches and ("EX2007", chain) in batches, batches
        assert ("EX2007", "New-Item + Set-Content") in batches, batches
        # The target's Enable rides on its import (SecureString password and all, in 2.0's dispatcher).
        assert ("EX2007", "Import-ExchangeCertificate + Enable-ExchangeCertificate") in batches, batches
        # The source's Exchange endpoint (Microsoft.Exchange, NoLanguage; PowerShell 2.0 in the lab) never
        # gets two commands in one pipeline.
        assert ("EX2010", "Enable-ExchangeCertificate") in run
        assert not [c for c in batches if c[0] == "EX2010" and "ExchangeCertificate" in c[1]], batches
    # The same requests either way: 2.0's snap-in rides on the 2007 session's first pipeline too.
    assert old == new, (old, new)


@pytest.mark.parametrize("powershell", ["2.0", "5.1"])
def test_a_failing_statement_fails_the_step_and_the_rest_does_no_harm(tmp_path: Path, powershell: str) -> None:
    """Set-Content of the intermediate fails inside the batch (the working folder is a file): the step fails
    with the server's message, and the CA store is unchanged (2.0: the dispatcher stops at the error)."""
    lab = build_lab(tmp_path, windows_powershell=powershell)
    try:
        put_file_in_the_way(lab, "EX2010", "C:\\Certs")
        proc, events = lab.run_json()
        assert proc.returncode == 1, proc.stdout
        failed = [e for e in events if e["event"] == "step" and e.get("phase") == "end" and e["outcome"] == "failed"]
        assert [(e["server"], e["step"]) for e in failed] == [("EX2010", "install-chain")], failed
        assert "An item with the specified name C:\\Certs already exists." in failed[0]["reason"]
        assert thumbprint(lab.site.ca.intermediate_cert) not in ca_store(lab, "EX2010")
    finally:
        lab.site.stop()
