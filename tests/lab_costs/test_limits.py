"""The servers' limits as a client meets them (raw pypsrp): WinRM 2.0's shells per user and Exchange 2010's
sessions per user, refused with the real quota fault; and the lab's cost profile taking its time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from orchestrator.lab.costs import NO_COSTS, REALISTIC, LabCosts, LabLimits, apply_costs
from orchestrator.lab.server import LabServer
from tests.lab_protocol.conftest import PASSWORD, USER, make_registry


def wsman(srv: LabServer, path: str) -> WSMan:
    return WSMan("127.0.0.1", port=srv.port, path=path, ssl=False, auth="basic", encryption="never",
                 username=USER, password=PASSWORD, operation_timeout=5, read_timeout=10)


@pytest.fixture
def limited() -> Iterator[LabServer]:
    srv = LabServer("EX2010", make_registry(), {USER: PASSWORD}, allow_unencrypted=True,
                    configurations=["Microsoft.Exchange", "Microsoft.PowerShell"], limits=LabLimits()).start()
    try:
        yield srv
    finally:
        errors = srv.errors
        srv.stop()
        assert not errors


def _open_until_refused(srv: LabServer, path: str, configuration: str, most: int) -> tuple[int, WSManFaultError]:
    pools: list[RunspacePool] = []
    try:
        for _ in range(most + 1):
            pool = RunspacePool(wsman(srv, path), configuration_name=configuration)
            try:
                pool.open()
            except WSManFaultError as exc:
                return len(pools), exc
            pools.append(pool)
        raise AssertionError(f"{most + 1} shells were allowed")
    finally:
        for pool in pools:
            pool.close()


def test_winrm_2_allows_five_shells_per_user(limited: LabServer) -> None:
    opened, fault = _open_until_refused(limited, "wsman", "Microsoft.PowerShell", 5)
    assert opened == 5
    assert fault.code == 2150859173
    assert fault.reason is not None and "This user is allowed a maximum number of 5 concurrent shells, which has " \
        "been exceeded. Close existing shells or raise the quota for this user." in fault.reason
    assert limited.peaks["shells"] == 6  # the refused sixth counted, none kept
    # Closed shells free the quota again.
    with RunspacePool(wsman(limited, "wsman"), configuration_name="Microsoft.PowerShell"):
        pass


def test_exchange_2010_allows_eighteen_sessions_per_user(limited: LabServer) -> None:
    opened, fault = _open_until_refused(limited, "PowerShell", "Microsoft.Exchange", 18)
    assert opened == 18
    assert fault.reason is not None and "This user is allowed a maximum of 18 concurrent shells" in fault.reason
    # Exchange's sessions do not count against WinRM's own quota.
    assert limited.peaks["shells"] == 0


def test_costs_are_sleeps_at_their_scale() -> None:
    costs = replace(REALISTIC, scale=0.05)
    assert costs.pool_open("Microsoft.Exchange") == pytest.approx(0.15)
    assert costs.pool_open("Microsoft.PowerShell") == pytest.approx(0.075)
    assert costs.cmdlet("Enable-ExchangeCertificate") == pytest.approx(0.1)
    assert costs.cmdlet("add-pssnapin") == pytest.approx(0.2)
    assert costs.native("powershell.exe", ["-NoLogo", "-PSConsoleFile", "x.psc1"]) == pytest.approx(0.3)
    assert costs.native("powershell.exe", ["-NoLogo"]) == pytest.approx(0.1)
    assert costs.native("certutil.exe", ["-addstore"]) == pytest.approx(0.025)
    assert NO_COSTS.cmdlet("Enable-ExchangeCertificate") == 0.0


def test_a_costly_server_takes_at_least_its_costs() -> None:
    costs = LabCosts(exchange_pool_open=0.3, cmdlets={"Get-LabThing": 0.2})
    registry = make_registry()
    apply_costs(registry, costs)
    srv = LabServer("EX2010", registry, {USER: PASSWORD}, allow_unencrypted=True,
                    configurations=["Microsoft.Exchange"], costs=costs).start()
    try:
        start = time.monotonic()
        with RunspacePool(wsman(srv, "PowerShell"), configuration_name="Microsoft.Exchange") as pool:
            opened = time.monotonic()
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-LabThing")
            ps.invoke()
            done = time.monotonic()
        assert not ps.had_errors
        # Lower bounds only: sleeps guarantee them, whatever else the machine does.
        assert opened - start >= 0.3 and done - opened >= 0.2
    finally:
        srv.stop()
