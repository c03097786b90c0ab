"""WinRS transport (pywinrm) for Exchange 2007 hosts without PowerShell remoting.

One cmd shell per server (WS-Management `.../windows/shell/cmd` at /wsman), opened on first use and
kept for the run; every request (a step's pipeline: one or more commands for one shell) is one
`powershell.exe ... -OutputFormat xml -EncodedCommand` process in it, its script rendered by
`orchestrator/render/winrs_script.py` from the same Commands the dry-run renders (the shape and the
secrets-and-bytes-over-stdin rule are documented there). Exchange cmdlets get `-PSConsoleFile <exshell.psc1>`, which loads the Exchange
snap-in the way the Exchange Management Shell shortcut does; Windows commands run without it.

Per request: Command, [Sends of stdin, the last with End=true: only when the script reads SecureStrings
or bytes],
Receive until Done (bounded in count and time; pywinrm's own loop is unbounded, so it is not
used), Signal terminate. Stdout and stderr are CLIXML and are read with pypsrp's deserializer, so
output objects are the same `RemoteObject`s/values the PSRP transport returns; error records (or
`<S S="Error">` lines) become `RemoteError` with the server's text and FullyQualifiedErrorId.

`Set-Content -Value <bytes> -Encoding Byte` gets its bytes from stdin with their SHA-256, checked on
the server before any command of the request runs; a mismatch is a `TransientError` (the step is
retried and the file written again).

The connection uses the playbook's host, scheme, port, auth and TLS settings; the path is always
/wsman (where WinRM serves the cmd shell), so `connection.path`/`configuration` do not apply.

Failures are classified as for PSRP: connection problems, HTTP 5xx and lost shells are
`TransientError(reopen=True)` (the executor retries the step and we open a new shell), refused
credentials, TLS validation and unknown resources are `ConnectError`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Any

from pypsrp.complex_objects import GenericComplexObject
from pypsrp.messages import ErrorRecordMessage
from pypsrp.serializer import Serializer
from winrm.exceptions import (
    AuthenticationError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from orchestrator.commands import Command, Shell
from orchestrator.errors import ExmigError
from orchestrator.kerberos import DEFAULT_SPN_SERVICE, KerberosTarget
from orchestrator.render import winrs_script
from orchestrator.transport.base import (
    ConnectError,
    InvocationResult,
    RemoteError,
    SessionSpec,
    TransientError,
    ValueSource,
    classify_http,
    classify_kerberos_error,
    first_line,
)
from orchestrator.transport.psrp import ConnectionSettings, to_python
from orchestrator.troubleshoot import watch_protocol

log = logging.getLogger(__name__)

WSMAN_SHELL_NOT_FOUND = 2150858843
WSMAN_RESOURCE_NOT_FOUND = 2150858811
WSMAN_ACCESS_DENIED = 5
SHELL_CODEPAGE = 437  # pywinrm's default; stdin (the secrets) is encoded in it
MAX_RECEIVES = 10_000  # a bound on Receive requests per command, whatever the server does
CLIXML_HEADER = "#< CLIXML"
STDIN_SEND_BYTES = 32 * 1024
MAX_STDIN_SENDS = 1024  # 32 MB: far beyond a PFX
_NS = "{http://schemas.microsoft.com/powershell/2004/04}"

# pywinrm's names for the playbook's auth values (pywinrm's "ntlm" speaks Negotiate/NTLM).
_AUTH = {"basic": "basic", "ntlm": "ntlm", "negotiate": "ntlm", "kerberos": "kerberos", "credssp": "credssp"}


def classify(server: str, exc: BaseException, kerberos: KerberosTarget | None = None) -> Exception:
    """A pywinrm/requests exception as TransientError (retry) or ConnectError (stop, with why)."""
    http = classify_http(server, exc)
    if http is not None:
        return http
    known = classify_kerberos_error(server, exc, kerberos)
    if known is not None:
        return known
    if isinstance(exc, AuthenticationError):
        return ConnectError(f"{server}: the server refused the credentials (HTTP 401); check the user name "
                            "and the password variable")
    if isinstance(exc, WinRMOperationTimeoutError):
        return TransientError(server, "WSMan operation timed out", reopen=True)
    if isinstance(exc, WSManFaultError):
        code = exc.wsman_fault_code
        if code == WSMAN_SHELL_NOT_FOUND:
            return TransientError(server, "the remote shell is gone", reopen=True)
        if code == WSMAN_RESOURCE_NOT_FOUND:
            return ConnectError(f"{server}: {first_line(exc.reason)} (is WinRS allowed on the server's /wsman "
                                "listener?)")
        if code == WSMAN_ACCESS_DENIED:
            return ConnectError(f"{server}: access denied: {first_line(exc.reason)}")
        if exc.code in (500, 502, 503, 504) and code is None:
            return TransientError(server, f"HTTP {exc.code} from the server", reopen=True)
        return ConnectError(f"{server}: WSMan fault {code}: {first_line(exc.reason)}")
    if isinstance(exc, WinRMTransportError):
        if exc.code in (500, 502, 503, 504):
            return TransientError(server, f"HTTP {exc.code} from the server", reopen=True)
        return ConnectError(f"{server}: HTTP {exc.code}: {first_line(exc.response_text or '')}")
    if isinstance(exc, WinRMError):
        return TransientError(server, f"protocol error: {first_line(exc)}", reopen=True)
    if isinstance(exc, (StopIteration, ET.ParseError)):
        return TransientError(server, f"unreadable WinRS reply ({type(exc).__name__})", reopen=True)
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


# --- CLIXML from powershell.exe -OutputFormat xml -----------------------------------------------


def _elements(text: str) -> list[ET.Element]:
    """The objects of a `#< CLIXML` stream (one or more <Objs> documents, back to back)."""
    body = text.split(CLIXML_HEADER, 1)[1] if CLIXML_HEADER in text else text
    root = ET.fromstring("<exmig>" + body.strip() + "</exmig>")
    return [obj for objs in root for obj in objs]


def _strip_ns(element: ET.Element) -> ET.Element:
    """pypsrp's deserializer matches tags without the PowerShell namespace."""
    for node in element.iter():
        node.tag = node.tag.removeprefix(_NS)
    return element


def _stream(element: ET.Element) -> str:
    return (element.get("S") or "output").lower()


def _error_text(value: Any) -> tuple[str, str | None]:
    """(message, FullyQualifiedErrorId) of a deserialized error record or error string."""
    if isinstance(value, ErrorRecordMessage):  # what pypsrp makes of an ErrorRecord, as over PSRP
        return str(value) or "the command failed", value.fq_error or None
    if isinstance(value, GenericComplexObject):
        props = {**value.adapted_properties, **value.extended_properties}
        error_id = props.get("FullyQualifiedErrorId")
        message = value.to_string
        exception = props.get("Exception")
        if not message and isinstance(exception, GenericComplexObject):
            message = (exception.adapted_properties.get("Message") or exception.extended_properties.get("Message")
                       or exception.to_string)
        return str(message or "the command failed"), str(error_id) if error_id else None
    return str(value).rstrip("\r\n"), None


def parse_streams(stdout: str, stderr: str) -> tuple[list[Any], list[tuple[str, str | None]], list[str]]:
    """(output values, errors as (message, error id), warnings) from one powershell.exe run."""
    output: list[Any] = []
    errors: list[tuple[str, str | None]] = []
    warnings: list[str] = []
    for text, default in ((stdout, "output"), (stderr, "error")):
        if not text.strip():
            continue
        if CLIXML_HEADER not in text:
            # Not PowerShell's serialized output: cmd.exe or powershell.exe itself complained.
            if default == "error":
                errors.append((text.strip().splitlines()[0], None))
            continue
        serializer = Serializer()  # <TNRef>/<Ref> ids are per stream: keep them across its objects
        for index, element in enumerate(_elements(text)):
            stream = (element.get("S") or default).lower()
            value = serializer.deserialize(_strip_ns(element), clear=index == 0)
            if stream == "output":
                output.append(to_python(value))
            elif stream == "error":
                errors.append(_error_text(value))
            elif stream == "warning":
                warnings.append(str(value))
            # verbose/debug/progress are not results
    return output, errors, warnings


# --- the session ----------------------------------------------------------------------------------


class WinrsServerSession:
    """One WinRS cmd shell to one server; every command is a powershell.exe process in it."""

    def __init__(self, spec: SessionSpec, settings: ConnectionSettings,
                 on_send: Callable[[str, Command], None] | None = None,
                 console_file: str = winrs_script.EXSHELL_CONSOLE_FILE) -> None:
        self.name = spec.name
        self._spec = spec
        self._settings = settings
        self._kerberos = settings.kerberos
        self._on_send = on_send
        self.console_file = console_file
        self._protocol: Protocol | None = None
        self._shell_id: str | None = None
        self._budget = settings.budget(spec.name)
        self._last_used = 0.0

    # -- connection --------------------------------------------------------------------------------

    def _endpoint(self) -> str:
        ep = self._spec.exchange
        host = f"[{self._settings.host}]" if ":" in self._settings.host else self._settings.host
        return f"{ep.scheme}://{host}:{ep.port}/wsman"  # the cmd shell lives at /wsman

    def _port(self) -> int:
        return self._spec.exchange.port

    def _shell(self) -> tuple[Protocol, str]:
        if self._protocol is not None and self._shell_id is not None:
            idle = time.monotonic() - self._last_used
            if idle < 0.75 * self._settings.limits.idle_timeout:
                return self._protocol, self._shell_id
            # The server deletes a shell idle for its IdleTimeout: a new one before sending anything (past the
            # whole timeout the server has deleted it already).
            if idle < self._settings.limits.idle_timeout:
                self.close()
            else:
                self.reopen()
        s = self._settings
        https = self._spec.exchange.scheme == "https"
        verify = s.verify_tls
        protocol = Protocol(
            self._endpoint(), transport=_AUTH.get(s.auth, s.auth),  # type: ignore[arg-type]
            username=s.username, password=s.password,
            server_cert_validation="validate" if verify else "ignore",
            ca_trust_path=verify if isinstance(verify, str) else "legacy_requests",
            read_timeout_sec=s.read_timeout, operation_timeout_sec=s.operation_timeout,
            message_encryption="auto" if s.auth != "basic" or https else "never",
            service=s.spn_service or DEFAULT_SPN_SERVICE["winrs"], kerberos_hostname_override=s.spn_hostname,
        )
        watch_protocol(protocol, self.name)
        self._budget.open_shell(self._port(), exchange=False)  # WinRS's cmd shell is a WinRM shell
        try:
            with self._budget.operation(self._port()):
                shell_id = protocol.open_shell(codepage=SHELL_CODEPAGE, noprofile=True)
        except Exception as exc:
            self._budget.close_shell(self._port(), exchange=False)
            raise classify(self.name, exc, self._kerberos) from exc
        self._protocol, self._shell_id = protocol, shell_id
        self._last_used = time.monotonic()
        return protocol, shell_id

    def reopen(self) -> None:
        """Forget the shell without a Delete (the connection is suspect); the server expires it. It no longer
        counts against this session's budget: the lab shows the old shell gone by the time a new one opens
        (the reset or the fault that caused this ended it), and a real server expires it after IdleTimeout."""
        protocol, self._protocol, self._shell_id = self._protocol, None, None
        if protocol is not None:
            self._budget.close_shell(self._port(), exchange=False)
            try:
                protocol.transport.close_session()
            except Exception as exc:  # noqa: BLE001 - best effort
                log.debug("closing the HTTP session to %s failed: %s", self.name, first_line(exc))

    def close(self) -> None:
        protocol, shell_id = self._protocol, self._shell_id
        self._protocol, self._shell_id = None, None
        if protocol is not None and shell_id is not None:
            try:
                with self._budget.operation(self._port()):
                    protocol.close_shell(shell_id)
            except Exception as exc:  # noqa: BLE001 - closing is best effort; the server expires the shell
                log.debug("closing the shell on %s failed: %s", self.name, first_line(exc))
            finally:
                self._budget.close_shell(self._port(), exchange=False)

    # -- one process -------------------------------------------------------------------------------

    def _idle_polls(self) -> int:
        return int(getattr(self._settings, "idle_polls", 6))

    def _max_seconds(self) -> float:
        # A command gets a few read timeouts' worth of Receives; each Receive is itself bounded.
        return max(60.0, 4.0 * self._settings.read_timeout)

    def run_powershell(self, script: str, exchange: bool, stdin: bytes | None = None) -> tuple[str, str, int]:
        """Start powershell.exe with `script`, feed `stdin`, and collect (stdout, stderr, exit code)."""
        protocol, shell_id = self._shell()
        args = winrs_script.arguments(script, self.console_file if exchange else None)
        length = len(" ".join([winrs_script.POWERSHELL_EXE, *args]))
        if length > winrs_script.CMD_EXE_LIMIT:
            raise ExmigError(f"{self.name}: the command is {length} characters, over cmd.exe's "
                             f"{winrs_script.CMD_EXE_LIMIT}; WinRS cannot send it")
        try:
            with self._budget.operation(self._port()):
                return self._run_process(protocol, shell_id, args, stdin)
        finally:
            self._last_used = time.monotonic()

    def _run_process(self, protocol: Protocol, shell_id: str, args: list[str],
                     stdin: bytes | None) -> tuple[str, str, int]:
        try:
            command_id = protocol.run_command(shell_id, winrs_script.POWERSHELL_EXE, args)
            if stdin is not None:
                # Bounded Sends: WinRM 2.0 refuses an envelope over MaxEnvelopeSizekb (150 KB), and the stream
                # is base64 again inside the SOAP body.
                pieces = [stdin[i:i + STDIN_SEND_BYTES] for i in range(0, len(stdin), STDIN_SEND_BYTES)]
                if len(pieces) > MAX_STDIN_SENDS:
                    raise ExmigError(f"{self.name}: {len(stdin)} bytes of input are more than WinRS is sent "
                                     f"({MAX_STDIN_SENDS} Sends of {STDIN_SEND_BYTES})")
                for index, piece in enumerate(pieces):
                    protocol.send_command_input(shell_id, command_id, piece, end=index == len(pieces) - 1)
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + self._max_seconds()
            code: int | None = None
            idle = 0
            for _ in range(MAX_RECEIVES):
                try:
                    o, e, rc, done = protocol.get_command_output_raw(shell_id, command_id)
                except WinRMOperationTimeoutError:
                    # Nothing within OperationTimeout: ask again, as WinRS clients do, but not forever
                    # (a process whose Receives stay empty this long is given up as lost).
                    idle += 1
                    if idle >= self._idle_polls() or time.monotonic() > deadline:
                        break
                    continue
                idle = 0
                out += o
                err += e
                if done:
                    code = rc
                    break
                if time.monotonic() > deadline:
                    break
            if code is None:
                raise TransientError(self.name, "powershell.exe sent nothing for "
                                     f"{idle * self._settings.operation_timeout} s or ran past "
                                     f"{self._max_seconds():g} s; given up as lost", reopen=True)
            try:
                protocol.cleanup_command(shell_id, command_id)
            except (WinRMError, WinRMTransportError, WinRMOperationTimeoutError, AssertionError) as exc:
                log.debug("Signal terminate on %s failed: %s", self.name, first_line(exc))
        except (TransientError, ExmigError):
            raise
        except Exception as exc:
            raise classify(self.name, exc, self._kerberos) from exc
        codec = f"cp{SHELL_CODEPAGE}"
        return out.decode(codec, errors="replace"), err.decode(codec, errors="replace"), code

    def _checked(self, name: str, stdout: str, stderr: str, code: int) -> InvocationResult:
        try:
            output, errors, warnings = parse_streams(stdout, stderr)
        except ET.ParseError as exc:
            raise TransientError(self.name, f"{name}: unreadable CLIXML from powershell.exe ({exc})") from exc
        if errors:
            message, error_id = errors[0]
            raise RemoteError(self.name, name, message, error_id)
        if code != 0:
            raise RemoteError(self.name, name, f"powershell.exe exited with code {code}")
        return InvocationResult(output=output, warnings=warnings)

    # -- ServerSession ----------------------------------------------------------------------------

    def invoke(self, command: Command, values: ValueSource) -> InvocationResult:
        return self.invoke_batch((command,), values)

    def can_batch(self, shell: Shell) -> bool:
        return True  # a request's commands are the lines of one powershell.exe's script

    def invoke_batch(self, commands: Sequence[Command], values: ValueSource) -> InvocationResult:
        """One powershell.exe for the request: its commands one line each (the first error ends the process
        with that command's record), SecureStrings and bytes on stdin."""
        try:
            _, script = winrs_script.sent_request(commands, self.console_file)
        except winrs_script.NotSendable as exc:
            raise ExmigError(f"{self.name}: {exc}") from None
        if self._on_send is not None:
            for command in commands:
                self._on_send(self.name, command)
        stdin = b"".join(self._input_lines(kind, key, values) for kind, key in script.inputs) or None
        name = " + ".join(c.name for c in commands)
        stdout, stderr, code = self.run_powershell(script.text, commands[0].shell is Shell.EXCHANGE, stdin)
        try:
            return self._checked(name, stdout, stderr, code)
        except RemoteError as exc:
            if winrs_script.DAMAGED_INPUT in exc.remote_message:
                # The stdin bytes failed their SHA-256 check before any command ran: send them again.
                raise TransientError(self.name, f"{name}: the bytes sent on stdin arrived damaged") from exc
            raise

    def _input_lines(self, kind: str, key: str, values: ValueSource) -> bytes:
        if kind == "secret":
            return self._secret_line(values.secret(key))
        data = values.blob(key)
        encoded = base64.b64encode(data) + b"\r\n"
        return encoded + hashlib.sha256(data).hexdigest().upper().encode("ascii") + b"\r\n"

    def _secret_line(self, secret: str) -> bytes:
        if "\r" in secret or "\n" in secret:
            raise ExmigError(f"{self.name}: the PFX password has a line break; WinRS sends it as one line on stdin")
        try:
            return secret.encode(f"cp{SHELL_CODEPAGE}") + b"\r\n"
        except UnicodeEncodeError:
            raise ExmigError(f"{self.name}: the PFX password has characters outside code page {SHELL_CODEPAGE}, "
                             "which WinRS stdin carries") from None
