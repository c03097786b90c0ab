"""-v/--verbose: each WinRM request per server (WSMan action, HTTP status, milliseconds) and each retry
with its cause, on stderr; stdout keeps its --json events."""

from __future__ import annotations

import json
import re

from orchestrator.lab.faults import FaultKind, FaultRule
from tests.e2e.conftest import Lab

REQUEST = re.compile(r"^\S+ exmig\.wire (EX2010|EX2007) (Create|Command|Receive|Send|Signal|Delete) "
                     r"(HTTP \d{3}(?: \(WSMan fault\))?|failed \(\w+\)) (\d+) ms$")


def test_verbose_shows_every_request_and_each_retry_with_its_cause(lab: Lab) -> None:
    lab.server("EX2007").winrm.faults.set_rules([FaultRule(FaultKind.HTTP_503, request=2, action="Command")])
    proc, events = lab.run_json("-v")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(line.startswith("{") and json.loads(line) for line in proc.stdout.splitlines())  # stdout: events
    lines = proc.stderr.splitlines()
    requests = [m for m in (REQUEST.match(line) for line in lines) if m]
    for server in ("EX2010", "EX2007"):
        actions = {m.group(2) for m in requests if m.group(1) == server}
        assert {"Create", "Command", "Receive"} <= actions, (server, actions)
    # One line per request the servers received, faulted ones included.
    for server in ("EX2010", "EX2007"):
        for action in ("Create", "Command", "Delete"):
            logged = sum(1 for m in requests if m.group(1) == server and m.group(2) == action)
            assert logged == lab.server(server).winrm.faults.action_count(action), (server, action)
    assert any(m.group(1) == "EX2007" and m.group(2) == "Command" and m.group(3) == "HTTP 503" for m in requests)
    retries = [line for line in lines if "exmig.wire EX2007" in line and ": retry 2 in " in line]
    assert len(retries) == 1 and "HTTP 503 from the server" in retries[0], lines[-40:]
    assert sum(1 for e in events if e["event"] == "retry") == 1
