"""Render commands as PowerShell text, quoted by the language's rules.

Every string becomes a single-quoted (verbatim) literal: inside one, `$`, backticks and double
quotes are inert, and the only special characters are the five quote characters PowerShell
treats as a single quote (' and the Unicode quotes U+2018..U+201B), each escaped by doubling.
Secrets are never rendered: a SecureString parameter shows the prompt an admin would use.
"""

from __future__ import annotations

import re

from orchestrator.commands import (
    Blob,
    Captured,
    Command,
    Flag,
    LocalFile,
    Null,
    Number,
    Param,
    Pending,
    Secret,
    Switch,
    Text,
    TextList,
    Thumbprint,
    Value,
)

# PowerShell's tokenizer treats all of these as the single-quote character.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_BARE_NATIVE_ARG = re.compile(r"^-?[A-Za-z][A-Za-z0-9]*$")
_PARAM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_COMMAND_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(-[A-Za-z][A-Za-z0-9]*)?(\.exe)?$")


def quote(value: str) -> str:
    """A PowerShell single-quoted literal whose value is exactly `value`."""
    return "'" + "".join(ch + ch if ch in SINGLE_QUOTES else ch for ch in value) + "'"


def placeholder(description: str) -> str:
    """Something not known yet; deliberately not valid PowerShell, so pasting it fails loudly."""
    return f"<{description}>"


def render_value(value: Value) -> str:
    if isinstance(value, Text):
        return quote(value.value)
    if isinstance(value, TextList):
        return ",".join(quote(v) for v in value.values) if value.values else "@()"
    if isinstance(value, Number):
        return str(int(value.value))
    if isinstance(value, Null):
        return "$null"
    if isinstance(value, Flag):
        return "$true" if value.value else "$false"
    if isinstance(value, Switch):
        return "$true" if value.present else "$false"
    if isinstance(value, Thumbprint):
        return quote(value.value) if value.value is not None else placeholder(value.unknown)
    if isinstance(value, Secret):
        # The blog's form; the value itself never appears in any printed text.
        return "(Get-Credential).Password"
    if isinstance(value, Blob):
        origin = value.origin
        if isinstance(origin, LocalFile) and origin.member is not None:
            return placeholder(f"{origin.member} in {origin.path}")
        if isinstance(origin, LocalFile):
            return f"([Byte[]]$(Get-Content -Path {quote(origin.path)} -Encoding Byte -ReadCount 0))"
        if isinstance(origin, Captured):
            return f"${origin.variable}.{origin.property}"
        assert isinstance(origin, Pending)
        return placeholder(origin.description)
    raise TypeError(f"cannot render {type(value).__name__}")


def render_param(param: Param, native: bool) -> str:
    if param.name is None:
        assert isinstance(param.value, Text), "positional arguments are text"
        if native and _BARE_NATIVE_ARG.fullmatch(param.value.value):
            return param.value.value
        return quote(param.value.value)
    if not _PARAM_NAME.fullmatch(param.name):
        raise ValueError(f"not a parameter name: {param.name!r}")
    if isinstance(param.value, Switch):
        return f"-{param.name}" if param.value.present else f"-{param.name}:$false"
    if isinstance(param.value, Flag):
        # `-Name:$true` binds a [bool] even where the parser would otherwise see a switch.
        return f"-{param.name}:{render_value(param.value)}"
    return f"-{param.name} {render_value(param.value)}"


def render_command(command: Command, with_capture: bool = True) -> str:
    if not _COMMAND_NAME.fullmatch(command.name):
        raise ValueError(f"not a command name: {command.name!r}")
    parts = [command.name] + [render_param(p, command.native) for p in command.params]
    line = " ".join(parts)
    if with_capture and command.capture:
        line = f"${command.capture} = {line}"
    return line
