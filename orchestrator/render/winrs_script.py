"""Plan commands as the scripts the WinRS transport sends to `powershell.exe -EncodedCommand`.

Exchange 2007 servers without PowerShell remoting run the Exchange shell the way its shortcut
starts it, one process per command over a WinRS cmd shell:

    powershell.exe -NoLogo -NoProfile -NonInteractive [-PSConsoleFile "<...>\\bin\\exshell.psc1"]
                   -OutputFormat xml -EncodedCommand <base64 of the UTF-16LE script>

`-PSConsoleFile` (Exchange cmdlets only) loads the Exchange snap-in as the shortcut does;
`-OutputFormat xml` makes powershell.exe (1.0 has the switch) write its output objects to stdout
as CLIXML (`#< CLIXML` header), so the transport parses them with the same object model as PSRP
results, and errors to stderr as CLIXML error records. The script is one of three shapes, no
others (the lab's powershell.exe accepts exactly these, `lab/pslang.parse_winrs_script`):

1. a command: the dry-run renderer's own text (`render_param`, `quote`) without the capture, so
   the dry-run shows what is sent; a SecureString parameter becomes `$exmigSecretN`, built by one
   fixed prelude line per secret that reads one line of the process's stdin:

       $exmigSecret1 = New-Object System.Security.SecureString; foreach ($exmigChar in
       [Console]::In.ReadLine().ToCharArray()) { $exmigSecret1.AppendChar($exmigChar) };
       $exmigSecret1.MakeReadOnly()          (one line in the script)

   The secret's text goes in a WinRS Send on the command's stdin stream (pywinrm
   `Protocol.send_command_input(..., end=True)`): it is never part of a command line, so process
   creation auditing (event 4688), `winrs`/WinRM operational logs of the command line and the
   dry-run never see it. `SecureString.AppendChar` is .NET 2.0, so this does not depend on
   `ConvertTo-SecureString -AsPlainText` (unconfirmed for PowerShell 1.0, reference §5). A secret
   must be one line (no CR/LF) in the shell's code page (437).
2. a byte write (chunk k of a file, first chunk truncates):

       $exmigBytes = [System.Convert]::FromBase64String('<base64>'); $exmigFile =
       [System.IO.File]::Open('<path>', 'Create'|'Append', 'Write'); $exmigFile.Write($exmigBytes,
       0, $exmigBytes.Length); $exmigFile.Close()          (one line)

   Chunks are sized so the whole command line stays within `COMMAND_LINE_BUDGET` (cmd.exe's 8191
   characters, WinRS runs the command through cmd.exe, minus a margin for `cmd.exe /c`).
3. a hash check, SHA-256 with .NET 2.0 (Get-FileHash needs PowerShell 4):

       $exmigStream = [System.IO.File]::OpenRead('<path>'); $exmigHash = [System.BitConverter]::
       ToString([System.Security.Cryptography.SHA256]::Create().ComputeHash($exmigStream)).
       Replace('-', ''); $exmigStream.Close(); $exmigHash          (one line)

   It outputs the upper-case hex digest, which the transport compares with its own.

Not confirmed against a real PowerShell 1.0 (the lab emulates these as documented in
`orchestrator/lab/exshell.py`): the exact CLIXML powershell.exe writes for errors with
`-OutputFormat xml`, and `[Console]::In.ReadLine()` reading WinRS stdin with pywinrm's
`WINRS_CONSOLEMODE_STDIN=TRUE`. The transport closes stdin (End=true) after the secret lines, so a
process never waits for more input.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from orchestrator.commands import Blob, Command, Param, Secret, Shell, Switch, Thumbprint
from orchestrator.render.powershell import quote, render_command, render_param

POWERSHELL_EXE = "powershell.exe"
EXSHELL_CONSOLE_FILE = r"C:\Program Files\Microsoft\Exchange Server\bin\exshell.psc1"
CMD_EXE_LIMIT = 8191
COMMAND_LINE_BUDGET = CMD_EXE_LIMIT - 191  # room for WinRS's `cmd.exe /c ` and quoting
SECRET_VARIABLE = "exmigSecret{index}"


class NotSendable(ValueError):
    """The command has a value the WinRS transport cannot put in a script (e.g. inline bytes)."""


def secret_variable(index: int) -> str:
    return SECRET_VARIABLE.format(index=index)


def secret_prelude(variable: str) -> str:
    v = "$" + variable
    return (f"{v} = New-Object System.Security.SecureString; foreach ($exmigChar in "
            f"[Console]::In.ReadLine().ToCharArray()) {{ {v}.AppendChar($exmigChar) }}; {v}.MakeReadOnly()")


@dataclass(frozen=True)
class WinrsScript:
    text: str
    secrets: tuple[str, ...] = ()  # Secret keys, one stdin line each, in this order


def command_script(command: Command) -> WinrsScript:
    """A command as the script shape 1: the renderer's text, SecureStrings read from stdin."""
    head = render_command(Command(command.name, (), native=command.native), with_capture=False)
    parts = [head]
    preludes: list[str] = []
    keys: list[str] = []
    for param in command.params:
        value = param.value
        if isinstance(value, Secret):
            if param.name is None:
                raise NotSendable(f"{command.name}: a SecureString must be a named parameter")
            variable = secret_variable(len(keys) + 1)
            keys.append(value.key)
            preludes.append(secret_prelude(variable))
            # render_param of a switch is the validated `-Name`; the value is the variable.
            parts.append(render_param(Param(param.name, Switch()), command.native) + f" ${variable}")
            continue
        if isinstance(value, Blob):
            raise NotSendable(f"{command.name} -{param.name}: bytes cannot be sent inline over WinRS; "
                              "write them to a file (Set-Content -Encoding Byte) and pass -Path")
        if isinstance(value, Thumbprint) and not value.known:
            raise NotSendable(f"{command.name} -{param.name}: the thumbprint is not known yet")
        parts.append(render_param(param, command.native))
    return WinrsScript("\n".join([*preludes, " ".join(parts)]), tuple(keys))


def write_chunk_script(path: str, chunk: bytes, first: bool) -> str:
    data = base64.b64encode(chunk).decode("ascii")
    mode = "Create" if first else "Append"
    return (f"$exmigBytes = [System.Convert]::FromBase64String('{data}'); $exmigFile = "
            f"[System.IO.File]::Open({quote(path)}, '{mode}', 'Write'); "
            "$exmigFile.Write($exmigBytes, 0, $exmigBytes.Length); $exmigFile.Close()")


def hash_script(path: str) -> str:
    return (f"$exmigStream = [System.IO.File]::OpenRead({quote(path)}); $exmigHash = [System.BitConverter]::"
            "ToString([System.Security.Cryptography.SHA256]::Create().ComputeHash($exmigStream))."
            "Replace('-', ''); $exmigStream.Close(); $exmigHash")


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
    """What goes over the cmd shell for `command`: the powershell.exe command line (the Exchange console
    file for Exchange cmdlets only, as the transport starts it) and the script it carries."""
    script = command_script(command)
    return command_line(script.text, console_file if command.shell is Shell.EXCHANGE else None), script


def chunk_capacity(path: str, console_file: str | None = None, budget: int = COMMAND_LINE_BUDGET) -> int:
    """The most bytes one write chunk may carry with the command line within `budget` characters."""
    fixed = len(command_line("", console_file))
    room = budget - fixed  # characters left for the base64 of the UTF-16LE script
    script_bytes = (room // 4) * 3
    overhead = len(write_chunk_script(path, b"", True).encode("utf-16-le"))
    b64_chars = ((script_bytes - overhead) // 2) // 4 * 4  # base64 text: 2 bytes a character in UTF-16
    capacity = b64_chars // 4 * 3
    if capacity < 48:
        raise NotSendable(f"the path {path!r} is too long for a WinRS byte write")
    return capacity


def write_scripts(path: str, data: bytes, console_file: str | None = None,
                  budget: int = COMMAND_LINE_BUDGET) -> list[str]:
    """The byte-write scripts for `data`, in order (an empty file is one empty Create)."""
    size = chunk_capacity(path, console_file, budget)
    starts = range(0, len(data), size) if data else range(1)
    return [write_chunk_script(path, data[i:i + size], i == 0) for i in starts]
