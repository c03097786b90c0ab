"""Run a PSRP pipeline's statements against the Registry, independent of the wire.

Semantics (the subset of PowerShell the lab needs):
- statements run in order; inside one, commands are piped: every output object of one
  command is bound as pipeline input of the next (`registry.bind(..., input_object=,
  has_input=True)`), and the handler runs once per input object;
- client pipeline input (`invoke(input=[...])`) feeds the first command of the first statement;
- a `LabError` raised by lookup, first binding or a handler is terminating: nothing more
  runs and the caller fails the pipeline with it; `call.write_error` is non-terminating;
  a binding error for one *piped* object is non-terminating too (PowerShell's InputObjectNotBound
  behaviour), so the other objects still run;
- language modes: NoLanguage refuses any script command before anything runs (lab choice of
  error id, see `no_language_error`); FullLanguage would run scripts, but the lab does not
  interpret script text, so it refuses them with an explicit lab error;
- native programs (`registry.native`) run where PowerShell would find them: in FullLanguage
  sessions, when no cmdlet has the name. Arguments are rendered as PowerShell's native binder
  does for API parameters (positional -> the value, named -> `-Name` or `-Name:value`); stdout
  comes back one string per line, each stderr line is a non-terminating NativeCommandError
  record, and the exit code does not fail the pipeline (as `$LASTEXITCODE` does not).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from orchestrator.lab.registry import (
    CommandCall,
    ErrorCategory,
    LabError,
    NativeCommandSpec,
    Registry,
    Session,
    bind,
)


class LanguageMode(Enum):
    FULL = "FullLanguage"
    RESTRICTED = "RestrictedLanguage"
    NO_LANGUAGE = "NoLanguage"


@dataclass
class Invocation:
    """One command of a statement as the client sent it."""

    name: str  # cmdlet name, or script text when is_script
    arguments: list[tuple[str | None, Any]] = field(default_factory=list)  # plain Python values
    is_script: bool = False


Statement = list[Invocation]


class Sink(Protocol):
    def output(self, value: Any) -> None: ...
    def error(self, error: LabError) -> None: ...
    def warning(self, text: str) -> None: ...


class PipelineStopped(Exception):
    """The client stopped the pipeline (ctrl_c)."""


def no_language_error(text: str) -> LabError:
    # Text as Exchange's no-language endpoint answers (reference §4.2). The error id and
    # category are a lab choice: it is a parse-time refusal, so ParseException/ParserError.
    return LabError(
        message="The syntax is not supported by this runspace. This can occur if the runspace is in "
        "no-language mode.",
        error_id="ScriptsNotAllowed",
        category=ErrorCategory.ParserError,
        exception_type="System.Management.Automation.ParseException",
        target=text,
    )


def script_not_supported_error(text: str) -> LabError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return LabError(
        message="Lab limitation: this emulated server runs commands only (AddCommand); it does not "
        f"interpret PowerShell script text: {shown}",
        error_id="LabScriptNotSupported",
        category=ErrorCategory.NotImplemented,
        exception_type="System.NotSupportedException",
        target=text,
    )


def check_language(statements: list[Statement], mode: LanguageMode) -> None:
    for statement in statements:
        for inv in statement:
            if inv.is_script:
                if mode is LanguageMode.NO_LANGUAGE:
                    raise no_language_error(inv.name)
                # FullLanguage and RestrictedLanguage would parse the text; the lab does not.
                raise script_not_supported_error(inv.name)


def run_pipeline(
    registry: Registry,
    session: Session,
    statements: list[Statement],
    sink: Sink,
    language: LanguageMode = LanguageMode.FULL,
    input_objects: list[Any] | None = None,
    stop: threading.Event | None = None,
    stop_on_error: bool = False,
) -> None:
    """Run all statements; raises LabError (terminating) or PipelineStopped. `stop_on_error`: as with
    $ErrorActionPreference = 'Stop', the first error record, also a non-terminating one, is terminating."""
    check_language(statements, language)
    if stop_on_error:
        sink = _Strict(sink)
    stop = stop or threading.Event()
    natives = language is LanguageMode.FULL
    for index, statement in enumerate(statements):
        piped: list[Any] | None = input_objects if index == 0 and input_objects is not None else None
        for position, inv in enumerate(statement):
            registry.record(inv.name)
            last = position == len(statement) - 1
            native = _native_for(registry, session, inv.name) if natives else None
            if native is not None:
                piped = _run_native(native, session, inv, sink, stop, to_sink=last)
            else:
                piped = _run_command(registry, session, inv, piped, sink, stop, to_sink=last)


class _Strict:
    def __init__(self, inner: Sink) -> None:
        self._inner = inner

    def output(self, value: Any) -> None:
        self._inner.output(value)

    def error(self, error: LabError) -> None:
        raise error

    def warning(self, text: str) -> None:
        self._inner.warning(text)


def _native_for(registry: Registry, session: Session, name: str) -> NativeCommandSpec | None:
    try:
        registry.command(name, session)
        return None  # a cmdlet wins over a program of the same name
    except LabError:
        return registry.native(name)


def native_arguments(arguments: list[tuple[str | None, Any]]) -> list[str]:
    """API parameters -> a program's argv the way PowerShell's native binder renders them."""

    def text(value: Any) -> list[str]:
        if isinstance(value, (list, tuple)):
            return [t for v in value for t in text(v)]
        if isinstance(value, bool):
            return ["True" if value else "False"]
        if value is None:
            return []
        return [str(value)]

    argv: list[str] = []
    for name, value in arguments:
        if name is None:
            argv.extend(text(value))
        elif value is None:
            argv.append("-" + name.lstrip("-"))
        else:
            argv.append("-" + name.lstrip("-") + ":" + " ".join(text(value)))
    return argv


def _lines(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _run_native(
    spec: NativeCommandSpec,
    session: Session,
    inv: Invocation,
    sink: Sink,
    stop: threading.Event,
    to_sink: bool,
) -> list[Any]:
    if stop.is_set():
        raise PipelineStopped()
    result = spec.handler(native_arguments(inv.arguments), session)
    for i, line in enumerate(_lines(result.stderr)):
        sink.error(LabError(
            message=line,
            error_id="NativeCommandError" if i == 0 else "NativeCommandErrorMessage",
            category=ErrorCategory.NotSpecified,
            exception_type="System.Management.Automation.RemoteException",
            target=line if i == 0 else None,
            activity=spec.name,
        ))
    lines = _lines(result.stdout)
    if to_sink:
        for line in lines:
            sink.output(line)
        return []
    return list(lines)


def _run_command(
    registry: Registry,
    session: Session,
    inv: Invocation,
    piped: list[Any] | None,
    sink: Sink,
    stop: threading.Event,
    to_sink: bool,
) -> list[Any]:
    if stop.is_set():
        raise PipelineStopped()
    spec = registry.command(inv.name, session)
    produced: list[Any] = []

    def call_once(params: dict[str, Any]) -> None:
        call = CommandCall(name=spec.name, params=params, session=session)
        try:
            spec.handler(call)
        finally:
            # What a handler wrote before failing still reaches the client, as in PowerShell.
            for text in call.warnings:
                sink.warning(text)
            # -ErrorAction SilentlyContinue/Ignore drops the command's non-terminating errors, as PowerShell does
            # (about_CommonParameters); a terminating one (LabError raised) still ends the pipeline.
            silent = str(params.get("ErrorAction", "")).lower() in ("silentlycontinue", "ignore")
            for err in call.errors:
                if err.activity is None:
                    err.activity = spec.name
                if not silent:
                    sink.error(err)
            if to_sink:
                for value in call.output:
                    sink.output(value)
            else:
                produced.extend(call.output)

    try:
        if piped is None:
            call_once(bind(spec, inv.arguments))
        else:
            for obj in piped:
                if stop.is_set():
                    raise PipelineStopped()
                try:
                    params = bind(spec, inv.arguments, input_object=obj, has_input=True)
                except LabError as err:
                    err.activity = err.activity or spec.name
                    sink.error(err)
                    continue
                call_once(params)
    except LabError as err:
        if err.activity is None:
            err.activity = spec.name
        raise
    return produced
