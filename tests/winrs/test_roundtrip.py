"""Every command a plan (and the executor) sends over WinRS reaches the lab's decoder as the same cmdlet
and parameter values, hostile values included; every command line fits cmd.exe's limit."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.commands import (
    Blob,
    Command,
    Flag,
    Number,
    Param,
    Secret,
    Shell,
    Switch,
    Text,
    TextList,
    Thumbprint,
)
from orchestrator.lab import pslang
from orchestrator.lab.exshell import decode_arguments
from orchestrator.lab.winrs_shell import split_command_line
from orchestrator.plan import Facts, IntermediateFact, build_plan
from orchestrator.playbook import Playbook, parse_playbook
from orchestrator.render import winrs_script
from orchestrator.yamlsource import SourceMap

THUMB = "0123456789ABCDEF0123456789ABCDEF01234567"
HOSTILE = ["'", "''", "\u2018", "\u2019", "\u201a", "\u201b", "$(calc)", "`n", "\"", ";", "|", "&", "\n",
           "\r\n", "${env:X}", "@(1)", "#", "<#", "-Force", " ", "\t", "\u00a0", "é", "\U0001f512",
           "$exmigSecret1", "'; Remove-Item C:\\ -Recurse; '", "\"C:\\x\" -Command", "%PATH%", "^", ">"]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(blacklist_categories=["Cs"]),
                                                                     max_size=5)), max_size=8).map("".join)


def _playbook(friendly: str = "mitserv", org: str = "My Org", workdir_leaf: str = "Certs") -> Playbook:
    def server(name: str, role: str) -> dict[str, Any]:
        return {"name": name, "version": 2007, "role": role,
                "connection": {"host": f"{name.lower()}.example.com", "transport": "winrs"},
                "credentials": {"username": "u", "password": {"env": "P"}}, "workdir": "C:\\" + workdir_leaf}

    data = {
        "certificate": {"subject": {"CN": "mail.example.com", "O": org}, "domains": ["mail.example.com"],
                        "friendly_name": friendly},
        "issuer": {"type": "manual"},
        "servers": [server("EX1", "source"), server("EX2", "target")],
    }
    return parse_playbook(data, SourceMap("winrs.yml"))


FACTS = Facts(csr_pem="csr", issued_thumbprint=THUMB, issued_subject="CN=mail.example.com",
              issued_file="issued.crt",
              intermediates=(IntermediateFact("FEDCBA9876543210FEDCBA9876543210FEDCBA98", "CN=Int", "chain.p7b",
                                              None, b"\x30\x03\x02\x01\x01"),))


def all_commands(playbook: Playbook) -> list[Command]:
    """The plan's commands (before and after the CA answered) and the executor's own reads."""
    commands = [c for facts in (Facts(), FACTS) for step in build_plan(playbook, facts).steps
                for c in (*step.reads, *step.commands, *(x for b in step.branches for x in b.commands))]
    for server in playbook.servers:
        commands += [
            Command("Get-ChildItem", (Param("Path", Text("Cert:\\LocalMachine\\CA")),), shell=Shell.SYSTEM,
                    changes=False),
            Command("Test-Path", (Param("Path", Text(server.workdir + "\\x.pfx")),), shell=Shell.SYSTEM,
                    changes=False),
            Command("Export-ExchangeCertificate", (Param("Thumbprint", Thumbprint(THUMB)),), changes=False),
        ]
    return commands


def _expected(value: Any) -> Any:
    if isinstance(value, Text):
        return value.value
    if isinstance(value, TextList):
        items = list(value.values)
        return items[0] if len(items) == 1 else items
    if isinstance(value, Number):
        return value.value
    if isinstance(value, Flag):
        return value.value
    if isinstance(value, Switch):
        return None if value.present else False
    if isinstance(value, Thumbprint):
        return value.value
    raise AssertionError(type(value).__name__)


def decode(script: str, exchange: bool) -> pslang.WinrsScript:
    """What the lab does with a command line: WinRS argv splitting, argument check, base64, parse."""
    line = winrs_script.command_line(script, winrs_script.EXSHELL_CONSOLE_FILE if exchange else None)
    assert len(line) <= winrs_script.CMD_EXE_LIMIT
    argv = split_command_line(line)
    assert argv[0] == "powershell.exe"
    console, decoded = decode_arguments(argv[1:])
    assert console is exchange
    assert decoded == script
    return pslang.parse_winrs_script(decoded)


def check_round_trip(command: Command, blob: bytes = b"") -> None:
    check_request((command,))


def check_request(commands: tuple[Command, ...]) -> None:
    """A request's script decodes to the same commands and values: secrets and bytes as the stdin variables."""
    # A thumbprint the CA has not given yet cannot be in a script; bytes not known yet can (they go on stdin).
    if any(isinstance(p.value, Thumbprint) and not p.value.known for c in commands for p in c.params):
        with pytest.raises(winrs_script.NotSendable):
            winrs_script.request_script(commands)
        return
    script = winrs_script.request_script(commands)
    form = decode(script.text, exchange=commands[0].shell is Shell.EXCHANGE)
    assert isinstance(form, pslang.WinrsCommand)
    assert [c.name for c in form.commands] == [c.name for c in commands]
    inputs = iter(form.inputs)
    for parsed, command in zip(form.commands, commands, strict=True):
        assert parsed.capture is None
        assert len(parsed.arguments) == len(command.params)
        for (name, value), param in zip(parsed.arguments, command.params, strict=True):
            assert name == param.name
            if isinstance(param.value, (Secret, Blob)):
                kind, variable = next(inputs)
                assert kind == ("secret" if isinstance(param.value, Secret) else "bytes")
                assert value == pslang.Variable(variable)
            else:
                assert value == _expected(param.value), (command.name, param.name)
    assert script.inputs == tuple(("secret" if isinstance(p.value, Secret) else "bytes", p.value.key)
                                  for c in commands for p in c.params if isinstance(p.value, (Secret, Blob)))
    assert script.secrets == tuple(p.value.key for c in commands for p in c.params if isinstance(p.value, Secret))


def test_every_plan_command_round_trips() -> None:
    commands = all_commands(_playbook())
    names = {c.name for c in commands}
    assert {"New-ExchangeCertificate", "Get-Content", "Set-Content", "certutil.exe", "Import-ExchangeCertificate",
            "Enable-ExchangeCertificate", "Export-ExchangeCertificate", "Remove-Item", "New-Item",
            "Get-ExchangeCertificate", "Get-ChildItem", "Test-Path"} <= names
    for command in commands:
        check_round_trip(command, blob=bytes(range(256)) * 30)


def test_the_secret_is_read_from_stdin_never_rendered() -> None:
    command = next(c for c in all_commands(_playbook()) if c.name == "Import-ExchangeCertificate"
                   and c.param("Password") is not None)
    script = winrs_script.command_script(command)
    assert script.secrets == ("pfx-password",)
    assert "[Console]::In.ReadLine()" in script.text
    assert script.text.splitlines()[-1].endswith("-Password $exmigSecret1")


def test_every_plan_request_round_trips() -> None:
    """A step's pipelines as the WinRS server gets them (every shell batches), one process each."""
    from orchestrator.steps import pipelines

    playbook = _playbook()
    for facts in (Facts(), FACTS):
        for step in build_plan(playbook, facts).steps:
            for commands in (step.commands, *(b.commands for b in step.branches)):
                for request in pipelines(commands, frozenset(Shell)):
                    check_request(request)


def _blob() -> Any:
    from orchestrator.commands import Blob, Captured

    return Blob("pfx", Captured("Export", "FileData", "the PFX"))


printable = st.text(st.characters(min_codepoint=32, blacklist_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1,
                    max_size=30)  # what the playbook accepts in text
hostile_printable = st.lists(st.sampled_from([h for h in HOSTILE if h.isprintable() and h]), min_size=1,
                             max_size=6).map("".join)


@settings(max_examples=40, deadline=None)
@given(friendly=st.one_of(printable, hostile_printable).filter(lambda s: len(s.strip()) > 0 and len(s) < 64),
       org=st.one_of(printable, hostile_printable).filter(lambda s: s.strip() != ""),
       leaf=st.sampled_from(["Certs", "My Certs", "Certs$x", "a'b", "x\u2019y", "`$(x)", "%TEMP%", "a^b&c"]))
def test_hostile_playbook_values_round_trip(friendly: str, org: str, leaf: str) -> None:
    for command in all_commands(_playbook(friendly, org, leaf)):
        check_round_trip(command, blob=b"\x00\xff" * 3000)


@settings(max_examples=200, deadline=None)
@given(value=hostile_text, values=st.lists(hostile_text, min_size=2, max_size=4))
def test_any_text_values_round_trip(value: str, values: list[str]) -> None:
    """The plan's command shapes with arbitrary strings in every text slot."""
    for command in [
        Command("Import-ExchangeCertificate", (Param("Path", Text(value)), Param("Password", Secret("pfx-password",
                                                                                                    "pw")))),
        Command("Enable-ExchangeCertificate", (Param("Thumbprint", Thumbprint(value)),
                                               Param("Services", TextList(tuple(values))), Param("Force", Switch()))),
        Command("New-ExchangeCertificate", (Param("GenerateRequest", Switch()), Param("SubjectName", Text(value)),
                                            Param("DomainName", TextList(tuple(values))),
                                            Param("KeySize", Number(2048)), Param("PrivateKeyExportable", Flag(True)),
                                            Param("Path", Text(value))), ),
        Command("Remove-Item", (Param("Path", Text(value)),), shell=Shell.SYSTEM),
    ]:
        check_round_trip(command)
    if value:
        check_round_trip(Command("certutil.exe", (Param(None, Text("-addstore")), Param(None, Text("CA")),
                                                  Param(None, Text(value))), shell=Shell.SYSTEM, native=True))
        path = "C:\\" + value.replace("\n", "").replace("\r", "")
        check_round_trip(Command("Set-Content", (Param("Path", Text(path)), Param("Value", _blob()),
                                                 Param("Encoding", Text("Byte")))), blob=value.encode())


@pytest.mark.parametrize("script", [
    "Get-ExchangeCertificate; Remove-Item -Path 'C:\\'",
    "Get-ExchangeCertificate | Remove-ExchangeCertificate",
    "$x = Get-ExchangeCertificate",
    "Import-ExchangeCertificate -Path 'a' -Password (Get-Credential).Password",
    "Import-ExchangeCertificate -Path 'a' -Password $exmigSecret1",
    "Remove-Item -Path \"C:\\$env:X\"",
    "Get-ExchangeCertificate\nRemove-Item -Path 'C:\\'",
    winrs_script.secret_prelude("exmigSecret1") + "\nGet-ExchangeCertificate",
    winrs_script.secret_prelude("exmigSecret1") + "\nImport-ExchangeCertificate -Password $exmigSecret1 "
    "-Path $exmigSecret1",
    winrs_script.bytes_prelude("exmigBytes1") + "\nSet-Content -Path 'C:\\a' -Value $exmigBytes1; calc.exe",
    winrs_script.bytes_prelude("exmigBytes1").replace("throw", "Remove-Item") + "\nSet-Content -Value $exmigBytes1",
    winrs_script.secret_prelude("exmigSecret1") + "\nGet-ExchangeCertificate\nImport-ExchangeCertificate "
    "-Password $exmigSecret1",
    "$ErrorActionPreference = 'Continue'\nGet-ExchangeCertificate\nRemove-Item -Path 'C:\\'",
    "$ErrorActionPreference = 'Stop'\nGet-ExchangeCertificate; Remove-Item -Path 'C:\\'",
    "[System.IO.File]::Delete('C:\\a')",
    "iex ([Text.Encoding]::Unicode.GetString([Convert]::FromBase64String('AAAA')))",
])
def test_scripts_the_renderer_never_produces_are_rejected(script: str) -> None:
    with pytest.raises(pslang.ParseError):
        pslang.parse_winrs_script(script)
