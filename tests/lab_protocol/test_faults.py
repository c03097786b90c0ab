"""Fault plan: each kind is seen by the real client and recorded in the request log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from pypsrp.exceptions import WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool

from orchestrator.lab.faults import FaultKind, FaultPlan, FaultRule
from orchestrator.lab.registry import CommandCall, CommandSpec, Registry
from orchestrator.lab.server import LabServer

from .test_psrp import wsman_for


@pytest.fixture
def runs(registry: Registry) -> list[str]:
    """Registers Invoke-LabCount, which records each execution."""
    seen: list[str] = []

    def handler(call: CommandCall) -> None:
        seen.append("ran")
        call.write(len(seen))

    registry.register(CommandSpec("Invoke-LabCount", handler))
    return seen


def open_pool(srv: LabServer, **kw: Any) -> RunspacePool:
    pool = RunspacePool(wsman_for(srv, **kw), configuration_name="Microsoft.Exchange")
    pool.open()
    return pool


def count_cmd(pool: RunspacePool) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet("Invoke-LabCount")
    return ps


def fault_records(srv: LabServer) -> list[tuple[int, str, str | None, int]]:
    return [(r.seq, r.action, r.fault, r.status) for r in srv.log.faults()]


def test_reset_before_executing(basic_server: LabServer, runs: list[str]) -> None:
    basic_server.faults.add(FaultRule(FaultKind.RESET_BEFORE, request=1, action="Command"))
    pool = open_pool(basic_server)
    with pytest.raises(requests.exceptions.ConnectionError):
        count_cmd(pool).invoke()
    assert runs == []  # never executed
    assert fault_records(basic_server) == [(3, "Command", "reset_before", 0)]
    # The rule fired once: the next command runs normally on a new connection.
    assert count_cmd(pool).invoke() == [1]


def test_reset_after_executing(basic_server: LabServer, runs: list[str]) -> None:
    basic_server.faults.add(FaultRule(FaultKind.RESET_AFTER, request=3))  # 3rd HTTP request = Command
    pool = open_pool(basic_server)
    with pytest.raises(requests.exceptions.ConnectionError):
        count_cmd(pool).invoke()
    time.sleep(0.1)
    assert runs == ["ran"]  # executed, but the reply was lost
    assert fault_records(basic_server) == [(3, "Command", "reset_after", 0)]


def test_http_500(basic_server: LabServer, runs: list[str]) -> None:
    basic_server.faults.add(FaultRule(FaultKind.HTTP_500, request=1, action="Command"))
    pool = open_pool(basic_server)
    with pytest.raises(WinRMTransportError) as info:
        count_cmd(pool).invoke()
    assert info.value.code == 500
    assert runs == []
    assert fault_records(basic_server) == [(3, "Command", "http_500", 500)]


def test_http_503_not_retried_by_pypsrp(basic_server: LabServer, runs: list[str]) -> None:
    basic_server.faults.set_rules([FaultRule(FaultKind.HTTP_503, request=1, action="Create")])
    with pytest.raises(WinRMTransportError) as info:
        open_pool(basic_server)
    assert info.value.code == 503
    assert fault_records(basic_server) == [(1, "Create", "http_503", 503)]
    # Observed: even with reconnection_retries pypsrp does not retry a 503, because urllib3's
    # status retries skip POST. The one-shot rule is spent, so the next invocation works.
    basic_server.faults.set_rules([FaultRule(FaultKind.HTTP_503, request=1, action="Command")])
    pool = open_pool(basic_server, reconnection_retries=1, reconnection_backoff=0.01)
    with pytest.raises(WinRMTransportError) as info:
        count_cmd(pool).invoke()
    assert info.value.code == 503
    assert runs == []
    assert count_cmd(pool).invoke() == [1]
    assert [f[1:] for f in fault_records(basic_server)] == [("Create", "http_503", 503), ("Command", "http_503", 503)]


def test_operation_timeout_on_pool_receive_fails_open(basic_server: LabServer) -> None:
    basic_server.faults.add(FaultRule(FaultKind.OPERATION_TIMEOUT, request=1, action="Receive"))
    with pytest.raises(WSManFaultError) as info:
        open_pool(basic_server)
    assert info.value.code == 2150858793
    rec = basic_server.log.faults()[0]
    assert (rec.action, rec.fault, rec.status, rec.wsman_fault) == ("Receive", "operation_timeout", 500, 2150858793)


def test_operation_timeout_on_pipeline_receive_is_retried_by_client(basic_server: LabServer, runs: list[str]) -> None:
    basic_server.faults.add(FaultRule(FaultKind.OPERATION_TIMEOUT, request=2, action="Receive"))
    pool = open_pool(basic_server)
    assert count_cmd(pool).invoke() == [1]
    assert basic_server.log.actions() == ["Create", "Receive", "Command", "Receive", "Receive"]
    assert fault_records(basic_server) == [(4, "Receive", "operation_timeout", 500)]


def test_stall(basic_server: LabServer, runs: list[str]) -> None:
    basic_server.faults.add(FaultRule(FaultKind.STALL, request=1, action="Command", seconds=0.4))
    pool = open_pool(basic_server)
    t0 = time.monotonic()
    assert count_cmd(pool).invoke() == [1]
    assert time.monotonic() - t0 >= 0.4
    rec = basic_server.log.faults()[0]
    assert (rec.action, rec.fault, rec.status) == ("Command", "stall", 200)
    assert rec.duration >= 0.4


def test_stall_beyond_client_read_timeout(basic_server: LabServer) -> None:
    basic_server.faults.add(FaultRule(FaultKind.STALL, request=1, seconds=2.0))
    with pytest.raises(requests.exceptions.ReadTimeout):
        open_pool(basic_server, operation_timeout=1, read_timeout=1.2)


def test_faults_apply_to_auth_legs_by_http_number(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(auth=("negotiate",))
    srv.faults.add(FaultRule(FaultKind.HTTP_500, request=2))  # the NTLM NEGOTIATE leg
    with pytest.raises(WinRMTransportError):
        open_pool(srv, auth="ntlm", encryption="always")
    assert fault_records(srv) == [(2, "", "http_500", 500)]


def test_latency_hook(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(allow_unencrypted=True, latency=0.05)
    t0 = time.monotonic()
    open_pool(srv).close()
    assert time.monotonic() - t0 >= 0.15  # 3 requests
    assert all(r.duration >= 0.05 for r in srv.log.records())


def test_plan_json_round_trip() -> None:
    text = json.dumps({"rules": [
        {"kind": "http_500", "request": 3},
        {"kind": "stall", "action": "Receive", "request": 2, "seconds": 1.5},
    ]})
    plan = FaultPlan.from_json(text)
    assert plan.rules == [
        FaultRule(FaultKind.HTTP_500, 3),
        FaultRule(FaultKind.STALL, 2, action="Receive", seconds=1.5),
    ]
    assert FaultPlan.from_json(plan.to_json()).rules == plan.rules


def test_plan_from_control_file(basic_server: LabServer, runs: list[str], tmp_path: Path) -> None:
    control = tmp_path / "faults.json"
    basic_server.faults.watch_file(control)
    pool = open_pool(basic_server)
    assert count_cmd(pool).invoke() == [1]
    # Rule numbers are absolute since the server started; the plan tells where the count is.
    nxt = basic_server.faults.action_count("Command") + 1
    assert nxt == 2
    control.write_text(json.dumps({"rules": [{"kind": "http_500", "action": "Command", "request": nxt}]}))
    with pytest.raises(WinRMTransportError):
        count_cmd(pool).invoke()
    assert fault_records(basic_server)[0][1:] == ("Command", "http_500", 500)


def test_reset_after_on_the_empty_auth_post(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(auth=("negotiate",))
    srv.faults.add(FaultRule(FaultKind.RESET_AFTER, request=3))  # AUTHENTICATE leg, empty body
    with pytest.raises(requests.exceptions.ConnectionError):
        open_pool(srv, auth="ntlm", encryption="always")
    assert fault_records(srv) == [(3, "", "reset_after", 0)]


def test_reset_under_ntlm_encryption_needs_a_new_client(make_server: Callable[..., LabServer]) -> None:
    """Observed pypsrp behaviour: after a reset its WSMan re-authenticates on a new connection but
    keeps encrypting with the old context, so the server cannot decrypt (400). A new WSMan works."""
    srv = make_server(auth=("negotiate",))
    pool = open_pool(srv, auth="ntlm", encryption="always")
    srv.faults.add(FaultRule(FaultKind.RESET_BEFORE, request=1, action="Command"))
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-LabThing")
    with pytest.raises(requests.exceptions.ConnectionError):
        ps.invoke()
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-LabThing")
    with pytest.raises(WinRMTransportError) as info:
        ps.invoke()
    assert info.value.code == 400
    fresh = open_pool(srv, auth="ntlm", encryption="always")
    ps = PowerShell(fresh)
    ps.add_cmdlet("Get-LabThing")
    assert len(ps.invoke()) == 1
    fresh.close()
