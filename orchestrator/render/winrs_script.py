"""Plan requests as the scripts the WinRS transport sends to `powershell.exe -EncodedCommand`.

Exchange 2007 servers without PowerShell remoting run the Exchange shell the way its shortcut
starts it, one process per request (a step's pipeline, `steps.pipelines`) over a WinRS cmd shell:

    powershell.exe -NoLogo -NoProfile -NonInteractive [-PSConsoleFile "<...>\\bin\\exshell.psc1"]
                   -OutputFormat xml -EncodedCommand <base64 of the UTF-16LE script>

A process start costs seconds on a real 2007 host (powershell.exe, and the Exchange snap-in the
console file loads), so a request's commands share one. `-PSConsoleFile` (Exchange cmdlets only)
loads the Exchange snap-in as the shortcut does; `-OutputFormat xml` makes powershell.exe (1.0 has
the switch) write its output objects to stdout as CLIXML (`#< CLIXML` header), so the transport
parses them with the same object model as PSRP results, and errors to stderr as CLIXML error
records. The script has one shape, no other (the lab's powershell.exe accepts exactly it,
`lab/pslang.parse_winrs_script`), lines in this order:

1. one fixed prelude line per value that must not be in a command line, each read from the
   process's stdin: a SecureString becomes `$exmigSecretN` (one stdin line)

       $exmigSecret1 = New-Object System.Security.SecureString; foreach ($exmigChar in
       [Console]::In.ReadLine().ToCharArray()) { $exmigSecret1.AppendChar($exmigChar) };
       $exmigSecret1.MakeReadOnly()          (one line in the script)

   and bytes (`Set-Content -Value <byte[]> -Encoding Byte`) become `$exmigBytesN` (two stdin lines: the
   base64 and its SHA-256, checked before anything uses the bytes; a damaged line throws
   `DAMAGED_INPUT` and the transport sends the request again):

       $exmigBytes1 = [System.Convert]::FromBase64String([Console]::In.ReadLine()); if
       ([System.BitConverter]::ToString([System.Security.Cryptography.SHA256]::Create().
       ComputeHash($exmigBytes1)).Replace('-', '') -ne [Console]::In.ReadLine()) { throw '...' }

   The values go in WinRS Sends on the command's stdin stream (pywinrm
   `Protocol.send_command_input`, the last with End=true): never part of a command line, so process
   creation auditing (event 4688), `winrs`/WinRM operational logs of the command line and the
   dry-run never see a secret, and the command line (hence the dry-run) does not depend on the data:
   it is exact before the CA has answered. `SecureString.AppendChar` is .NET 2.0, so this does not
   depend on `ConvertTo-SecureString -AsPlainText` (unconfirmed for PowerShell 1.0, reference §5). A
   secret must be one line (no CR/LF) in the shell's code page (437).
2. for several commands, `$ErrorActionPreference = 'Stop'`: the first error, also a non-terminating
   one, ends the script with that command's error record (about_Preference_Variables), as the
   PowerShell 2.0 dispatcher does over PSRP.
3. one line per command: the dry-run renderer's own text (`render_param`, `quote`) without the
   capture, so the dry-run shows what is sent.

Not confirmed against a real PowerShell 1.0 (the lab emulates these as documented in
`orchestrator/lab/exshell.py`): the exact CLIXML powershell.exe writes for errors with
`-OutputFormat xml`, and `[Console]::In.ReadLine()` reading WinRS stdin with pywinrm's
`WINRS_CONSOLEMODE_STDIN=TRUE`. The transport closes stdin (End=true) after the last line, so a
process never waits for more input.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.commands import Blob, Command, Param, Secret, Shell, Switch, Thumbprint
from orchestrator.render.powershell import render_command, render_param

POWERSHELL_EXE = "powershell.exe"
EXSHELL_CONSOLE_FILE = r"C:\Program Files\Microsoft\Exchange Server\bin\exshell.psc1"
CMD_EXE_LIMIT = 8191
SECRET_VARIABLE = "exmigSecret{index}"
BYTES_VARIABLE = "exmigBytes{index}"
STOP_ON_ERROR = "$ErrorActionPreference = 'Stop'"
DAMAGED_INPUT = "exmig: the bytes read from stdin arrived damaged"


class NotSendable(ValueError):
    """The command has a value the WinRS transport cannot put in a script (e.g. inline bytes)."""


def secret_variable(index: int) -> str:
    return SECRET_VARIABLE.format(index=index)


def secret_prelude(variable: str) -> str:
    v = "$" + variable
    return (f"{v} = New-Object System.Security.SecureString; foreach ($exmigChar in "
            f"[Console]::In.ReadLine().ToCharArray()) {{ {v}.AppendChar($exmigChar) }}; {v}.MakeReadOnly()")


def bytes_variable(index: int) -> str:
    return BYTES_VARIABLE.format(index=index)


def bytes_prelude(variable: str) -> str:
    """Bytes from two stdin lines, their base64 and its SHA-256 (upper-case hex): a damaged or cut line is
    refused before any command uses it (.NET 2.0 only: no Get-FileHash)."""
    v = "$" + variable
    return (f"{v} = [System.Convert]::FromBase64String([Console]::In.ReadLine()); if ([System.BitConverter]::"
            f"ToString([System.Security.Cryptography.SHA256]::Create().ComputeHash({v})).Replace('-', '') -ne "
            f"[Console]::In.ReadLine()) {{ throw '{DAMAGED_INPUT}' }}")


@dataclass(frozen=True)
class WinrsScript:
    text: str
    secrets: tuple[str, ...] = ()  # Secret keys, one stdin line each, in this order (stdin order: `inputs`)
    # Every stdin value in order: ("secret", key) is one line, ("bytes", key) two (base64, SHA-256).
    inputs: tuple[tuple[str, str], ...] = ()


def _command_line_text(command: Command, variable: Callable[[str, str], str]) -> str:
    head = render_command(Command(command.name, (), native=command.native), with_capture=False)
    parts = [head]
    for param in command.params:
        value = param.value
        if isinstance(value, (Secret, Blob)):
            kind = "secret" if isinstance(value, Secret) else "bytes"
            if param.name is None:
                raise NotSendable(f"{command.name}: a {'SecureString' if kind == 'secret' else 'byte[]'} must be "
                                  "a named parameter")
            # render_param of a switch is the validated `-Name`; the value is the variable.
            parts.append(render_param(Param(param.name, Switch()), command.native) + f" ${variable(kind, value.key)}")
            continue
        if isinstance(value, Thumbprint) and not value.known:
            raise NotSendable(f"{command.name} -{param.name}: the thumbprint is not known yet")
        parts.append(render_param(param, command.native))
    return " ".join(parts)


def request_script(commands: Sequence[Command]) -> WinrsScript:
    """One request's commands as one process's script: one stdin-reading prelude line per SecureString or
    byte[] value, then (for several commands) `$ErrorActionPreference = 'Stop'`, so the first error ends the
    process with that command's error record, then one line per command (the renderer's text)."""
    preludes: list[str] = []
    inputs: list[tuple[str, str]] = []
    counts = {"secret": 0, "bytes": 0}

    def variable(kind: str, key: str) -> str:
        counts[kind] += 1
        name = secret_variable(counts[kind]) if kind == "secret" else bytes_variable(counts[kind])
        inputs.append((kind, key))
        preludes.append(secret_prelude(name) if kind == "secret" else bytes_prelude(name))
        return name

    lines = [_command_line_text(c, variable) for c in commands]
    if not lines:
        raise NotSendable("a request has at least one command")
    head = [*preludes, STOP_ON_ERROR] if len(lines) > 1 else preludes
    secrets = tuple(key for kind, key in inputs if kind == "secret")
    return WinrsScript("\n".join([*head, *lines]), secrets, tuple(inputs))


def command_script(command: Command) -> WinrsScript:
    """A command as the script shape 1: the renderer's text, SecureStrings and bytes read from stdin."""
    return request_script((command,))


def encode(script: str) -> str:
    """`-EncodedCommand`'s argument: base64 of the script in UTF-16LE."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def arguments(script: str, console_file: str | None) -> list[str]:
    """powershell.exe's arguments (joined with spaces by pywinrm into rsp:Arguments)."""
    args = ["-NoLogo", "-NoProfile", "-NonInteractive"]
    if console_file is not None:
        if '"' in console_file or any(ord(ch) < 32 for ch in console_file):
            raise NotSendable(f"not a console file path: {console_file!r}")
        args += ["-PSConsoleFile", f'"{console_file}"']
    return [*args, "-OutputFormat", "xml", "-EncodedCommand", encode(script)]


def command_line(script: str, console_file: str | None) -> str:
    return " ".join([POWERSHELL_EXE, *arguments(script, console_file)])


def sent_command_line(command: Command, console_file: str) -> tuple[str, WinrsScript]:
    """What goes over the cmd shell for `command` alone (see sent_request)."""
    return sent_request((command,), console_file)


def sent_request(commands: Sequence[Command], console_file: str) -> tuple[str, WinrsScript]:
    """What goes over the cmd shell for one request (commands of one shell): the powershell.exe command line
    (the Exchange console file for Exchange cmdlets only, as the transport starts it) and the script it
    carries. NotSendable when the line would pass cmd.exe's limit."""
    if len({c.shell for c in commands}) != 1:
        raise NotSendable("a request goes to one shell")
    script = request_script(commands)
    line = command_line(script.text, console_file if commands[0].shell is Shell.EXCHANGE else None)
    if len(line) > CMD_EXE_LIMIT:
        raise NotSendable(f"the command is {len(line)} characters, over cmd.exe's {CMD_EXE_LIMIT}; WinRS "
                          "cannot send it")
    return line, script
