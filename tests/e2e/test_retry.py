"""A lost reply is retried after re-reading the server: the import happens once, not twice."""

from __future__ import annotations

import pytest

from orchestrator.lab.exchange import MY
from orchestrator.lab.faults import FaultKind, FaultRule
from tests.e2e.conftest import Lab


@pytest.mark.parametrize("server", ["EX2010", "EX2007"])
def test_reset_on_the_reply_of_import_leads_to_one_import(lab: Lab, server: str) -> None:
    winrm = lab.server(server).winrm
    winrm.faults.add(FaultRule(FaultKind.RESET_AFTER, request=1, cmdlet="Import-ExchangeCertificate"))

    proc, events = lab.run_json()
    assert proc.returncode == 0, proc.stderr

    assert [r.fault for r in winrm.log.records() if r.fault] == ["reset_after"]  # the fault did fire
    # (2007: with its Enable in one request, "Import-ExchangeCertificate + Enable-ExchangeCertificate")
    imports = [e for e in events if e["event"] == "command" and e["server"] == server
               and "Import-ExchangeCertificate" in e["command"].split(" + ")]
    assert [e["outcome"] for e in imports] == ["transient-error"]  # sent once; its reply was lost
    retries = [e for e in events if e["event"] == "retry" and e["server"] == server]
    assert len(retries) == 1
    ended = {(e["server"], e["step"]): e for e in events if e["event"] == "step" and e["phase"] == "end"}
    step = "complete" if server == "EX2010" else "import"
    assert ended[(server, step)]["outcome"] == "changed"  # re-read: the lost attempt had done it
    assert "reply was lost" in ended[(server, step)]["reason"]

    view = lab.server(server).inspector
    ours = [t for t in view.thumbprints(MY) if "mail.mitserv.net" in view.certificate(t, MY).subject]
    assert len(ours) == 1
