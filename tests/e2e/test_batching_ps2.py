"""PowerShell 2.0's FullLanguage endpoints take several commands in one pipeline through exmig's one fixed
dispatcher script, with the values as its typed argument: hostile text stays data, the first error stops the
rest with the server's own text, a native program gets its positional arguments and returns its lines, and
the lab runs that script only (another script, or the dispatcher on the no-language endpoint, is refused)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pypsrp.powershell import PowerShell

from orchestrator.commands import Command, Param, Shell, Switch, Text
from orchestrator.lab.site import EmulatedServer
from orchestrator.playbook import Server
from orchestrator.transport.base import RemoteError
from orchestrator.transport.psrp import DISPATCHER, PsrpServerSession
from tests.e2e.conftest import raw_pool
from tests.e2e.test_batching_transport import _lab_2007, _session

HOSTILE = "C:\\Batch\\it's $(Remove-Item C:\\ -Recurse); `n @{x=1} ‘q’"


@pytest.fixture
def ps2(tmp_path: Path) -> Iterator[tuple[Server, EmulatedServer, PsrpServerSession]]:
    with _lab_2007(tmp_path, "2.0") as (_, server, emulated):
        session = _session(server, emulated)
        try:
            yield server, emulated, session
        finally:
            session.close()


def _folder(path: str) -> Command:
    return Command("New-Item", (Param("Path", Text(path)), Param("ItemType", Text("Directory")),
                                Param("Force", Switch())), shell=Shell.SYSTEM)


def _probe(path: str) -> Command:
    return Command("Test-Path", (Param("Path", Text(path)),), shell=Shell.SYSTEM, changes=False)


def test_hostile_values_are_data(ps2: tuple[Server, EmulatedServer, PsrpServerSession]) -> None:
    _, emulated, session = ps2
    assert session.can_batch(Shell.SYSTEM)
    emulated.winrm.log.clear()
    emulated.winrm.registry.ran.clear()
    batch = (_folder("C:\\Batch"), _folder(HOSTILE), _probe(HOSTILE))
    out = session.invoke_batch(batch, values=None)  # type: ignore[arg-type]
    assert out.output[-1] is True  # the folder of exactly that name exists
    assert emulated.winrm.log.count("Command") == 1
    # 2007: the snap-in rides on the session's first pipeline; nothing the text names ran.
    assert list(emulated.winrm.registry.ran) == ["Add-PSSnapin", "New-Item", "New-Item", "Test-Path"]


def test_the_first_error_stops_the_rest(ps2: tuple[Server, EmulatedServer, PsrpServerSession]) -> None:
    _, _, session = ps2
    bad = Command("Get-ExchangeCertificate", (Param("Thumbprint", Text("00" * 20)),), changes=False)
    lst = Command("Get-ExchangeCertificate", (), changes=False)
    with pytest.raises(RemoteError) as caught:
        session.invoke_batch((lst, bad, lst), values=None)  # type: ignore[arg-type]
    # The server's own text of that command's error record.
    assert "00" * 20 in caught.value.remote_message, caught.value.remote_message
    with pytest.raises(RemoteError):
        session.invoke_batch((_folder("C:\\Stop"), Command("Remove-Item", (Param("Path", Text("C:\\Nowhere")),),
                                                           shell=Shell.SYSTEM), _folder("C:\\Stop\\Never")),
                             values=None)  # type: ignore[arg-type]
    assert session.invoke(_probe("C:\\Stop"), values=None).output == [True]  # type: ignore[arg-type]
    assert session.invoke(_probe("C:\\Stop\\Never"), values=None).output == [False]  # type: ignore[arg-type]


def test_a_native_program_gets_positional_arguments(ps2: tuple[Server, EmulatedServer, PsrpServerSession]) -> None:
    _, _, session = ps2
    certutil = Command("certutil.exe", (Param(None, Text("-addstore")), Param(None, Text("CA")),
                                        Param(None, Text("C:\\Batch\\missing.cer"))), shell=Shell.SYSTEM, native=True)
    out = session.invoke_batch((_folder("C:\\Batch"), certutil), values=None)  # type: ignore[arg-type]
    lines = [line for line in out.output if isinstance(line, str)]
    assert any("-addstore command FAILED" in line and "ERROR_FILE_NOT_FOUND" in line for line in lines), out.output


def _run_script(emulated: EmulatedServer, configuration: str, script: str, **params: object) -> list[str]:
    pool = raw_pool(emulated, configuration)
    with pool:
        ps = PowerShell(pool)
        ps.add_script(script)
        for name, value in params.items():
            ps.add_parameter(name, value)
        ps.invoke()
        return [str(e) for e in ps.streams.error]


def test_the_lab_runs_that_script_only(ps2: tuple[Server, EmulatedServer, PsrpServerSession]) -> None:
    _, emulated, _ = ps2
    ok = _run_script(emulated, "Microsoft.PowerShell", DISPATCHER, Commands=[["Test-Path", {"Path": "C:\\"}, []]])
    assert ok == []
    other = _run_script(emulated, "Microsoft.PowerShell", DISPATCHER + "\nRemove-Item C:\\",
                        Commands=[["Test-Path", {"Path": "C:\\"}, []]])
    assert other and "does not interpret PowerShell script text" in other[0], other
    shape = _run_script(emulated, "Microsoft.PowerShell", DISPATCHER, Commands=[["Test-Path", "C:\\"]])
    assert shape and "Lab limitation" in shape[0], shape


def test_the_no_language_endpoint_refuses_the_dispatcher(tmp_path: Path) -> None:
    from tests.e2e.conftest import build_lab

    lab = build_lab(tmp_path, windows_powershell="2.0")
    try:
        errors = _run_script(lab.server("EX2010"), "Microsoft.Exchange", DISPATCHER,
                             Commands=[["Get-ExchangeCertificate", {}, []]])
        assert errors and "no-language mode" in errors[0], errors
    finally:
        lab.site.stop()
