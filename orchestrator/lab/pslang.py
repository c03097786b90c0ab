"""A parser for the small PowerShell subset exmig's renderer emits.

The lab uses it to decode commands that arrive as text (WinRS `-EncodedCommand`), and tests use
it to prove the renderer's quoting round-trips. It follows the language's tokenizer rules for
what it accepts (verbatim strings: any of the five single-quote characters ends the string
unless the next character is one too, in which case that next character is taken literally) and
rejects everything else rather than guessing: the lab must not interpret script.

Accepted shapes (one command per line):
    [$Name = ]Command-Name [-Param | -Param value | -Param:value | value]...
Values: 'verbatim', 'a','b' lists, integers, $true/$false, (Get-Credential).Password,
([Byte[]]$(Get-Content -Path '...' -Encoding Byte -ReadCount 0)), $Var.Property, and bare
words for native-program arguments; a bare `$Var` only when the caller declares it.

`parse_winrs_script` reads the one script shape of the WinRS transport
(`orchestrator/render/winrs_script.py`): fixed stdin-reading prelude lines (a SecureString, or bytes
with their SHA-256), `$ErrorActionPreference = 'Stop'` before several commands, then one command per
line. Those fixed texts are written out again here rather than imported, so the round-trip tests
compare two independent spellings.

`dispatched_commands` reads the one script a FullLanguage PowerShell 2.0 session is sent for several
commands in one pipeline (`orchestrator/transport/psrp.DISPATCHER`, spelled again here): exactly that
text, with its single typed argument -Commands, each item [name, Hashtable of named parameters, list of
positional arguments]. The lab runs the commands that argument names, bound from its values; any other
script text is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")
_WS = " \t"


class ParseError(ValueError):
    pass


@dataclass(frozen=True)
class CredentialPassword:
    """`(Get-Credential).Password`: a secret the renderer did not print."""


@dataclass(frozen=True)
class FileBytes:
    path: str


@dataclass(frozen=True)
class VariableProperty:
    variable: str
    property: str


@dataclass(frozen=True)
class Placeholder:
    text: str


@dataclass(frozen=True)
class Variable:
    """A bare `$name` the script declared (WinRS: a SecureString read from stdin)."""

    name: str


@dataclass
class ParsedCommand:
    name: str
    # (name or None for positional, value); a switch has value None.
    arguments: list[tuple[str | None, Any]] = field(default_factory=list)
    capture: str | None = None


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z][A-Za-z0-9]*)?(?:\.exe)?")
_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_PARAM = re.compile(r"-([A-Za-z][A-Za-z0-9]*)(:?)")
_INT = re.compile(r"-?[0-9]+(?![A-Za-z0-9.])")
_BARE = re.compile(r"[^\s,'\u2018\u2019\u201a\u201b\"`$(){};|&<>@#]+")
_GET_CONTENT = re.compile(
    r"\(\[Byte\[\]\]\$\(Get-Content -Path ", re.IGNORECASE)
_GET_CONTENT_TAIL = " -Encoding Byte -ReadCount 0))"
_CREDENTIAL = "(Get-Credential).Password"


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def eof(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def skip_ws(self) -> None:
        while not self.eof() and self.text[self.pos] in _WS:
            self.pos += 1

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        m = pattern.match(self.text, self.pos)
        if m:
            self.pos = m.end()
        return m

    def literal(self, s: str, ignore_case: bool = False) -> bool:
        chunk = self.text[self.pos:self.pos + len(s)]
        if chunk == s or (ignore_case and chunk.lower() == s.lower()):
            self.pos += len(s)
            return True
        return False

    def verbatim_string(self) -> str:
        if self.eof() or self.text[self.pos] not in SINGLE_QUOTES:
            raise ParseError(f"expected a quoted string at {self.pos}")
        self.pos += 1
        out: list[str] = []
        while True:
            if self.eof():
                raise ParseError("unterminated string")
            ch = self.text[self.pos]
            self.pos += 1
            if ch in SINGLE_QUOTES:
                if self.eof() or self.text[self.pos] not in SINGLE_QUOTES:
                    return "".join(out)
                ch = self.text[self.pos]  # the second quote character is the one kept
                self.pos += 1
            out.append(ch)


def _scalar(r: _Reader, native: bool, variables: frozenset[str] = frozenset()) -> Any:
    if not r.eof() and r.text[r.pos] in SINGLE_QUOTES:
        return r.verbatim_string()
    if r.literal("$true", ignore_case=True):
        return True
    if r.literal("$false", ignore_case=True):
        return False
    if r.literal(_CREDENTIAL, ignore_case=True):
        return CredentialPassword()
    if r.match(_GET_CONTENT):
        path = r.verbatim_string()
        if not r.literal(_GET_CONTENT_TAIL, ignore_case=True):
            raise ParseError("unsupported Get-Content form")
        return FileBytes(path)
    var = r.match(_VAR)
    if var:
        if var.group(1).lower() in variables and r.peek() != ".":
            return Variable(var.group(1))
        if not r.literal("."):
            raise ParseError("a bare variable is not supported")
        prop = r.match(re.compile(r"[A-Za-z][A-Za-z0-9]*"))
        if not prop:
            raise ParseError("expected a property name")
        return VariableProperty(var.group(1), prop.group(0))
    if r.peek() == "<":
        end = r.text.find(">", r.pos)
        if end < 0:
            raise ParseError("unterminated placeholder")
        text = r.text[r.pos + 1:end]
        r.pos = end + 1
        return Placeholder(text)
    number = r.match(_INT)
    if number:
        return int(number.group(0))
    if native:
        bare = r.match(_BARE)
        if bare:
            return bare.group(0)
    raise ParseError(f"unsupported value at {r.pos}: {r.text[r.pos:r.pos + 20]!r}")


def _value(r: _Reader, native: bool, variables: frozenset[str] = frozenset()) -> Any:
    first = _scalar(r, native, variables)
    if r.peek() != ",":
        return first
    items = [first]
    while r.peek() == ",":
        r.pos += 1
        items.append(_scalar(r, native, variables))
    return items


def parse_command(line: str, variables: frozenset[str] = frozenset()) -> ParsedCommand:
    """Parse one rendered command line (string literals may span lines); `variables` (lower
    case) are the names a bare `$name` value may have."""
    r = _Reader(line.strip("\r\n"))
    r.skip_ws()
    capture = None
    var = r.match(_VAR)
    if var:
        r.skip_ws()
        if not r.literal("="):
            raise ParseError("expected '=' after the variable")
        capture = var.group(1)
        r.skip_ws()
    name = r.match(_NAME)
    if not name:
        raise ParseError("expected a command name")
    command = ParsedCommand(name=name.group(0), capture=capture)
    native = command.name.lower().endswith(".exe")
    while True:
        r.skip_ws()
        if r.eof():
            return command
        if not native and r.peek() == "-" and not _INT.match(r.text, r.pos):
            param = r.match(_PARAM)
            if not param:
                raise ParseError(f"bad parameter at {r.pos}")
            if param.group(2):  # -Name:value
                command.arguments.append((param.group(1), _value(r, native, variables)))
                continue
            r.skip_ws()
            if r.eof() or (r.peek() == "-" and _PARAM.match(r.text, r.pos) and not _INT.match(r.text, r.pos)):
                command.arguments.append((param.group(1), None))  # a switch
                continue
            command.arguments.append((param.group(1), _value(r, native, variables)))
            continue
        command.arguments.append((None, _value(r, native, variables)))


# --- WinRS powershell.exe scripts -----------------------------------------------------------------

_SECRET_PRELUDE = ("${v} = New-Object System.Security.SecureString; foreach ($exmigChar in "
                   "[Console]::In.ReadLine().ToCharArray()) {{ ${v}.AppendChar($exmigChar) }}; ${v}.MakeReadOnly()")
_SECRET_NAME = "exmigSecret{index}"
@dataclass(frozen=True)
class WinrsCommand:
    commands: tuple[ParsedCommand, ...]
    secrets: tuple[str, ...]  # the declared SecureString variables, one stdin line each
    # Every declared variable in stdin order: ("secret", name) one line, ("bytes", name) two (base64, SHA-256).
    inputs: tuple[tuple[str, str], ...] = ()

    @property
    def command(self) -> ParsedCommand:
        return self.commands[0]


WinrsScript = WinrsCommand


_BYTES_PRELUDE = ("${v} = [System.Convert]::FromBase64String([Console]::In.ReadLine()); if ([System.BitConverter]::"
                  "ToString([System.Security.Cryptography.SHA256]::Create().ComputeHash(${v})).Replace('-', '') -ne "
                  "[Console]::In.ReadLine()) {{ throw 'exmig: the bytes read from stdin arrived damaged' }}")
_BYTES_NAME = "exmigBytes{index}"
_STOP = "$ErrorActionPreference = 'Stop'"


def _top_level_lines(text: str) -> list[str]:
    """Split at line breaks outside verbatim strings (the only quoting the accepted commands use)."""
    lines: list[str] = []
    start, pos, quoted = 0, 0, False
    while pos < len(text):
        ch = text[pos]
        if ch in SINGLE_QUOTES:
            if quoted and pos + 1 < len(text) and text[pos + 1] in SINGLE_QUOTES:
                pos += 2
                continue
            quoted = not quoted
        elif ch == "\n" and not quoted:
            lines.append(text[start:pos])
            start = pos + 1
        pos += 1
    lines.append(text[start:])
    return lines


def parse_winrs_script(text: str) -> WinrsScript:
    """One script the WinRS transport sends (see the module docstring), or ParseError."""
    inputs: list[tuple[str, str]] = []
    rest = text
    while True:
        secret = _SECRET_NAME.format(index=sum(k == "secret" for k, _ in inputs) + 1)
        blob = _BYTES_NAME.format(index=sum(k == "bytes" for k, _ in inputs) + 1)
        for kind, name, prelude in (("secret", secret, _SECRET_PRELUDE.format(v=secret) + "\n"),
                                    ("bytes", blob, _BYTES_PRELUDE.format(v=blob) + "\n")):
            if rest.startswith(prelude):
                inputs.append((kind, name))
                rest = rest[len(prelude):]
                break
        else:
            break
    stop = rest.startswith(_STOP + "\n")
    if stop:
        rest = rest[len(_STOP) + 1:]
    lines = _top_level_lines(rest)
    if len(lines) > 1 and not stop:
        raise ParseError("several commands come after $ErrorActionPreference = 'Stop'")
    declared = frozenset(name.lower() for _, name in inputs)
    commands = [parse_command(line, variables=declared) for line in lines]
    used: list[str] = []
    for command in commands:
        if command.capture is not None:
            raise ParseError("an assignment is not a command")
        for _, value in command.arguments:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, (CredentialPassword, FileBytes, VariableProperty, Placeholder)):
                    raise ParseError(f"{type(item).__name__} is a dry-run form, not something the transport sends")
        used += [v.name.lower() for _, v in command.arguments if isinstance(v, Variable)]
    if sorted(used) != sorted(declared):
        raise ParseError("each value read from stdin must be used exactly once")
    secrets = tuple(name for kind, name in inputs if kind == "secret")
    return WinrsCommand(tuple(commands), secrets, tuple(inputs))


# --- the PSRP dispatcher (PowerShell 2.0 FullLanguage sessions) --------------------------------------

_DISPATCHER = "\n".join([
    "param([object[]]$Commands)",
    "$ErrorActionPreference = 'Stop'",
    "foreach ($exmigCommand in $Commands) {",
    "    $exmigName = $exmigCommand[0]",
    "    $exmigNamed = $exmigCommand[1]",
    "    $exmigPositional = $exmigCommand[2]",
    "    & $exmigName @exmigPositional @exmigNamed",
    "}",
])


def is_dispatcher(text: str) -> bool:
    return text.replace("\r\n", "\n") == _DISPATCHER


def dispatched_commands(arguments: list[tuple[str | None, Any]]) -> list[tuple[str, list[tuple[str | None, Any]]]]:
    """The dispatcher's -Commands as (name, [(parameter name or None, value)]), positional first as the
    splatting binds them; ParseError for any other argument shape."""
    if len(arguments) != 1 or (arguments[0][0] or "").lower() != "commands" or not isinstance(arguments[0][1], list):
        raise ParseError("the dispatcher takes one argument, -Commands, a list")
    out: list[tuple[str, list[tuple[str | None, Any]]]] = []
    for item in arguments[0][1]:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], dict) and isinstance(item[2], list)):
            raise ParseError("each dispatched command is [name, Hashtable, list]")
        name, named, positional = item
        if not _NAME.fullmatch(name):
            raise ParseError(f"not a command name: {name!r}")
        args: list[tuple[str | None, Any]] = [(None, v) for v in positional]
        args += [(str(k), v) for k, v in named.items()]
        out.append((name, args))
    return out
