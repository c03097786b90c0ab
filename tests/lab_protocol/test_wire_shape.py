"""The lab's WSMan responses and PSRP objects held against what real Windows hosts send.

The reference is pypsrp's recordings of real hosts (jborean93/pypsrp, tests/tests_pypsrp/responses/). The
PowerShell 2.0 one is test_psrp_run_protocol_version_2.1.yml: Windows 2008 R2 SP1 (BuildVersion
6.1.7601.17514), WinRM 2.0, the host the lab's Exchange servers emulate by default. The element and
attribute paths below were read off those recordings (structure only; no recorded data is used here).
"""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.shell import Process, WinRS
from pypsrp.wsman import WSMan

from orchestrator.lab.registry import CommandCall, CommandSpec, ErrorCategory, LabError
from orchestrator.lab.server import POWERSHELL, Endpoint, LabServer
from tests.lab_protocol.conftest import PASSWORD, USER, make_registry

_PREFIX = {
    "http://www.w3.org/2003/05/soap-envelope": "s", "http://schemas.xmlsoap.org/ws/2004/08/addressing": "a",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer": "x", "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd": "w",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell": "rsp",
    "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd": "p", "http://www.w3.org/XML/1998/namespace": "xml",
}

HEADER = {"/s:Envelope", "/s:Envelope@xml:lang", "/s:Envelope/s:Header", "/s:Envelope/s:Header/a:Action",
          "/s:Envelope/s:Header/a:MessageID", "/s:Envelope/s:Header/a:To", "/s:Envelope/s:Header/a:RelatesTo",
          "/s:Envelope/s:Body"}
RC = "/s:Envelope/s:Body/x:ResourceCreated"
RR = "/s:Envelope/s:Body/rsp:ReceiveResponse"
# test_psrp_run_protocol_version_2.1.yml (PowerShell 2.0 host): every path of each response, per action.
RECORDED_PS2 = {
    "CreateResponse": HEADER | {RC, f"{RC}/a:Address", f"{RC}/a:ReferenceParameters",
                                f"{RC}/a:ReferenceParameters/w:ResourceURI", f"{RC}/a:ReferenceParameters/w:SelectorSet",
                                f"{RC}/a:ReferenceParameters/w:SelectorSet/w:Selector",
                                f"{RC}/a:ReferenceParameters/w:SelectorSet/w:Selector@Name"},
    "CommandResponse": HEADER | {"/s:Envelope/s:Body/rsp:CommandResponse",
                                 "/s:Envelope/s:Body/rsp:CommandResponse/rsp:CommandId"},
    "SendResponse": HEADER | {"/s:Envelope/s:Body/rsp:SendResponse"},
    "DeleteResponse": set(HEADER),
}
# Receive: a pool's (streams only) or a pipeline's (its CommandId on the streams, CommandState when done).
RECEIVE_ALWAYS = HEADER | {RR, f"{RR}/rsp:Stream", f"{RR}/rsp:Stream@Name"}
RECEIVE_PIPELINE = RECEIVE_ALWAYS | {f"{RR}/rsp:Stream@CommandId", f"{RR}/rsp:CommandState",
                                     f"{RR}/rsp:CommandState@CommandId", f"{RR}/rsp:CommandState@State",
                                     f"{RR}/rsp:CommandState/rsp:ExitCode"}
# Signal (test_psrp_* recordings with a stop, e.g. test_psrp_long_running_cmdlet.yml): the same header.
SIGNAL = HEADER | {"/s:Envelope/s:Body/rsp:SignalResponse"}
# A cmd shell's Create is described (test_winrs_standard.yml).
CMD_SHELL = {"/s:Envelope/s:Body/rsp:Shell"} | {f"/s:Envelope/s:Body/rsp:Shell/rsp:{name}" for name in (
    "ShellId", "ResourceUri", "Owner", "ClientIP", "IdleTimeOut", "InputStreams", "OutputStreams", "ShellRunTime",
    "ShellInactivity")}

# $PSVersionTable of the recorded PowerShell 2.0 host.
PS2_VERSION_TABLE = {"WSManStackVersion": "2.0", "PSCompatibleVersions": ["1.0", "2.0"],
                     "SerializationVersion": "1.1.0.1", "BuildVersion": "6.1.7601.17514", "PSVersion": "2.0",
                     "CLRVersion": "2.0.50727.5420", "PSRemotingProtocolVersion": "2.1"}


def _name(tag: str) -> str:
    match = re.match(r"\{(.*)\}(.*)", tag)
    return f"{_PREFIX.get(match.group(1), match.group(1))}:{match.group(2)}" if match else tag


def paths(element: ET.Element, prefix: str = "") -> set[str]:
    here = f"{prefix}/{_name(element.tag)}"
    out = {here} | {f"{here}@{_name(a)}" for a in element.attrib}
    for child in element:
        out |= paths(child, here)
    return out


def _not_found(call: CommandCall) -> None:
    raise LabError("The certificate was not found.", "CertNotFound,Lab.Test.GetCert", ErrorCategory.ObjectNotFound,
                   "System.Management.Automation.ItemNotFoundException", target="ABC", activity="Get-LabCert")


def _when(call: CommandCall) -> None:
    call.write(datetime.datetime(2027, 12, 1, 21, 49, tzinfo=datetime.UTC))


@pytest.fixture
def ps2_host() -> Iterator[tuple[LabServer, list[bytes]]]:
    registry = make_registry()
    registry.register(CommandSpec("Get-LabCert", _not_found))
    registry.register(CommandSpec("Get-LabDate", _when))
    srv = LabServer("EX2007", registry, {USER: PASSWORD}, allow_unencrypted=True,
                    configurations=[Endpoint(POWERSHELL.configuration, POWERSHELL.path, POWERSHELL.language, "2.0")])
    replies: list[bytes] = []
    inner = srv._reply

    def keep(auth: Any, body: bytes, status: int, record: Any, fault: Any) -> Any:  # the bytes as sent, pre-wrap
        replies.append(body)
        return inner(auth, body, status, record, fault)

    srv._reply = keep  # type: ignore[method-assign]
    srv.start()
    try:
        yield srv, replies
    finally:
        errors = srv.errors
        srv.stop()
        assert not errors


def _wsman(srv: LabServer) -> WSMan:
    return WSMan("127.0.0.1", port=srv.port, path="wsman", ssl=False, auth="basic", encryption="never",
                 username=USER, password=PASSWORD, operation_timeout=5, read_timeout=10)


def _by_action(replies: list[bytes]) -> dict[str, list[set[str]]]:
    out: dict[str, list[set[str]]] = {}
    for body in replies:
        root = ET.fromstring(body)
        action = root.findtext("{http://www.w3.org/2003/05/soap-envelope}Header/"
                               "{http://schemas.xmlsoap.org/ws/2004/08/addressing}Action") or ""
        out.setdefault(action.rsplit("/", 1)[-1], []).append(paths(root))
    return out


def test_responses_have_the_recorded_shape_on_a_powershell_2_host(ps2_host: tuple[LabServer, list[bytes]]) -> None:
    srv, replies = ps2_host
    with RunspacePool(_wsman(srv)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Add-LabOne")
        ps.invoke(input=[1, 2])  # input goes by Send
        ps = PowerShell(pool)
        ps.add_cmdlet("Start-LabSleep").add_parameter("Seconds", 2)
        ps.begin_invoke()
        ps.stop()  # Signal
    with WinRS(_wsman(srv)) as shell:
        Process(shell, "hostname").invoke()
    seen = _by_action(replies)
    for action in RECORDED_PS2:
        assert seen.get(action), f"no {action} was sent"
    psrp_creates = [p for p in seen["CreateResponse"] if not p & CMD_SHELL]
    cmd_creates = [p for p in seen["CreateResponse"] if p & CMD_SHELL]
    assert psrp_creates and all(p == RECORDED_PS2["CreateResponse"] for p in psrp_creates)
    assert cmd_creates and all(p == RECORDED_PS2["CreateResponse"] | CMD_SHELL for p in cmd_creates)
    for action in ("CommandResponse", "SendResponse", "DeleteResponse"):
        assert all(p == RECORDED_PS2[action] for p in seen[action]), action
    assert all(RECEIVE_ALWAYS <= p <= RECEIVE_PIPELINE | {f"{RR}/rsp:Stream@End"} for p in seen["ReceiveResponse"])
    assert seen.get("SignalResponse") and all(p == SIGNAL for p in seen["SignalResponse"])


def test_version_table_of_a_powershell_2_host(ps2_host: tuple[LabServer, list[bytes]]) -> None:
    srv, _ = ps2_host
    with RunspacePool(_wsman(srv)) as pool:
        data = pool.application_private_data.data["PSVersionTable"]  # type: ignore[union-attr]
        table = {key: (list(map(str, value)) if isinstance(value, list) else str(value)) for key, value in data.items()}
    assert table == PS2_VERSION_TABLE


def test_error_records_as_powershell_writes_them(ps2_host: tuple[LabServer, list[bytes]]) -> None:
    srv, _ = ps2_host
    with RunspacePool(_wsman(srv)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabCert")
        ps.invoke()
        record = ps.streams.error[0]
    # "Category: (Target:Type) [Activity], Reason", as in test_psrp_error_failed.yml.
    assert record.message == "ObjectNotFound: (ABC:String) [Get-LabCert], ItemNotFoundException"
    assert str(record) == "The certificate was not found."
    info = record.invocation_info
    assert info is not None
    assert info.adapted_properties.get("MyCommand", info.extended_properties.get("MyCommand")) == "Get-LabCert"
    props = {**info.adapted_properties, **info.extended_properties}
    assert props["InvocationName"] == "Get-LabCert" and props["PipelineLength"] == 1


def test_datetimes_are_local_time_with_an_offset(ps2_host: tuple[LabServer, list[bytes]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        srv, _ = ps2_host
        with RunspacePool(_wsman(srv)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-LabDate")
            out = ps.invoke()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    # .NET's round-trip form of a DateTimeKind.Local value, not UTC's "Z".
    assert str(out[0]) == "2027-12-01T13:49:00-08:00"


def test_a_winrm_3_host_names_an_activity_in_every_response() -> None:
    """WinRM 3.0+ (a host with WMF 3.0 or later) puts p:ActivityId in every response header (pypsrp's recordings of
    newer hosts, e.g. test_psrp_receive_failure.yml); the PowerShell 2.0 host above sends none."""
    srv = LabServer("EX2010", make_registry(), {USER: PASSWORD}, allow_unencrypted=True,
                    configurations=[Endpoint(POWERSHELL.configuration, POWERSHELL.path, POWERSHELL.language, "5.1")])
    replies: list[bytes] = []
    inner = srv._reply

    def keep(auth: Any, body: bytes, status: int, record: Any, fault: Any) -> Any:
        response = inner(auth, body, status, record, fault)
        replies.append(response.body)
        return response

    srv._reply = keep  # type: ignore[method-assign]
    srv.start()
    try:
        with RunspacePool(_wsman(srv)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-LabThing")
            ps.invoke()
    finally:
        srv.stop()
    assert replies
    for body in replies:
        found = paths(ET.fromstring(body))
        assert "/s:Envelope/s:Header/p:ActivityId" in found and "/s:Envelope@xml:lang" in found
