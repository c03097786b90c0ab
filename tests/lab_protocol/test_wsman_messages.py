"""Issue 22: WSMan/PSRP messages answered as real Windows hosts answer them, through the unmodified clients.

Expected fault codes and texts are those of pypsrp's recordings against real Windows hosts
(jborean93/pypsrp, tests/tests_pypsrp/responses/<name>.yml, named in each test). Every client call runs
through `within()`, which fails the test when the call waits longer than the client's operation timeout,
so a message the lab leaves unanswered fails fast instead of blocking CI.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import xmltodict
from pypsrp.complex_objects import CommandType, PSInvocationState, RunspacePoolState
from pypsrp.exceptions import InvalidPSRPOperation, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan
from winrm.exceptions import WSManFaultError as WinrmFaultError
from winrm.protocol import Protocol

from orchestrator.lab.exchange import ExchangeServerModel, LabSettings, build_registry
from orchestrator.lab.server import EXCHANGE, POWERSHELL, Endpoint, LabServer

from .conftest import PASSWORD, USER

OPERATION_TIMEOUT = 3  # seconds: the WSMan OperationTimeout every client here sends
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CMD_URI = SHELL_URI + "/cmd"
RSP = "{http://schemas.microsoft.com/wbem/wsman/1/windows/shell}"

T = TypeVar("T")


def within(fn: Callable[..., T], *args: Any, limit: float = OPERATION_TIMEOUT, **kw: Any) -> T:
    """Run one client call; fail if it is still waiting after `limit` seconds (its operation timeout)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kw)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"{getattr(fn, '__name__', fn)} still waiting after {limit} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def wsman(srv: LabServer, path: str = "PowerShell", **kw: Any) -> WSMan:
    kw.setdefault("operation_timeout", OPERATION_TIMEOUT)
    return WSMan("127.0.0.1", port=srv.port, path=path, ssl=False, auth="basic", encryption="never",
                 username=USER, password=PASSWORD, read_timeout=OPERATION_TIMEOUT + 2, **kw)


def endpoints(powershell: str) -> list[Endpoint]:
    return [replace(EXCHANGE, powershell=powershell), replace(POWERSHELL, powershell=powershell)]


def opened(srv: LabServer, configuration: str = "Microsoft.Exchange", **kw: Any) -> RunspacePool:
    path = "PowerShell" if configuration == "Microsoft.Exchange" else "wsman"
    pool = RunspacePool(wsman(srv, path), configuration_name=configuration, **kw)
    within(pool.open)
    return pool


@pytest.fixture
def ps2_server(make_server: Callable[..., LabServer]) -> LabServer:
    """A Windows 2008 R2 host as shipped: PowerShell 2.0, WinRM 2.0."""
    return make_server(allow_unencrypted=True, configurations=endpoints("2.0"))


# --- GET_COMMAND_METADATA -------------------------------------------------------------------------


def exchange_server(make_server: Callable[..., LabServer], tmp_path: Path, version: str,
                    powershell: str = "2.0") -> LabServer:
    name = f"EX{version}A"
    model = ExchangeServerModel.load_or_create(tmp_path / name, name=name, version=version,
                                               fqdn=f"{name.lower()}.lab.local")
    configurations = endpoints(powershell) if version == "2010" else [replace(POWERSHELL, powershell=powershell)]
    return make_server(name=name, registry=build_registry(model, LabSettings()), allow_unencrypted=True,
                       configurations=configurations)


EXCHANGE_CMDLETS = ["Enable-ExchangeCertificate", "Export-ExchangeCertificate", "Get-ExchangeCertificate",
                    "Import-ExchangeCertificate", "New-ExchangeCertificate", "Remove-ExchangeCertificate"]
# The 2007 snap-in's client-access cmdlets (issue 17): no *-EcpVirtualDirectory on 2007.
CLIENT_ACCESS_2007 = [f"{verb}-{noun}" for noun in ("ActiveSyncVirtualDirectory", "ClientAccessServer",
                                                    "IMAPSettings", "OabVirtualDirectory", "OutlookAnywhere",
                                                    "OwaVirtualDirectory", "POPSettings", "ReceiveConnector",
                                                    "WebServicesVirtualDirectory") for verb in ("Get", "Set")
                      ] + ["Enable-OutlookAnywhere"]
COMMON_2_0 = ["Verbose", "Debug", "ErrorAction", "WarningAction", "ErrorVariable", "WarningVariable",
              "OutVariable", "OutBuffer"]
# test_psrp_get_command_metadata.yml (a 5.1 host): the Information pair and PipelineVariable come in.
COMMON_5_1 = ["Verbose", "Debug", "ErrorAction", "WarningAction", "InformationAction", "ErrorVariable",
              "WarningVariable", "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable"]


def test_command_metadata_of_exchange_2010_endpoint(make_server: Callable[..., LabServer], tmp_path: Path) -> None:
    """Import-PSSession's first message: the Exchange cmdlets of the endpoint with 2010's parameter tables."""
    srv = exchange_server(make_server, tmp_path, "2010")
    pool = opened(srv)
    t0 = time.monotonic()
    found = within(pool.get_command_metadata, "*-ExchangeCertificate")
    assert time.monotonic() - t0 < OPERATION_TIMEOUT
    assert [m.name for m in found] == EXCHANGE_CMDLETS  # Get-Command's order: by name
    by_name = {m.name: m for m in found}
    imp = by_name["Import-ExchangeCertificate"]
    assert imp.namespace == "Microsoft.Exchange.Management.PowerShell.E2010"
    assert (imp.command_type.value, str(imp.command_type)) == (CommandType.CMDLET, "Cmdlet")
    assert imp.help_uri is None  # PowerShell 2.0 has no HelpUri
    params = imp.parameters
    # 2010 imports from -FileData (byte[]); 2007's -Path does not exist here.
    assert params["FileData"].parameter_type == "System.Byte[]" and "Path" not in params
    assert params["Password"].parameter_type == "System.Security.SecureString"
    assert params["PrivateKeyExportable"].parameter_type == "System.Boolean"
    own = [n for n in params if n not in COMMON_2_0 + ["WhatIf", "Confirm"]]
    assert list(params)[len(own):] == COMMON_2_0 + ["WhatIf", "Confirm"]
    assert params["Verbose"].aliases == ["vb"] and params["Verbose"].switch_parameter is True
    assert params["ErrorAction"].parameter_type == "System.Management.Automation.ActionPreference"
    assert "WhatIf" not in by_name["Get-ExchangeCertificate"].parameters  # no ShouldProcess
    # The Windows cmdlets of Microsoft.PowerShell are not on the Exchange endpoint.
    assert within(pool.get_command_metadata, "Get-Content") == []
    within(pool.close)


def test_command_metadata_of_exchange_2007_follows_the_snapin(make_server: Callable[..., LabServer],
                                                              tmp_path: Path) -> None:
    srv = exchange_server(make_server, tmp_path, "2007", powershell="5.1")
    pool = opened(srv, "Microsoft.PowerShell")
    assert within(pool.get_command_metadata, "*-ExchangeCertificate") == []  # not before Add-PSSnapin
    ps = PowerShell(pool)
    ps.add_cmdlet("Add-PSSnapin").add_parameter("Name", "Microsoft.Exchange.Management.PowerShell.Admin")
    within(ps.invoke)
    found = {m.name: m for m in within(pool.get_command_metadata, ["import-exchange*", "Get-Content"])}
    assert sorted(found) == ["Get-Content", "Import-ExchangeCertificate"]
    imp = found["Import-ExchangeCertificate"]
    assert imp.namespace == "Microsoft.Exchange.Management.PowerShell.Admin"
    assert imp.help_uri == ""  # 3.0+ sends HelpUri; the lab's commands have no online help
    assert imp.parameters["Path"].parameter_type == "System.String" and "FileData" not in imp.parameters
    assert list(imp.parameters)[-len(COMMON_5_1) - 2:] == COMMON_5_1 + ["WhatIf", "Confirm"]
    assert found["Get-Content"].namespace == "Microsoft.PowerShell.Management"
    # Namespace filter: Get-Command -Module with the snap-in's name.
    by_snapin = within(pool.get_command_metadata, "*", namespace=["microsoft.exchange.management.powershell.a*"])
    assert [m.name for m in by_snapin] == sorted(EXCHANGE_CMDLETS + CLIENT_ACCESS_2007, key=str.lower)
    # CommandType filter: no aliases in the lab.
    assert within(pool.get_command_metadata, "*", command_types=CommandType.ALIAS) == []
    within(pool.close)


# --- runspace-pool control messages ----------------------------------------------------------------


def test_runspace_pool_sizes_and_availability(ps2_server: LabServer) -> None:
    """test_psrp_set_runspaces.yml: 1 available of 1; SetMaxRunspaces(5) true, then 5 available;
    SetMinRunspaces(2) true; -1 for either is refused (false)."""
    pool = opened(ps2_server)
    assert within(pool.get_available_runspaces) == 1
    within(setattr, pool, "max_runspaces", 5)
    assert within(pool.get_available_runspaces) == 5
    within(setattr, pool, "min_runspaces", 2)
    assert (pool.min_runspaces, pool.max_runspaces) == (2, 5)
    with pytest.raises(InvalidPSRPOperation, match="Failed to set minimum runspaces"):
        within(setattr, pool, "min_runspaces", -1)
    with pytest.raises(InvalidPSRPOperation, match="Failed to set maximum runspaces"):
        within(setattr, pool, "max_runspaces", -1)
    with pytest.raises(InvalidPSRPOperation, match="Failed to set maximum runspaces"):
        within(setattr, pool, "max_runspaces", 1)  # below the minimum of 2
    # A running pipeline takes a runspace.
    ps = PowerShell(pool)
    ps.add_cmdlet("Start-LabSleep").add_parameter("Seconds", 1)
    within(ps.begin_invoke)
    assert within(pool.get_available_runspaces) == 4
    within(ps.end_invoke)
    assert within(pool.get_available_runspaces) == 5
    within(pool.close)
    assert not ps_errors(ps2_server)


def ps_errors(srv: LabServer) -> list[str]:
    return [str(r) for r in srv.log.records() if r.status == 500]


def test_an_unsupported_psrp_message_is_answered_not_silenced(ps2_server: LabServer) -> None:
    """CONNECT_RUNSPACEPOOL sent on an open pool (it belongs to WSMan Connect): the pool's next Receive
    answers at once with a broken pool instead of OperationTimeout after OperationTimeout."""
    from pypsrp.messages import ConnectRunspacePool

    pool = opened(ps2_server)
    data = pool._fragmenter.fragment(ConnectRunspacePool(), pool.id)[0]
    within(pool.shell.send, "stdin", data)
    t0 = time.monotonic()
    with pytest.raises(InvalidPSRPOperation, match="broken RunspacePoolState.*ConnectRunspacePool"):
        within(pool._receive)
    assert time.monotonic() - t0 < OPERATION_TIMEOUT / 2  # answered, not timed out
    assert pool.state == RunspacePoolState.BROKEN


def test_an_unknown_psrp_message_type_fails_the_waiting_pipeline(ps2_server: LabServer) -> None:
    """A message type MS-PSRP does not define, sent while a pipeline runs: the pool breaks and the pipeline's
    own Receive gets a Failed state at once (pypsrp swallows OperationTimeouts on pipeline Receives, so
    silence would hang invoke() for ever)."""
    import struct

    pool = opened(ps2_server)
    ps = PowerShell(pool)
    ps.add_cmdlet("Start-LabSleep").add_parameter("Seconds", 2)
    within(ps.begin_invoke)
    body = struct.pack("<II", 0x00000002, 0x0002F00D) + uuid.UUID(str(pool.id)).bytes_le + bytes(16) + b"<S />"
    fragment = struct.pack(">QQBI", 999, 0, 0x03, len(body)) + body
    within(pool.shell.send, "stdin", fragment)
    t0 = time.monotonic()
    within(ps.end_invoke)
    assert time.monotonic() - t0 < OPERATION_TIMEOUT / 2  # answered, not timed out
    assert ps.state == PSInvocationState.FAILED and ps.had_errors
    assert str(ps.streams.error[-1]).endswith("does not support: message type 0x0002F00D.")


# --- WS-Transfer Get, WS-Enumeration ---------------------------------------------------------------


def test_is_alive_and_get_runspace_pools_on_a_powershell_2_host(ps2_server: LabServer) -> None:
    first, second = opened(ps2_server), opened(ps2_server)
    assert within(first.is_alive) is True and first.state == RunspacePoolState.OPENED
    ps = PowerShell(second)
    ps.add_cmdlet("Start-LabSleep").add_parameter("Seconds", 1)
    within(ps.begin_invoke)
    pools = {p.id.upper(): p for p in within(RunspacePool.get_runspace_pools, wsman(ps2_server))}
    assert set(pools) == {str(first.id).upper(), str(second.id).upper()}
    # pypsrp marks every listed pool Disconnected, as the .NET API does (its comment on GetRunspacePools).
    assert all(p.state == RunspacePoolState.DISCONNECTED for p in pools.values())
    assert [c.upper() for c in pools[str(second.id).upper()].pipelines] == [str(ps.id).upper()]
    assert pools[str(first.id).upper()].pipelines == {}
    within(ps.end_invoke)
    within(first.close)
    # Gone: the Shell provider's 2150858843 (test_psrp_is_alive_invalid_selectors.yml) -> is_alive False.
    assert within(first.is_alive) is False and first.state == RunspacePoolState.CLOSED
    with pytest.raises(WSManFaultError) as info:
        within(first.shell._get_shell)
    assert info.value.code == 2150858843
    assert info.value.reason == ("The WS-Management service cannot process the request because the request "
                                 "contained invalid selectors for the resource.")
    assert info.value.provider == "Shell provider"
    within(second.close)


def test_shell_get_reports_the_shell(ps2_server: LabServer) -> None:
    pool = opened(ps2_server, idle_timeout=60)
    state = within(pool.shell._get_shell)
    assert state["ShellId"] == str(pool.id).upper()
    assert state["ResourceUri"] == "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
    assert state["Owner"] == USER and state["State"] == "Connected"
    assert state["IdleTimeOut"] == "PT60.000S"  # the requested PT60S, as Windows echoes it
    within(pool.close)


def test_invalid_operation_timeout_is_refused(ps2_server: LabServer) -> None:
    """test_psrp_is_alive_other_wsman_error.yml: OperationTimeout PT-1S -> 2150858767; is_alive raises."""
    pool = opened(ps2_server)
    with pytest.raises(WSManFaultError) as info:
        within(pool.is_alive, timeout=-1)
    assert info.value.code == 2150858767
    assert info.value.reason == ("The WS-Management service cannot process the request. The XML contains an "
                                 "invalid timeout field in the SOAP header: PT-1S.")
    assert within(pool.is_alive) is True  # the pool is untouched
    within(pool.close)


# --- Disconnect / Reconnect / Connect --------------------------------------------------------------

ACTION_NOT_SUPPORTED = "The WS-Management service does not support the action specified in the request."


def test_disconnect_connect_reconnect_refused_by_winrm_2(ps2_server: LabServer) -> None:
    """They came with PowerShell 3.0 / WinRM 3.0; WinRM 2.0 answers ERROR_WSMAN_ACTION_NOT_SUPPORTED."""
    pool = opened(ps2_server)
    calls = {
        "Disconnect": pool.disconnect,
        "Reconnect": lambda: pool.connection.reconnect(pool.shell.resource_uri, selector_set=pool.shell._selector_set),
        "Connect": lambda: pool.connection.connect(pool.shell.resource_uri, _element("Connect"),
                                                   selector_set=pool.shell._selector_set),
    }
    for name, call in calls.items():
        with pytest.raises(WSManFaultError) as info:
            within(call)
        assert (info.value.code, info.value.reason) == (2150858771, ACTION_NOT_SUPPORTED), name
    assert pool.state == RunspacePoolState.OPENED
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-LabThing")
    assert len(within(ps.invoke)) == 1  # the pool is unharmed
    within(pool.close)


def _element(tag: str) -> Any:
    import xml.etree.ElementTree as ET

    return ET.Element(f"{RSP}{tag}")


def test_disconnect_reconnect_connect_on_a_powershell_3_host(make_server: Callable[..., LabServer]) -> None:
    """The flows of test_psrp_disconnect_runspaces.yml and test_psrp_disconnected_commands.yml."""
    srv = make_server(allow_unencrypted=True, configurations=endpoints("3.0"))
    pool = opened(srv)
    within(pool.disconnect)
    assert pool.state == RunspacePoolState.DISCONNECTED
    assert within(pool.shell._get_shell)["State"] == "Disconnected"
    within(pool.connect)  # the same client: WSMan Reconnect
    assert pool.state == RunspacePoolState.OPENED
    assert within(pool.shell._get_shell)["State"] == "Connected"
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-LabThing")
    assert len(within(ps.invoke)) == 1
    # Leave a pipeline running, disconnect; a new client finds the pool and its command and connects to both.
    ps = PowerShell(pool)
    ps.add_cmdlet("Start-LabSleep").add_parameter("Seconds", 1)
    within(ps.begin_invoke)
    within(pool.disconnect)
    found = {p.id.upper(): p for p in within(RunspacePool.get_runspace_pools, wsman(srv))}
    again = found[str(pool.id).upper()]
    within(again.connect)  # WSMan Connect with connectXml: capability + init data, then Opened
    assert again.state == RunspacePoolState.OPENED
    pipelines = {pid.upper(): p for pid, p in again.pipelines.items()}
    assert str(ps.id).upper() in pipelines  # with the earlier, completed but not terminated Get-LabThing
    assert within(pipelines[str(ps.id).upper()].connect) == ["slept"]
    ps = PowerShell(again)
    ps.add_cmdlet("Get-LabThing")
    assert len(within(ps.invoke)) == 1
    within(again.close)


def test_cmd_shell_disconnect_refused(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(allow_unencrypted=True, configurations=endpoints("5.1"))
    p = winrs(srv)
    shell_id = within(p.open_shell)
    req = {"env:Envelope": p.build_wsman_header(resource_uri=CMD_URI, action=SHELL_URI + "/Disconnect",
                                                shell_id=shell_id)}
    req["env:Envelope"].setdefault("env:Body", {})["rsp:Disconnect"] = {}
    with pytest.raises(WinrmFaultError) as info:
        within(p.send_message, xmltodict.unparse(req))
    assert info.value.wsman_fault_code == 2150858771
    within(p.close_shell, shell_id)


# --- faults for unknown command ids, cmd-shell parameter errors ------------------------------------

COMMAND_NOT_FOUND = ("The Windows Remote Shell received a request to perform an operation on a command identifier "
                     "that does not exist. Either the command has completed execution or the client specified an "
                     "invalid command identifier.")


def test_unknown_command_id_on_psrp_receive_and_send(ps2_server: LabServer) -> None:
    """test_psrp_receive_failure.yml: 2150858843 with the 'command identifier that does not exist' text."""
    pool = opened(ps2_server)
    bogus = str(uuid.uuid4()).upper()
    for call in (lambda: pool.shell.receive("stdout", command_id=bogus),
                 lambda: pool.shell.send("stdin", b"x", command_id=bogus)):
        with pytest.raises(WSManFaultError) as info:
            within(call)
        assert (info.value.code, info.value.reason) == (2150858843, COMMAND_NOT_FOUND)
    # pypsrp's is_alive only treats 2150858843 on Get as a gone pool; this one is alive.
    assert within(pool.is_alive) is True
    within(pool.close)


def winrs(srv: LabServer) -> Protocol:
    return Protocol(srv.url("wsman"), transport="basic", username=USER, password=PASSWORD,
                    operation_timeout_sec=OPERATION_TIMEOUT, read_timeout_sec=OPERATION_TIMEOUT + 2)


def test_cmd_shell_receive_faults(ps2_server: LabServer) -> None:
    """test_winrs_fail_poll_process.yml: no CommandId -> 87 from the Shell cmd plugin;
    test_winrs_bad_cmd_id.yml: an unknown CommandId -> 2150858843."""
    p = winrs(ps2_server)
    shell_id = within(p.open_shell)
    req = {"env:Envelope": p.build_wsman_header(resource_uri=CMD_URI, action=SHELL_URI + "/Receive",
                                                shell_id=shell_id)}
    req["env:Envelope"].setdefault("env:Body", {})["rsp:Receive"] = {"rsp:DesiredStream": "stdout stderr"}
    with pytest.raises(WinrmFaultError) as info:
        within(p.send_message, xmltodict.unparse(req))
    assert info.value.wsman_fault_code == 87
    assert info.value.reason == "The parameter is incorrect. "
    assert b'provider="Shell cmd plugin"' in info.value.response.encode()
    with pytest.raises(WinrmFaultError) as info:
        within(p.get_command_output_raw, shell_id, str(uuid.uuid4()).upper())
    assert info.value.wsman_fault_code == 2150858843
    assert info.value.reason.strip() == ("The WS-Management service cannot process the request because the request "
                                         "contained invalid selectors for the resource.")
    command_id = within(p.run_command, shell_id, "hostname")
    out = within(p.get_command_output_raw, shell_id, command_id)
    assert out[0] == b"EX1\r\n"
    within(p.cleanup_command, shell_id, command_id)
    within(p.close_shell, shell_id)


# --- rsp:IdleTimeOut echoed and enforced -----------------------------------------------------------


def test_requested_idle_timeout_is_echoed_and_enforced(ps2_server: LabServer) -> None:
    short = opened(ps2_server, idle_timeout=1)
    default = opened(ps2_server)
    assert within(short.shell._get_shell)["IdleTimeOut"] == "PT1.000S"
    assert within(default.shell._get_shell)["IdleTimeOut"] == "PT7200.000S"  # the service's IdleTimeout
    time.sleep(1.3)
    assert within(default.is_alive) is True  # any request reaps idle shells; this one was used 1.3 s ago
    assert within(short.is_alive) is False  # idle past its 1 s: deleted, Get answers 2150858843
    assert [s.upper() for s in ps2_server.shell_ids()] == [str(default.id).upper()]
    within(default.close)


def test_a_pending_receive_keeps_a_shell_alive(ps2_server: LabServer) -> None:
    """A Receive waiting for a slow pipeline is activity: the shell outlives its idle timeout meanwhile."""
    short = opened(ps2_server, idle_timeout=1)
    other = opened(ps2_server)
    ps = PowerShell(short)
    ps.add_cmdlet("Start-LabSleep").add_parameter("Seconds", 2)
    within(ps.begin_invoke)
    result: list[Any] = []
    receiver = threading.Thread(target=lambda: result.append(ps.end_invoke()), daemon=True)
    receiver.start()
    time.sleep(1.5)
    assert within(other.is_alive) is True  # a request that reaps idle shells
    receiver.join(OPERATION_TIMEOUT)
    assert result == [["slept"]]
    assert within(short.is_alive) is True
    within(short.close)
    within(other.close)


def test_cmd_shell_idle_timeout_echo(ps2_server: LabServer) -> None:
    p = winrs(ps2_server)
    res = within(p.send_message, xmltodict.unparse(_cmd_create(p, "PT30S")))
    assert b"<rsp:IdleTimeOut>PT30.000S</rsp:IdleTimeOut>" in res


def _cmd_create(p: Protocol, idle: str) -> dict[str, Any]:
    req = {"env:Envelope": p.build_wsman_header(resource_uri=CMD_URI, action="http://schemas.xmlsoap.org/ws/2004/09"
                                                "/transfer/Create")}
    req["env:Envelope"].setdefault("env:Body", {})["rsp:Shell"] = {
        "rsp:InputStreams": "stdin", "rsp:OutputStreams": "stdout stderr", "rsp:IdleTimeOut": idle}
    return req


def test_pipelines_still_complete_after_the_new_messages(ps2_server: LabServer) -> None:
    """The control messages leave the pool usable for commands (no state left behind)."""
    pool = opened(ps2_server)
    within(pool.get_command_metadata, "*")
    within(pool.get_available_runspaces)
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-LabThing").add_parameter("Name", "after")
    out = within(ps.invoke)
    assert ps.state == PSInvocationState.COMPLETED
    assert out[0].adapted_properties["Name"] == "after"
    within(pool.close)
