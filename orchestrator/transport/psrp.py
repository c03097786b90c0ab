"""PSRP transport (pypsrp): one runspace pool per server and endpoint, opened once, reused.

2010: the Exchange cmdlets run in `Microsoft.Exchange` (restricted: commands only); files and
certutil run in `Microsoft.PowerShell` at /wsman. 2007: one `Microsoft.PowerShell` pool with the
Exchange snap-in added. Every command goes as AddCommand + AddParameter with typed values;
SecureStrings are encrypted with the session key exchanged first.

Where the server speaks PSRP 2.2 or later (PowerShell 3.0+), several commands can share one pipeline,
one statement each (AddStatement; MS-PSRP sends them in the PowerShell object's ExtraCmds): one
Command + Receive instead of one per command. PowerShell 2.0 servers (protocol 2.1) have no ExtraCmds;
there a FullLanguage endpoint (/wsman's Microsoft.PowerShell, 2007's session) gets the commands as the
typed argument of one fixed script, `DISPATCHER` (AddScript + AddParameter -Commands: never a value in
script text; SecureStrings stay SecureString, bytes byte[]), and the 2007 snap-in rides in it. A
no-language endpoint (2010's Microsoft.Exchange, which refuses script) keeps one command per pipeline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pypsrp.complex_objects import GenericComplexObject
from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.serializer import TaggedValue
from pypsrp.wsman import SelectorSet, WSMan

from orchestrator.commands import Blob, Command, Flag, Null, Number, Secret, Shell, Switch, Text, TextList, Thumbprint
from orchestrator.kerberos import DEFAULT_SPN_SERVICE, KerberosTarget, spn
from orchestrator.playbook import Endpoint
from orchestrator.transport.base import (
    ConnectError,
    InvocationResult,
    RemoteError,
    RemoteObject,
    SessionSpec,
    TransientError,
    ValueSource,
    classify_http,
    classify_kerberos_error,
    first_line,
)
from orchestrator.transport.limits import Budget, Limits
from orchestrator.troubleshoot import watch_wsman

log = logging.getLogger(__name__)


class _RunKeyPair:
    """pypsrp makes a fresh 2048-bit RSA pair in every pool's exchange_keys() (about 50 ms of CPU: a tenth of
    the client's work per target in a fan-out) only to receive the session key the server picks for that
    pool. One ephemeral pair per exmig process serves every pool as well: it wraps keys the servers choose,
    is never written anywhere and ends with the process. Stands in for pypsrp's `rsa` module."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._lock = threading.Lock()
        self._keys: dict[tuple[int, int], Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def generate_private_key(self, public_exponent: int, key_size: int, backend: Any = None) -> Any:
        with self._lock:
            key = self._keys.get((public_exponent, key_size))
            if key is None:
                key = self._module.generate_private_key(public_exponent=public_exponent, key_size=key_size)
                self._keys[(public_exponent, key_size)] = key
            return key


def _share_exchange_key() -> None:
    import pypsrp.powershell

    if not isinstance(pypsrp.powershell.rsa, _RunKeyPair):
        pypsrp.powershell.rsa = _RunKeyPair(pypsrp.powershell.rsa)  # type: ignore[assignment]


_share_exchange_key()

WSMAN_OPERATION_TIMEOUT = 2150858793
WSMAN_SHELL_NOT_FOUND = 2150858843
WSMAN_RESOURCE_NOT_FOUND = 2150858811
WSMAN_ACCESS_DENIED = 5


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach one server: resolved from the playbook plus the secrets the run holds."""

    host: str
    auth: str
    username: str
    password: str | None  # None: Kerberos from the admin's credential cache
    verify_tls: bool | str  # False, True, or a CA bundle path
    operation_timeout: int
    read_timeout: int
    connection_timeout: int = 15
    # A running command whose Receives come back empty this many times in a row (each one an
    # OperationTimeout) is given up as lost: pypsrp itself would poll forever.
    idle_polls: int = 6
    # pypsrp retries a Receive that hit the read timeout (5 times); its default backoff (2 s, doubling)
    # lets the abandoned Receive, answered late, take the output the retry waits for.
    receive_retry_backoff: float = 0.25
    # Kerberos (auth kerberos/negotiate): the SPN asked for is <spn_service>/<spn_hostname>.
    spn_service: str | None = None
    spn_hostname: str | None = None
    limits: Limits = field(default_factory=Limits)
    # How long a request waits for room within the server's limits before it counts as a transient failure.
    limit_wait: float = 120.0

    def budget(self, server: str) -> Budget:
        return Budget(server, self.host, self.username, self.limits, self.limit_wait)

    def __repr__(self) -> str:  # never show the password
        return f"ConnectionSettings(host={self.host!r}, auth={self.auth!r}, username={self.username!r})"

    @property
    def kerberos(self) -> KerberosTarget | None:
        """Who asks for which ticket, for Kerberos failure messages (None without Kerberos)."""
        if self.auth not in ("kerberos", "negotiate"):
            return None
        service = self.spn_service or DEFAULT_SPN_SERVICE["psrp"]
        return KerberosTarget("", self.username, spn(service, self.spn_hostname or self.host, self.username))


def _value(server: str, name: str | None, value: Any, values: ValueSource) -> Any:
    if isinstance(value, Text):
        return value.value
    if isinstance(value, TextList):
        return list(value.values)
    if isinstance(value, Switch):
        return None if value.present else False  # pypsrp sends None as a present switch
    if isinstance(value, Flag):
        return value.value
    if isinstance(value, Null):
        return None  # <Nil/>: PowerShell binds $null to a typed parameter (a switch it would take as present)
    if isinstance(value, Number):
        return value.value
    if isinstance(value, Thumbprint):
        if value.value is None:
            raise ConnectError(f"{server}: -{name}: the thumbprint is not known yet")
        return value.value
    if isinstance(value, Blob):
        return values.blob(value.key)
    if isinstance(value, Secret):
        return TaggedValue("SS", values.secret(value.key))
    raise TypeError(type(value).__name__)


class _NoValues:
    def blob(self, key: str) -> bytes:
        raise ValueError(f"a session prelude cannot carry the {key} bytes")

    def secret(self, key: str) -> str:
        raise ValueError(f"a session prelude cannot carry the secret {key}")


_NO_VALUES = _NoValues()


def _list_from_xml(raw: str) -> list[Any] | None:
    """pypsrp leaves collections of unknown type as raw CLIXML (e.g. MultiValuedProperty)."""
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        return None
    if root.tag not in ("LST", "IE", "QUE", "STK"):
        return None
    return [item.text or "" for item in root]


def to_python(value: Any) -> Any:
    if isinstance(value, GenericComplexObject):
        props = {k: to_python(v) for k, v in value.adapted_properties.items()}
        props.update({k: to_python(v) for k, v in value.extended_properties.items()})
        if not props and value.property_sets:
            first = value.property_sets[0]
            if isinstance(first, str):
                items = _list_from_xml(first)
                if items is not None:
                    return items
        return RemoteObject(types=list(value.types), props=props, text=value.to_string)
    if isinstance(value, list):
        return [to_python(v) for v in value]
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    return value


def classify(server: str, exc: BaseException, kerberos: KerberosTarget | None = None) -> Exception:
    """Map a client exception to Transient (retry) or ConnectError (stop, with the reason)."""
    http = classify_http(server, exc)
    if http is not None:
        return http
    known = classify_kerberos_error(server, exc, kerberos)
    if known is not None:
        return known
    if isinstance(exc, AuthenticationError):
        return ConnectError(f"{server}: authentication failed: {first_line(exc)}")
    if isinstance(exc, WSManFaultError):
        code = exc.code
        if code == WSMAN_OPERATION_TIMEOUT:
            return TransientError(server, "WSMan operation timed out", reopen=True)
        if code == WSMAN_SHELL_NOT_FOUND:
            return TransientError(server, "the remote shell is gone", reopen=True)
        if code == WSMAN_RESOURCE_NOT_FOUND:
            return ConnectError(f"{server}: {first_line(exc.reason or str(exc))} (check connection.path and "
                                "connection.configuration)")
        if code == WSMAN_ACCESS_DENIED:
            return ConnectError(f"{server}: access denied: {first_line(exc.reason or str(exc))}")
        return ConnectError(f"{server}: WSMan fault {code}: {first_line(exc.reason or str(exc))}")
    if isinstance(exc, WinRMTransportError):
        if exc.code == 401:
            return ConnectError(f"{server}: the server refused the credentials (HTTP 401); check the user name "
                                "and the password variable")
        if exc.code in (500, 502, 503, 504):
            return TransientError(server, f"HTTP {exc.code} from the server", reopen=True)
        return ConnectError(f"{server}: HTTP {exc.code}: {first_line(exc.response_text or '')}")
    if isinstance(exc, WinRMError):
        return TransientError(server, f"protocol error: {first_line(exc)}", reopen=True)
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def _multi_statement(pool: RunspacePool) -> bool:
    """Statements after the first travel in ExtraCmds, which PSRP 2.2 (PowerShell 3.0) added."""
    parts = (pool.protocol_version or "2.1").split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (2, 2)
    except (ValueError, IndexError):
        return False


# Several commands in one pipeline without ExtraCmds (PowerShell 2.0): each item of -Commands is
# [name, named parameters (a Hashtable), positional arguments (a list)], invoked with splatting, which binds
# a Hashtable by name and a list by position (about_Splatting; a native program such as certutil.exe gets
# the list as its argv and its output lines come back as strings). 'Stop' turns the first error, also a
# non-terminating one, into the terminating error record of that command: the rest does not run and the
# pipeline fails with the server's own text (about_Preference_Variables).
DISPATCHER = """param([object[]]$Commands)
$ErrorActionPreference = 'Stop'
foreach ($exmigCommand in $Commands) {
    $exmigName = $exmigCommand[0]
    $exmigNamed = $exmigCommand[1]
    $exmigPositional = $exmigCommand[2]
    & $exmigName @exmigPositional @exmigNamed
}"""

def _failed_command(name: str, record: Any) -> str:
    """Of a request "A + B", the command whose error record this is (its CategoryInfo activity, or the name it
    was invoked by), so the one-line error names it; the request's name when the record names none of them."""
    names = name.split(" + ")
    for said in (getattr(record, "activity", None), getattr(record, "invocation_name", None)):
        for candidate in names:
            if said and str(said).lower() == candidate.lower():
                return candidate
    return name


MAX_POLLS = 10_000  # with idle_polls, a bound on polling a command that keeps sending something


def _progress(ps: PowerShell) -> tuple[Any, ...]:
    streams = ps.streams
    return (ps.state, len(ps.output), len(streams.error), len(streams.warning), len(streams.progress),
            len(streams.verbose), len(streams.debug), len(streams.information))


class PsrpServerSession:
    """Pools to one server, keyed by endpoint; opened on first use and kept for the whole run."""

    def __init__(self, spec: SessionSpec, settings: ConnectionSettings,
                 on_send: Callable[[str, Command], None] | None = None) -> None:
        self.name = spec.name
        self._spec = spec
        self._settings = settings
        self._pools: dict[tuple[str, int, str, str], RunspacePool] = {}
        self._keyed: set[tuple[str, int, str, str]] = set()
        # 2007 pools whose Add-PSSnapin goes as the first statement of their first pipeline.
        self._snapin_pending: set[tuple[str, int, str, str]] = set()
        self._endpoints: dict[tuple[str, int, str, str], Endpoint] = {}
        self._on_send = on_send
        self._budget = settings.budget(spec.name)
        self._last_used: dict[tuple[str, int, str, str], float] = {}

    def _wsman(self, endpoint: Endpoint) -> WSMan:
        s = self._settings
        kerberos: dict[str, Any] = {}
        if s.auth in ("kerberos", "negotiate"):
            kerberos = {"negotiate_service": s.spn_service, "negotiate_hostname_override": s.spn_hostname}
        return watch_wsman(WSMan(
            s.host, port=endpoint.port, path=endpoint.path.lstrip("/"), ssl=endpoint.scheme == "https",
            auth=s.auth, username=s.username, password=s.password,  # type: ignore[arg-type]  # None: ccache
            cert_validation=s.verify_tls,  # type: ignore[arg-type]  # pypsrp also takes a CA bundle path
            operation_timeout=s.operation_timeout, read_timeout=s.read_timeout,
            connection_timeout=s.connection_timeout, reconnection_backoff=s.receive_retry_backoff,
            encryption="auto" if s.auth != "basic" or endpoint.scheme == "https" else "never",
            **kerberos,
        ), self.name)

    def _classify(self, exc: BaseException) -> Exception:
        auth = self._settings.auth
        if (isinstance(exc, WSManFaultError) and exc.code is None and not exc.reason
                and self._spec.kerberos_only and auth != "kerberos"):
            # What Exchange's /PowerShell (IIS, Kerberos only) answers a session authenticated with NTLM
            # (jborean93/pypsrp issue #187): nothing in it says why, so exmig does.
            return ConnectError(f"{self.name}: Exchange refused the {auth} session without details "
                                f"({first_line(exc)}); Exchange 2010's remote PowerShell takes Kerberos only: set "
                                "connection.auth: kerberos and credentials.username: user@REALM")
        return classify(self.name, exc, self._settings.kerberos)

    def _endpoint(self, shell: Shell) -> Endpoint:
        return self._spec.endpoint(shell)

    def _pool(self, endpoint: Endpoint) -> tuple[tuple[str, int, str, str], RunspacePool]:
        key = (endpoint.scheme, endpoint.port, endpoint.path.lower(), endpoint.configuration)
        pool = self._pools.get(key)
        idle = self._idle_for(key)
        if pool is not None and idle >= 0.75 * self._settings.limits.idle_timeout:
            # The server deletes a shell idle for its IdleTimeout (a long wait for the CA): rather than find it
            # gone mid-step, start a new one before sending anything (three quarters of the timeout: what runs
            # next fits in the rest). Past the whole timeout the server has deleted it already.
            self._drop(key, delete=idle < self._settings.limits.idle_timeout)
            pool = None
        if pool is not None:
            return key, pool
        pool = RunspacePool(self._wsman(endpoint), configuration_name=endpoint.configuration)
        self._endpoints[key] = endpoint
        throttled = self._throttled(endpoint)
        self._budget.open_shell(endpoint.port, throttled)
        try:
            with self._budget.operation(endpoint.port):
                pool.open()
        except Exception as exc:  # noqa: BLE001 - classified below
            self._budget.close_shell(endpoint.port, throttled)
            raise self._classify(exc) from exc
        self._pools[key] = pool
        self._touch(key)
        if self._spec.prelude and endpoint == self._spec.exchange:
            # Exchange 2007: the cmdlets exist only once the snap-in is in the session.
            if _multi_statement(pool) or self._spec.runs_scripts(Shell.EXCHANGE):
                self._snapin_pending.add(key)
            else:
                ps = PowerShell(pool)
                self._add_commands(ps, self._spec.prelude, None)
                self._run(ps, " + ".join(c.name for c in self._spec.prelude))
        return key, pool

    def _throttled(self, endpoint: Endpoint) -> bool:
        return self._spec.exchange_throttled and endpoint == self._spec.exchange

    def _touch(self, key: tuple[str, int, str, str]) -> None:
        self._last_used[key] = time.monotonic()

    def _idle_for(self, key: tuple[str, int, str, str]) -> float:
        last = self._last_used.get(key)
        return 0.0 if last is None else time.monotonic() - last

    def _run(self, ps: PowerShell, name: str) -> InvocationResult:
        key = next((k for k, p in self._pools.items() if p is ps.runspace_pool), None)
        endpoint = self._endpoints.get(key) if key is not None else None
        try:
            with self._budget.operation(endpoint.port if endpoint is not None else 0):
                output = self._invoke(ps, name)
        except TransientError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            raise self._classify(exc) from exc
        finally:
            if key is not None:
                self._touch(key)
        errors = [str(e) for e in ps.streams.error]
        if ps.had_errors or errors:
            first = ps.streams.error[0] if ps.streams.error else None
            message = errors[0] if errors else "the command failed"
            raise RemoteError(self.name, _failed_command(name, first), message, getattr(first, "fq_error", None))
        return InvocationResult(
            output=[to_python(o) for o in output],
            # pypsrp's InformationalRecord keeps the text in .message (MS-PSRP 2.2.3.16); str() of it is "None".
            warnings=[str(getattr(w, "message", None) or w) for w in ps.streams.warning],
        )

    def _invoke(self, ps: PowerShell, name: str) -> list[Any]:
        """PowerShell.invoke, bounded: pypsrp polls a running command for as long as the server answers
        Receives with OperationTimeout, which is forever when the output went to an abandoned Receive."""
        ps.begin_invoke()
        idle = 0
        for _ in range(MAX_POLLS):
            if ps.state != PSInvocationState.RUNNING:
                return list(ps.output)
            before = _progress(ps)
            ps.poll_invoke()
            idle = idle + 1 if _progress(ps) == before else 0
            if idle >= self._settings.idle_polls:
                break
        raise TransientError(self.name, f"{name}: the server sent nothing for {idle} polls of "
                             f"{self._settings.operation_timeout} s; the command's outcome is unknown", reopen=True)

    def invoke(self, command: Command, values: ValueSource) -> InvocationResult:
        return self.invoke_batch((command,), values)

    def can_batch(self, shell: Shell) -> bool:
        """Whether several commands for this shell can go in one pipeline: as its statements (PSRP 2.2+) or
        through the dispatcher script (a FullLanguage endpoint)."""
        _, pool = self._pool(self._endpoint(shell))
        return _multi_statement(pool) or self._spec.runs_scripts(shell)

    def invoke_batch(self, commands: Sequence[Command], values: ValueSource) -> InvocationResult:
        """The commands as the statements of one pipeline (all for the same shell; see can_batch). Their
        output comes back as one list, and the first error record fails the whole batch."""
        shells = {c.shell for c in commands}
        if len(shells) != 1:
            raise ValueError("a batch goes to one shell")
        shell = commands[0].shell
        key, pool = self._pool(self._endpoint(shell))
        statements = _multi_statement(pool)
        if len(commands) > 1 and not statements and not self._spec.runs_scripts(shell):
            raise ValueError(f"{self.name}: PSRP {pool.protocol_version} runs one statement per pipeline and "
                             "this endpoint runs no script")
        needs_key = any(isinstance(p.value, Secret) for c in commands for p in c.params)
        if needs_key and key not in self._keyed:
            try:
                with self._budget.operation(self._endpoints[key].port):
                    pool.exchange_keys()
            except Exception as exc:  # noqa: BLE001
                raise self._classify(exc) from exc
            self._keyed.add(key)
        ps = PowerShell(pool)
        names = [c.name for c in commands]
        snapin = key in self._snapin_pending
        prelude = self._spec.prelude if snapin else ()
        if snapin:
            names[:0] = [c.name for c in prelude]
        if statements or len(prelude) + len(commands) == 1:
            if prelude:
                self._add_commands(ps, prelude, None)
                ps.add_statement()
            self._add_commands(ps, commands, values)
        else:
            self._add_dispatch(ps, prelude, commands, values)
        try:
            result = self._run(ps, " + ".join(names))
        except BaseException:
            if snapin:
                # Whether the snap-in got in is unknown: the next command starts from a new session.
                self._drop(key)
            raise
        self._snapin_pending.discard(key)
        return result

    def _add_commands(self, ps: PowerShell, commands: Sequence[Command], values: ValueSource | None) -> None:
        """`values` None: the session's prelude, which carries no bytes or secrets and is not reported sent."""
        resolve = values if values is not None else _NO_VALUES
        for index, command in enumerate(commands):
            if index:
                ps.add_statement()
            ps.add_cmdlet(command.name)
            for param in command.params:
                value = _value(self.name, param.name, param.value, resolve)
                if param.name is None:
                    ps.add_argument(value)
                else:
                    ps.add_parameter(param.name, value)
            if self._on_send is not None and values is not None:
                self._on_send(self.name, command)

    def _add_dispatch(self, ps: PowerShell, prelude: Sequence[Command], commands: Sequence[Command],
                      values: ValueSource) -> None:
        """The commands as the one typed argument of DISPATCHER."""
        items: list[list[Any]] = []
        for command, resolve in [*((c, _NO_VALUES) for c in prelude), *((c, values) for c in commands)]:
            named: dict[str, Any] = {}
            positional: list[Any] = []
            for param in command.params:
                value = _value(self.name, param.name, param.value, resolve)
                if isinstance(param.value, Switch):
                    value = param.value.present  # splatting binds a switch from a boolean
                if param.name is None:
                    positional.append(value)
                else:
                    named[param.name] = value
            items.append([command.name, named, positional])
        ps.add_script(DISPATCHER)
        ps.add_parameter("Commands", items)
        if self._on_send is not None:
            for command in commands:
                self._on_send(self.name, command)

    def _drop(self, key: tuple[str, int, str, str], delete: bool = True) -> None:
        pool = self._pools.pop(key, None)
        self._keyed.discard(key)
        self._snapin_pending.discard(key)
        self._last_used.pop(key, None)
        if pool is not None:
            endpoint = self._endpoints[key]
            try:
                if delete:
                    with self._budget.operation(endpoint.port):
                        pool.close()
                else:
                    pool.connection.close()
            except Exception as exc:  # noqa: BLE001 - best effort; the server expires the shell
                log.debug("closing a pool on %s failed: %s", self.name, first_line(exc))
            finally:
                self._budget.close_shell(endpoint.port, self._throttled(endpoint))

    def reopen(self) -> None:
        """Drop the pools; the next command opens new ones.

        The old shells are deleted through a new connection (the old one may be unusable: after a reset,
        pypsrp's NTLM encryption state cannot recover). Deleting a shell ends whatever it still runs, so
        a request that is late rather than lost (a stall beyond the read timeout) cannot act after the
        step has re-read the server and done the work itself: no second certificate request."""
        pools, self._pools = self._pools, {}
        self._keyed.clear()
        self._snapin_pending.clear()
        self._last_used.clear()
        for key, pool in pools.items():
            endpoint = self._endpoints[key]
            try:
                with self._budget.operation(endpoint.port):
                    self._abandon(endpoint, pool)
                with contextlib.suppress(Exception):
                    pool.connection.close()
            finally:
                # Deleted, or (a dead server) expired by it: either way not ours to count any more.
                self._budget.close_shell(endpoint.port, self._throttled(endpoint))

    def _abandon(self, endpoint: Endpoint, pool: RunspacePool) -> None:
        shell_id = pool.shell.id
        if not shell_id:
            return
        wsman = self._wsman(endpoint)
        selectors = SelectorSet()
        selectors.add_option("ShellId", shell_id)
        try:
            wsman.delete(pool.shell.resource_uri, selector_set=selectors)
        except Exception as exc:  # noqa: BLE001 - best effort: a shell already gone or a dead server
            log.debug("deleting the abandoned shell on %s failed: %s", self.name, first_line(exc))
        finally:
            wsman.close()

    def close(self) -> None:
        for key in list(self._pools):
            self._drop(key)
