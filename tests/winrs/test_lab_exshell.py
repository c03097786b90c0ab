"""The lab's powershell.exe over WinRS, driven by exmig's WinRS transport (real pywinrm): what it runs, what
it refuses and how results and errors come back."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator

import pytest

from orchestrator.commands import Blob, Captured, Command, Param, Secret, Shell, Switch, Text
from orchestrator.connect import session_spec
from orchestrator.lab.winrs_shell import split_command_line
from orchestrator.render import winrs_script
from orchestrator.transport.base import RemoteError, RemoteObject
from orchestrator.transport.psrp import ConnectionSettings, PsrpServerSession
from orchestrator.transport.winrs import WinrsServerSession
from tests.winrs.conftest import InProcessLab, start_lab


class Values:
    def __init__(self, blobs: dict[str, bytes] | None = None, secrets: dict[str, str] | None = None) -> None:
        self.blobs = blobs or {}
        self.secrets = secrets or {}

    def blob(self, key: str) -> bytes:
        return self.blobs[key]

    def secret(self, key: str) -> str:
        return self.secrets[key]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessLab]:
    lab = start_lab(tmp_path_factory.mktemp("exshell"))
    model = lab.server("EX2007").model
    with model.transaction():
        model.fs.mkdir("C:\\Certs")
    try:
        yield lab
    finally:
        lab.site.stop()


def settings(lab: InProcessLab) -> ConnectionSettings:
    emulated = lab.server("EX2007")
    return ConnectionSettings("127.0.0.1", "ntlm", emulated.username, emulated.password, False, 5, 10)


@pytest.fixture
def session(lab: InProcessLab) -> Iterator[WinrsServerSession]:
    s = WinrsServerSession(session_spec(lab.loaded.playbook.server("EX2007")), settings(lab))
    try:
        yield s
    finally:
        s.close()


def test_a_cmdlet_returns_the_same_objects_as_over_psrp(lab: InProcessLab, session: WinrsServerSession) -> None:
    over_winrs = session.invoke(Command("Get-ExchangeCertificate", ()), Values()).output
    psrp = PsrpServerSession(session_spec(lab.loaded.playbook.server("EX2007")), settings(lab))
    try:
        over_psrp = psrp.invoke(Command("Get-ExchangeCertificate", ()), Values()).output
    finally:
        psrp.close()
    assert over_winrs and over_winrs == over_psrp
    assert isinstance(over_winrs[0], RemoteObject) and str(over_winrs[0].get("Status")) == "Valid"


def test_non_ascii_and_hostile_names_survive_the_oem_code_page(lab: InProcessLab,
                                                              session: WinrsServerSession) -> None:
    folder = "C:\\Certs\\é ‘$(x)’ \U0001f512"
    session.invoke(Command("New-Item", (Param("Path", Text(folder)), Param("ItemType", Text("Directory")),
                                        Param("Force", Switch())), shell=Shell.SYSTEM), Values())
    assert lab.server("EX2007").model.fs.is_dir(folder)
    out = session.invoke(Command("Test-Path", (Param("Path", Text(folder)),), shell=Shell.SYSTEM), Values()).output
    assert out == [True]


def test_bytes_go_on_stdin_in_bounded_sends_and_are_checked_by_hash(lab: InProcessLab,
                                                                    session: WinrsServerSession) -> None:
    """Was: bytes written in command-line chunks, one process each, then a hash process. Now one process: the
    bytes and their SHA-256 on stdin (several Sends for 100 KB), the command line the same whatever the data."""
    data = os.urandom(100_000)
    before = len(lab.exshell().invocations)
    write = Command("Set-Content", (Param("Path", Text("C:\\Certs\\big.bin")),
                                    Param("Value", Blob("b", Captured("X", "FileData", "bytes"))),
                                    Param("Encoding", Text("Byte"))), shell=Shell.SYSTEM)
    sends = lab.server("EX2007").winrm.log.count("Send")
    session.invoke(write, Values(blobs={"b": data}))
    assert lab.server("EX2007").model.fs.read("C:\\Certs\\big.bin") == data
    seen = lab.exshell().invocations[before:]
    line, script = winrs_script.sent_command_line(write, winrs_script.EXSHELL_CONSOLE_FILE)
    assert [i.command_line for i in seen] == [line]
    assert len(line) < 2000 and "$exmigBytes1" in script.text  # 100 KB of data, not in the line
    assert lab.server("EX2007").winrm.log.count("Send") - sends >= 5  # 136 KB of base64 in 32 KB Sends


def test_damaged_bytes_on_stdin_are_refused_before_any_command(lab: InProcessLab,
                                                               session: WinrsServerSession) -> None:
    write = Command("Set-Content", (Param("Path", Text("C:\\Certs\\damaged.bin")),
                                    Param("Value", Blob("b", Captured("X", "FileData", "bytes"))),
                                    Param("Encoding", Text("Byte"))), shell=Shell.SYSTEM)
    script = winrs_script.command_script(write).text
    good = base64.b64encode(b"abc") + b"\r\n"
    stdout, stderr, code = session.run_powershell(script, exchange=False, stdin=good + b"0" * 64 + b"\r\n")
    assert code == 1 and winrs_script.DAMAGED_INPUT in stderr
    assert lab.server("EX2007").model.fs.read("C:\\Certs\\damaged.bin") is None


def test_a_request_is_one_process_and_stops_at_its_first_error(lab: InProcessLab,
                                                               session: WinrsServerSession) -> None:
    folder = Command("New-Item", (Param("Path", Text("C:\\Req")), Param("ItemType", Text("Directory")),
                                  Param("Force", Switch())), shell=Shell.SYSTEM)
    probe = Command("Test-Path", (Param("Path", Text("C:\\Req")),), shell=Shell.SYSTEM)
    missing = Command("Remove-Item", (Param("Path", Text("C:\\Nowhere")),), shell=Shell.SYSTEM)
    never = Command("New-Item", (Param("Path", Text("C:\\Req\\Never")), Param("ItemType", Text("Directory"))),
                    shell=Shell.SYSTEM)
    before = len(lab.exshell().invocations)
    assert session.can_batch(Shell.SYSTEM) and session.can_batch(Shell.EXCHANGE)
    assert session.invoke_batch((folder, probe), Values()).output[-1] is True
    with pytest.raises(RemoteError) as failed:
        session.invoke_batch((missing, never), Values())
    assert "Nowhere" in failed.value.remote_message
    assert not lab.server("EX2007").model.fs.is_dir("C:\\Req\\Never")
    assert len(lab.exshell().invocations) - before == 2


def test_a_secret_arrives_on_stdin_and_binds_as_a_securestring(lab: InProcessLab,
                                                               session: WinrsServerSession) -> None:
    password = "Pa55 w'rd $(x) `n"
    with pytest.raises(RemoteError) as failed:
        session.invoke(Command("Import-ExchangeCertificate", (Param("Path", Text("C:\\Certs\\none.pfx")),
                                                              Param("Password", Secret("pfx-password", "pw")))),
                       Values(secrets={"pfx-password": password}))
    # The lab's own Exchange error for a missing file: the server's text, with its error id.
    assert "none.pfx" in failed.value.remote_message
    assert failed.value.error_id
    assert all(password not in i.command_line and password not in (i.script or "")
               for i in lab.exshell().invocations)


def test_a_missing_stdin_line_is_a_clear_error(lab: InProcessLab, session: WinrsServerSession) -> None:
    shell = lab.exshell()
    shell.stdin_timeout = 0.3
    try:
        script = winrs_script.command_script(Command("Import-ExchangeCertificate", (
            Param("Path", Text("C:\\Certs\\none.pfx")), Param("Password", Secret("pfx-password", "pw"))))).text
        _, stderr, code = session.run_powershell(script, exchange=True, stdin=None)
    finally:
        shell.stdin_timeout = 10.0
    assert code == 1 and "no line on stdin for $exmigSecret1" in stderr


def test_exchange_cmdlets_exist_only_with_the_console_file(session: WinrsServerSession) -> None:
    stdout, stderr, code = session.run_powershell("Get-ExchangeCertificate", exchange=False)
    with pytest.raises(RemoteError) as failed:
        session._checked("Get-ExchangeCertificate", stdout, stderr, code)
    assert failed.value.error_id == "CommandNotFoundException"
    assert "'Get-ExchangeCertificate' is not recognized" in failed.value.remote_message


@pytest.mark.parametrize("script", [
    "Get-ExchangeCertificate; Remove-Item -Path 'C:\\Certs'",
    "Get-ExchangeCertificate | Remove-ExchangeCertificate",
    "Import-ExchangeCertificate -Path 'a' -Password (Get-Credential).Password",
    "[System.IO.File]::Delete('C:\\Certs\\x')",
])
def test_a_script_the_renderer_never_produces_is_refused(lab: InProcessLab, session: WinrsServerSession,
                                                        script: str) -> None:
    before = lab.server("EX2007").model.fs.is_dir("C:\\Certs")
    stdout, stderr, code = session.run_powershell(script, exchange=True)
    with pytest.raises(RemoteError) as failed:
        session._checked("script", stdout, stderr, code)
    assert failed.value.error_id == "LabScriptNotSupported"
    assert failed.value.remote_message.startswith("Lab limitation: the emulated powershell.exe runs only")
    assert code == 1 and lab.server("EX2007").model.fs.is_dir("C:\\Certs") == before


@pytest.mark.parametrize("args", [
    ["-Command", "Get-ExchangeCertificate"],
    ["-NoLogo", "-NoProfile", "-NonInteractive", "-Command", "Get-ExchangeCertificate"],
    ["-NoLogo", "-NoProfile", "-NonInteractive", "-PSConsoleFile", '"C:\\other.psc1"', "-OutputFormat", "xml",
     "-EncodedCommand", winrs_script.encode("Get-ExchangeCertificate")],
    ["-NoLogo", "-NoProfile", "-NonInteractive", "-OutputFormat", "xml", "-EncodedCommand", "not base64!"],
])
def test_other_powershell_command_lines_are_refused(session: WinrsServerSession, args: list[str]) -> None:
    protocol, shell_id = session._shell()
    command_id = protocol.run_command(shell_id, "powershell.exe", args)
    stdout, stderr, code, done = protocol.get_command_output_raw(shell_id, command_id)
    protocol.cleanup_command(shell_id, command_id)
    assert done and code == 1 and stdout == b""
    assert stderr.decode().startswith("Lab limitation: ")


def test_command_lines_split_back_to_the_rendered_arguments() -> None:
    script = "Get-ExchangeCertificate"
    args = winrs_script.arguments(script, winrs_script.EXSHELL_CONSOLE_FILE)
    assert split_command_line(" ".join(["powershell.exe", *args]))[1:] == [
        "-NoLogo", "-NoProfile", "-NonInteractive", "-PSConsoleFile", winrs_script.EXSHELL_CONSOLE_FILE,
        "-OutputFormat", "xml", "-EncodedCommand", winrs_script.encode(script)]


def test_an_idle_shell_is_replaced_before_anything_is_sent(lab: InProcessLab) -> None:
    """limits.idle_timeout known (2 s here): idle for three quarters of it, the shell is deleted and a new one
    opened first; idle past it, a new one without the Delete (the server has expired it). No request meets a
    deleted shell either way."""
    from dataclasses import replace

    from orchestrator.transport.limits import Limits

    quick = replace(settings(lab), limits=Limits(idle_timeout=2.0))
    log = lab.server("EX2007").winrm.log
    probe = Command("Test-Path", (Param("Path", Text("C:\\Certs")),), shell=Shell.SYSTEM)
    session = WinrsServerSession(session_spec(lab.loaded.playbook.server("EX2007")), quick)
    start = len(log.records())
    try:
        session.invoke(probe, Values())
        creates, deletes = log.count("Create"), log.count("Delete")
        time.sleep(1.6)  # within 1.5..2 s: a Delete, then a new shell
        assert session.invoke(probe, Values()).output == [True]
        assert (log.count("Create"), log.count("Delete")) == (creates + 1, deletes + 1)
        time.sleep(2.1)  # past 2 s: the server expired it
        assert session.invoke(probe, Values()).output == [True]
        assert (log.count("Create"), log.count("Delete")) == (creates + 2, deletes + 1)
    finally:
        session.close()
    assert not any(r.wsman_fault for r in log.records()[start:])
