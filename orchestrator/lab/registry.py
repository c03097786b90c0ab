"""How emulated commands plug into the lab's shells.

A lab server owns one `Registry`. Command implementations (Exchange cmdlets, Windows
cmdlets, native programs such as certutil.exe) register a `CommandSpec` with their declared
parameters; the shells (PSRP, WinRS) look commands up, bind the parameters the client sent
with PowerShell's rules and call the handler. Binding errors carry the exact texts and
error ids PowerShell produces, because that is how a client sees wrong syntax (e.g. the
2007 `-Path` on 2010).

Nothing here knows about the wire: values are plain Python (`str`, `int`, `bool`, `bytes`,
lists) plus `objects.Secret`/`LabObject`/`LabEnum`/`LabList`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from orchestrator.lab.objects import LabObject, Secret


class Kind(Enum):
    """The .NET type a parameter declares, as far as binding cares."""

    STRING = "System.String"
    STRINGS = "System.String[]"  # also Exchange's MultiValuedProperty
    SWITCH = "System.Management.Automation.SwitchParameter"
    BOOL = "System.Boolean"
    INT = "System.Int32"
    BYTES = "System.Byte[]"
    SECURE_STRING = "System.Security.SecureString"
    OBJECT = "System.Object"
    URI = "System.Uri"  # $null allowed (clears the property); a string binds as an absolute or relative Uri


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: Kind = Kind.STRING
    mandatory: bool = False
    position: int | None = None
    # ValueFromPipelineByPropertyName: bound from the same-named property of each input object.
    from_pipeline_property: bool = False
    # ValueFromPipeline: the input object itself.
    from_pipeline: bool = False
    # Parameter sets this parameter belongs to; empty = every set of the command.
    sets: tuple[str, ...] = ()


class ErrorCategory(Enum):
    """System.Management.Automation.ErrorCategory: the names and numbers PowerShell sends."""

    NotSpecified = 0
    OpenError = 1
    CloseError = 2
    DeviceError = 3
    DeadlockDetected = 4
    InvalidArgument = 5
    InvalidData = 6
    InvalidOperation = 7
    InvalidResult = 8
    InvalidType = 9
    MetadataError = 10
    NotImplemented = 11
    NotInstalled = 12
    ObjectNotFound = 13
    OperationStopped = 14
    OperationTimeout = 15
    SyntaxError = 16
    ParserError = 17
    PermissionDenied = 18
    ResourceBusy = 19
    ResourceExists = 20
    ResourceUnavailable = 21
    ReadError = 22
    WriteError = 23
    FromStdErr = 24
    SecurityError = 25


@dataclass
class LabError(Exception):
    """An error record as PowerShell would produce it.

    Raised by a handler it is a *terminating* error (the pipeline fails, `had_errors` on the
    client); passed to `CommandCall.write_error` it is non-terminating.
    """

    message: str
    error_id: str  # FullyQualifiedErrorId, e.g. "NamedParameterNotFound,Microsoft...ImportExchangeCertificate"
    category: ErrorCategory = ErrorCategory.NotSpecified
    exception_type: str = "System.Management.Automation.RuntimeException"
    target: Any = None
    activity: str | None = None  # CategoryInfo.Activity: the command name

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class Session:
    """State of one runspace (PSRP) or one shell (WinRS) on an emulated server."""

    configuration: str  # e.g. "Microsoft.Exchange", "Microsoft.PowerShell", "cmd"
    username: str
    snapins: set[str] = field(default_factory=set)
    # False when the client declared no host: a prompt must then fail the way PowerShell fails.
    can_prompt: bool = False
    # With a host that has a UI (PSRP): ask(caption, message, [(label, help)], default) sends a PromptForChoice
    # host call and returns the chosen index (None: no answer). None where the shell cannot relay host calls.
    ask: Callable[[str, str, list[tuple[str, str]], int], int | None] | None = field(default=None, repr=False,
                                                                                     compare=False)


@dataclass
class CommandCall:
    """One bound invocation handed to a handler."""

    name: str
    params: dict[str, Any]
    session: Session
    output: list[Any] = field(default_factory=list)
    errors: list[LabError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def write(self, value: Any) -> None:
        self.output.append(value)

    def write_error(self, error: LabError) -> None:
        self.errors.append(error)

    def write_warning(self, text: str) -> None:
        self.warnings.append(text)

    def has(self, name: str) -> bool:
        return name in self.params


Handler = Callable[[CommandCall], None]


@dataclass
class CommandSpec:
    name: str
    handler: Handler
    parameters: tuple[Parameter, ...] = ()
    # .NET type that implements the cmdlet; used in FullyQualifiedErrorId suffixes.
    implementing_type: str = ""
    # Only visible once this snap-in was added in the session (Exchange 2007's EMS snap-in).
    snapin: str | None = None
    # Configurations (endpoints) where the command exists; empty = all PowerShell endpoints.
    configurations: tuple[str, ...] = ()
    default_set: str | None = None

    def parameter(self, name: str) -> Parameter | None:
        for p in self.parameters:
            if p.name.lower() == name.lower():
                return p
        return None


@dataclass
class NativeResult:
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


NativeHandler = Callable[[list[str], Session], NativeResult]


@dataclass
class NativeCommandSpec:
    """A program (certutil.exe, powershell.exe) run with an argument list."""

    name: str  # canonical file name, e.g. "certutil.exe"
    handler: NativeHandler
    aliases: tuple[str, ...] = ()  # e.g. "certutil"


class Registry:
    """The commands one emulated server knows. Thread-safe for registration and lookup."""

    def __init__(self) -> None:
        self._commands: dict[str, CommandSpec] = {}
        self._natives: dict[str, NativeCommandSpec] = {}
        self._lock = threading.Lock()
        # Every command name the server was asked to run, in order (bounded: a long `lab serve` must not
        # grow without end): tests read it to prove what a client sent, e.g. that `run --check` changed nothing.
        self.ran: collections.deque[str] = collections.deque(maxlen=100_000)

    def record(self, name: str) -> None:
        with self._lock:
            self.ran.append(name)

    def register(self, spec: CommandSpec) -> CommandSpec:
        with self._lock:
            self._commands[spec.name.lower()] = spec
        return spec

    def register_native(self, spec: NativeCommandSpec) -> NativeCommandSpec:
        with self._lock:
            for name in (spec.name, *spec.aliases):
                self._natives[name.lower()] = spec
        return spec

    def command(self, name: str, session: Session) -> CommandSpec:
        """The cmdlet `name` as visible in `session`, or PowerShell's CommandNotFoundException."""
        spec = self._commands.get(name.lower())
        visible = spec is not None and (
            (spec.snapin is None or spec.snapin.lower() in {s.lower() for s in session.snapins})
            and (not spec.configurations or session.configuration in spec.configurations)
        )
        if not visible:
            raise command_not_found(name)
        assert spec is not None
        return spec

    def native(self, name: str) -> NativeCommandSpec | None:
        base = name.replace("/", "\\").rsplit("\\", 1)[-1].lower()
        return self._natives.get(base)

    def names(self) -> list[str]:
        return sorted(spec.name for spec in self._commands.values())

    def rewrite(self, cmdlet: Callable[[CommandSpec], CommandSpec],
                native: Callable[[NativeCommandSpec], NativeCommandSpec]) -> None:
        """Replace every command by what `cmdlet`/`native` make of it (the lab's cost profile wraps handlers)."""
        with self._lock:
            self._commands = {key: cmdlet(spec) for key, spec in self._commands.items()}
            rewritten: dict[int, NativeCommandSpec] = {}
            for key, spec in self._natives.items():  # aliases share one spec: wrap it once
                if id(spec) not in rewritten:
                    rewritten[id(spec)] = native(spec)
                self._natives[key] = rewritten[id(spec)]


def command_not_found(name: str) -> LabError:
    return LabError(
        message=(
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or "
            "operable program. Check the spelling of the name, or if a path was included, verify that "
            "the path is correct and try again."
        ),
        error_id="CommandNotFoundException",
        category=ErrorCategory.ObjectNotFound,
        exception_type="System.Management.Automation.CommandNotFoundException",
        target=name,
    )


# --- parameter binding (PowerShell's rules, the subset the lab needs) -------------------------


def _binding_error(spec: CommandSpec, message: str, reason: str, target: Any = None) -> LabError:
    suffix = f",{spec.implementing_type}" if spec.implementing_type else f",{spec.name}"
    return LabError(
        message=message,
        error_id=reason + suffix,
        category=ErrorCategory.InvalidArgument,
        exception_type="System.Management.Automation.ParameterBindingException",
        target=target,
        activity=spec.name,
    )


def _resolve_name(spec: CommandSpec, given: str) -> Parameter:
    """Exact (case-insensitive) match first, then a unique prefix, as PowerShell allows."""
    exact = spec.parameter(given)
    if exact is not None:
        return exact
    matches = [p for p in spec.parameters if p.name.lower().startswith(given.lower())]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join("-" + p.name for p in matches)
        raise _binding_error(
            spec,
            f"Parameter cannot be processed because the parameter name '{given}' is ambiguous. "
            f"Possible matches include: {names}.",
            "AmbiguousParameter",
        )
    raise _binding_error(
        spec,
        f"A parameter cannot be found that matches parameter name '{given}'.",
        "NamedParameterNotFound",
    )


def _type_name(value: Any) -> str:
    """The .NET type PowerShell names for a received value; never a Python class name. $null has none:
    PowerShell prints it as an empty string ("")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "System.Boolean"
    if isinstance(value, int):
        return "System.Int32"
    if isinstance(value, float):
        return "System.Double"
    if isinstance(value, str):
        return "System.String"
    if isinstance(value, (bytes, bytearray)):
        return "System.Byte[]"
    if isinstance(value, Secret):
        return "System.Security.SecureString"
    if isinstance(value, LabObject) and value.type_names:
        return value.type_names[0]
    if isinstance(value, (list, tuple)):
        return "System.Object[]"
    if isinstance(value, dict):
        return "System.Collections.Hashtable"
    return "System.Object"


def ps_text(value: Any) -> str:
    """A value as PowerShell writes it into an error text ("$value"): $null is "", $true is True, an array
    or an object without a string form is its type name; never a Python repr (None, b'..', [..])."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, LabObject) and value.to_string is not None:
        return value.to_string
    return _type_name(value)


def convert(spec: CommandSpec, param: Parameter, value: Any) -> Any:
    """Convert a received value to the parameter's declared type, or fail like PowerShell."""

    def cannot(target: str) -> LabError:
        return _binding_error(
            spec,
            f"Cannot bind parameter '{param.name}'. Cannot convert the \"{ps_text(value)}\" value of type "
            f"\"{_type_name(value)}\" to type \"{target}\".",
            "CannotConvertArgumentNoMessage",
        )

    kind = param.kind
    if kind is Kind.SWITCH:
        # pypsrp sends a present switch as <Nil/>; -Switch:$false arrives as False.
        if value is None:
            return True
        if isinstance(value, bool):
            return value
        raise cannot(kind.value)
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        raise _binding_error(
            spec,
            f"Cannot process argument transformation on parameter '{param.name}'. Cannot convert value "
            f'"{_type_name(value)}" to type "System.Boolean". Boolean parameters accept only Boolean '
            "values and numbers, such as $True, $False, 1 or 0.",
            "ParameterArgumentTransformationError",
        )
    if kind is Kind.INT:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise cannot(kind.value) from None
        raise cannot(kind.value)
    if kind is Kind.STRING:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, LabObject) and value.to_string is not None:
            return value.to_string
        raise cannot(kind.value)
    if kind is Kind.STRINGS:
        items = value if isinstance(value, (list, tuple)) else [value]
        out: list[str] = []
        for item in items:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                out.append(str(item))
            else:
                raise cannot(kind.value)
        return out
    if kind is Kind.BYTES:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, (list, tuple)) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
            return bytes(value)
        raise cannot(kind.value)
    if kind is Kind.URI:
        return _uri(spec, param, value, cannot)
    if kind is Kind.SECURE_STRING:
        if isinstance(value, Secret):
            return value
        raise cannot(kind.value)
    return value


def _uri(spec: CommandSpec, param: Parameter, value: Any, cannot: Callable[[str], LabError]) -> str | None:
    """String -> System.Uri as PowerShell binds it: [Uri] is built with UriKind.RelativeOrAbsolute, so "owa" binds
    (a relative Uri; the cmdlet decides whether it may be relative) and only a text that looks absolute but has no
    parsable host fails in binding, with .NET's UriFormatException text in PowerShell's conversion message."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise cannot(Kind.URI.value)
    scheme, sep, rest = value.partition("://")
    if sep and scheme and scheme.isalpha():
        host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
        host = host.rsplit(":", 1)[0] if not host.startswith("[") else host
        if not host or any(ch in host for ch in " <>\\^`{|}\"%"):
            raise _binding_error(
                spec,
                f"Cannot bind parameter '{param.name}'. Cannot convert value \"{value}\" to type \"System.Uri\". "
                "Error: \"Invalid URI: The hostname could not be parsed.\"",
                "CannotConvertArgumentNoMessage",
            )
    return value


def _candidate_sets(spec: CommandSpec, used: Iterable[Parameter]) -> set[str]:
    all_sets = {s for p in spec.parameters for s in p.sets}
    if not all_sets:
        return set()
    candidates = set(all_sets)
    for p in used:
        if p.sets:
            candidates &= set(p.sets)
    return candidates


def bind(
    spec: CommandSpec,
    arguments: list[tuple[str | None, Any]],
    input_object: Any = None,
    has_input: bool = False,
) -> dict[str, Any]:
    """Bind `(name, value)` pairs (name None = positional) to declared parameters.

    `input_object`, when `has_input`, is one pipeline input object: bound to the parameter that
    takes the input itself, or by property name. Returns {canonical name: converted value}.
    """
    bound: dict[str, Any] = {}
    positional: list[Any] = []
    for name, value in arguments:
        if name is None:
            positional.append(value)
            continue
        param = _resolve_name(spec, name.lstrip("-"))
        if param.name in bound:
            raise _binding_error(
                spec,
                f"Cannot bind parameter because parameter '{param.name}' is specified more than once. "
                "To provide multiple values to parameters that can accept multiple values, use the "
                "array syntax. For example, \"-parameter value1,value2,value3\".",
                "ParameterAlreadyBound",
            )
        bound[param.name] = convert(spec, param, value)

    by_position = sorted(
        (p for p in spec.parameters if p.position is not None and p.name not in bound),
        key=lambda p: p.position or 0,
    )
    for value in positional:
        if not by_position:
            raise _binding_error(
                spec,
                f"A positional parameter cannot be found that accepts argument '{ps_text(value)}'.",
                "PositionalParameterNotFound",
                target=value,
            )
        param = by_position.pop(0)
        bound[param.name] = convert(spec, param, value)

    if has_input:
        for param in spec.parameters:
            if param.name in bound:
                continue
            if param.from_pipeline:
                bound[param.name] = convert(spec, param, input_object)
                break
            if param.from_pipeline_property and isinstance(input_object, LabObject):
                if input_object.has(param.name):
                    bound[param.name] = convert(spec, param, input_object.get(param.name))

    used = [p for p in spec.parameters if p.name in bound]
    candidates = _candidate_sets(spec, used)
    all_sets = {s for p in spec.parameters for s in p.sets}
    if all_sets and not candidates:
        raise _binding_error(
            spec,
            "Parameter set cannot be resolved using the specified named parameters.",
            "AmbiguousParameterSet",
        )
    if len(candidates) > 1:
        # Prefer a set whose own mandatory parameters are all present, then the default set.
        complete = {
            s
            for s in candidates
            if all(p.name in bound for p in spec.parameters if p.mandatory and s in p.sets)
        }
        if len(complete) == 1:
            candidates = complete
        elif spec.default_set in (complete or candidates):
            candidates = {spec.default_set}
    if len(candidates) > 1:
        raise _binding_error(
            spec,
            "Parameter set cannot be resolved using the specified named parameters.",
            "AmbiguousParameterSet",
        )
    chosen = next(iter(candidates)) if candidates else None

    missing = [
        p.name
        for p in spec.parameters
        if p.mandatory and p.name not in bound and (not p.sets or chosen is None or chosen in p.sets)
        and (chosen is not None or not p.sets)
    ]
    if missing:
        raise _binding_error(
            spec,
            "Cannot process command because of one or more missing mandatory parameters: "
            + " ".join(missing)
            + ".",
            "MissingMandatoryParameter",
        )
    return bound
