"""`powershell.exe` for the lab's WinRS cmd shell: the Exchange 2007 management shell over WinRS.

Runs exactly what exmig's WinRS transport sends (`orchestrator/render/winrs_script.py`):

    powershell.exe -NoLogo -NoProfile -NonInteractive [-PSConsoleFile "<console file>"]
                   -OutputFormat xml -EncodedCommand <base64 UTF-16LE script>

and refuses anything else with a clear lab error, because the lab does not interpret script text:
other switches (`-Command`, `-File`, ...) get a "Lab limitation" line on stderr and exit code 1; a
script that is not the shape `pslang.parse_winrs_script` reads gets the `LabScriptNotSupported` error
record.

- `-PSConsoleFile` must name the server's `exshell.psc1` (default path in `EXSHELL_CONSOLE_FILE`);
  it adds the Exchange snap-in to this process's session, as the console file does. Without it only
  Windows commands exist. Each invocation is a new process: a new session.
- The commands run through `engine.run_pipeline` (binding, errors, natives such as certutil.exe), one
  statement per line, the first error ending the script when there are several ('Stop');
  each `$exmigSecretN` is read as one line of the program's stdin (WinRS Send), waiting at most
  `stdin_timeout` seconds, and bound as a SecureString; each `$exmigBytesN` as two (base64, SHA-256),
  refused with the script's own error when they do not match.

Output (lab choice, documented; the exact bytes of a real PowerShell 1.0 are not in the reference):
stdout is `#< CLIXML` + `<Objs>` with every output object, stderr is `#< CLIXML` + `<Objs>` with
each error as a serialized ErrorRecord (`<Obj S="error">`) and each warning as `<S S="warning">`
(nothing when there are none); the exit code is 1 when any error was written, else 0. Non-ASCII
characters are written as XML character references so the text survives the shell's OEM code page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from psrpcore.types import ClixmlStream, PSCryptoProvider, serialize_clixml

from orchestrator.lab import engine, pslang, serialize
from orchestrator.lab.exchange import EMS_2007_SNAPIN, ExchangeServerModel
from orchestrator.lab.objects import Secret
from orchestrator.lab.psrp_shell import error_record
from orchestrator.lab.registry import ErrorCategory, LabError, NativeCommandSpec, NativeResult, Registry, Session
from orchestrator.lab.winrs_shell import current_stdin

EXSHELL_CONSOLE_FILE = r"C:\Program Files\Microsoft\Exchange Server\bin\exshell.psc1"
CLIXML_HEADER = "#< CLIXML\r\n"
MAX_INVOCATIONS = 10_000
_LEADING = ("-nologo", "-noprofile", "-noninteractive")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def lab_script_error(reason: str, script: str = "") -> LabError:
    shown = script if len(script) <= 120 else script[:117] + "..."
    return LabError(
        message="Lab limitation: the emulated powershell.exe runs only the scripts exmig's WinRS transport "
        f"renders (one command with literal parameters, a byte write, a hash check): {reason}"
        + (f": {shown}" if shown else ""),
        error_id="LabScriptNotSupported",
        category=ErrorCategory.NotImplemented,
        exception_type="System.NotSupportedException",
        target=shown or None,
    )


def _method_error(method: str, count: int, message: str, target: str) -> LabError:
    return LabError(
        message=f'Exception calling "{method}" with "{count}" argument(s): "{message}"',
        error_id="DotNetMethodException",
        category=ErrorCategory.NotSpecified,
        exception_type="System.Management.Automation.MethodInvocationException",
        target=target,
    )


@dataclass
class _Collect:
    errors: list[LabError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _clixml(items: list[tuple[Any, ClixmlStream]]) -> str:
    text = serialize_clixml(items, PSCryptoProvider())
    return CLIXML_HEADER + _NON_ASCII.sub(lambda m: f"&#x{ord(m.group(0)):X};", text)


class ArgumentsRejected(ValueError):
    """powershell.exe's arguments are not the shape exmig's WinRS transport sends."""


def decode_arguments(args: list[str], console_file: str = EXSHELL_CONSOLE_FILE) -> tuple[bool, str]:
    """(console file given, decoded script) from powershell.exe's argv[1:], or ArgumentsRejected."""
    lowered = [a.lower() for a in args]
    if lowered[:3] != list(_LEADING):
        raise ArgumentsRejected("powershell.exe takes -NoLogo -NoProfile -NonInteractive first here; got "
                                + " ".join(args[:3]))
    rest = args[3:]
    console = False
    if rest[:1] and rest[0].lower() == "-psconsolefile":
        if len(rest) < 2 or rest[1].lower() != console_file.lower():
            raise ArgumentsRejected(f"-PSConsoleFile must be {console_file}")
        console = True
        rest = rest[2:]
    if len(rest) != 4 or [r.lower() for r in rest[:3]] != ["-outputformat", "xml", "-encodedcommand"]:
        raise ArgumentsRejected("only -OutputFormat xml -EncodedCommand <script> is run (no -Command, -File or "
                                "other switches)")
    try:
        return console, base64.b64decode(rest[3], validate=True).decode("utf-16-le")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ArgumentsRejected("-EncodedCommand is not base64 of UTF-16LE text") from None


@dataclass(frozen=True)
class Invocation:
    """What the lab saw of one powershell.exe start (tests: no secret in a command line)."""

    command_line: str
    script: str | None


class ExShell:
    """The `powershell.exe` native handler of one emulated Exchange 2007 server."""

    def __init__(self, registry: Registry, model: ExchangeServerModel,
                 console_file: str = EXSHELL_CONSOLE_FILE, snapin: str = EMS_2007_SNAPIN,
                 stdin_timeout: float = 10.0) -> None:
        self.registry = registry
        self.model = model
        self.console_file = console_file
        self.snapin = snapin
        self.stdin_timeout = stdin_timeout
        self._lock = threading.Lock()
        # The last MAX_INVOCATIONS starts, so a long `exmig lab serve` does not grow without bound.
        self._seen: deque[Invocation] = deque(maxlen=MAX_INVOCATIONS)

    @property
    def invocations(self) -> list[Invocation]:
        with self._lock:
            return list(self._seen)

    # --- the process ------------------------------------------------------------------------------

    def __call__(self, args: list[str], session: Session) -> NativeResult:
        line = " ".join(["powershell.exe", *args])
        try:
            console, script = decode_arguments(args, self.console_file)
        except ArgumentsRejected as exc:
            with self._lock:
                self._seen.append(Invocation(line, None))
            return NativeResult(stderr=f"Lab limitation: {exc}\r\n", exit_code=1)
        with self._lock:
            self._seen.append(Invocation(line, script))
        sink = _Collect()
        outputs: list[Any] = []
        try:
            form = pslang.parse_winrs_script(script)
        except pslang.ParseError as exc:
            return self._result([], [lab_script_error(str(exc), script)], [])
        try:
            outputs.extend(self._command(form, session, console, sink))
        except LabError as err:  # terminating: what ran before it still reaches the client
            sink.errors.append(err)
        return self._result(outputs, sink.errors, sink.warnings)

    def _result(self, outputs: list[Any], errors: list[LabError], warnings: list[str]) -> NativeResult:
        stdout = _clixml([(serialize.to_ps(o), ClixmlStream.OUTPUT) for o in outputs])
        err_items: list[tuple[Any, ClixmlStream]] = [(error_record(e), ClixmlStream.ERROR) for e in errors]
        err_items += [(w, ClixmlStream.WARNING) for w in warnings]
        stderr = _clixml(err_items) if err_items else ""
        return NativeResult(stdout=stdout, stderr=stderr, exit_code=1 if errors else 0)

    # --- the three shapes -----------------------------------------------------------------------

    def _command(self, form: pslang.WinrsCommand, cmd_session: Session, console: bool,
                 sink: _Collect) -> list[Any]:
        values: dict[str, Any] = {}
        reader = current_stdin()

        def line(name: str) -> str:
            text = reader.read_line(self.stdin_timeout) if reader is not None else None
            if text is None:
                raise lab_script_error(f"no line on stdin for ${name} within {self.stdin_timeout:g} s")
            return text

        for kind, name in form.inputs:
            if kind == "secret":
                values[name.lower()] = Secret(line(name))
                continue
            encoded, digest = line(name), line(name)
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise _method_error("FromBase64String", 1, "Invalid character in a Base-64 string.", name) from None
            if hashlib.sha256(data).hexdigest().upper() != digest:
                raise LabError(message="exmig: the bytes read from stdin arrived damaged",
                               error_id="exmig: the bytes read from stdin arrived damaged",
                               category=ErrorCategory.OperationStopped,
                               exception_type="System.Management.Automation.RuntimeException")
            values[name.lower()] = data
        statements = [[engine.Invocation(c.name, [(param, self._value(value, values)) for param, value in c.arguments])]
                      for c in form.commands]
        # A new process: its own session, with the snap-in only when the console file loaded it.
        session = Session(configuration="Microsoft.PowerShell", username=cmd_session.username,
                          snapins={self.snapin} if console else set())
        out: list[Any] = []

        class Sink:
            def output(self, value: Any) -> None:
                out.append(value)

            def error(self, error: LabError) -> None:
                sink.errors.append(error)

            def warning(self, text: str) -> None:
                sink.warnings.append(text)

        try:
            # Several commands come after $ErrorActionPreference = 'Stop': the first error ends the script.
            engine.run_pipeline(self.registry, session, statements, Sink(), engine.LanguageMode.FULL,
                                stop_on_error=len(statements) > 1)
        except LabError as err:
            sink.errors.append(err)
        return out

    def _value(self, value: Any, values: dict[str, Any]) -> Any:
        if isinstance(value, pslang.Variable):
            return values[value.name.lower()]
        if isinstance(value, list):
            return [self._value(v, values) for v in value]
        if isinstance(value, (pslang.CredentialPassword, pslang.FileBytes, pslang.VariableProperty,
                              pslang.Placeholder)):
            raise lab_script_error(f"{type(value).__name__} is a dry-run form, not something the transport sends")
        return value


def register_exshell(registry: Registry, model: ExchangeServerModel, **options: Any) -> ExShell:
    """Add `powershell.exe` (alias `powershell`) to a 2007 server's registry; returns the handler."""
    shell = ExShell(registry, model, **options)
    registry.register_native(NativeCommandSpec("powershell.exe", shell, aliases=("powershell",)))
    return shell
