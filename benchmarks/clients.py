"""The clients the benchmark compares, each running the whole 2010 -> 2007 migration against a LabFarm.

- `run_exmig`: exmig itself, in-process, built as `exmig run` builds it (orchestrator/cli.py `_execute`).
- `run_plain(per_command=True)`: the naive baseline, plain pypsrp the way a quick script or a
  per-task tool does it: a new WSMan connection and RunspacePool for every cmdlet (NTLM handshake,
  Create, Receive, Command, Receive, Delete), plus the 2007 snap-in and the SecureString key
  exchange again in every pool that needs them.
- `run_plain(per_command=False)`: the protocol minimum, measured: one pool per endpoint for the
  whole run, exactly the commands exmig's plan must send and nothing else (no state reads).

Both plain clients send the cmdlet sequence of `orchestrator.plan.build_plan` (rendered with the
same facts exmig would have), so the three differ only in how they use the protocol.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import TaggedValue
from pypsrp.wsman import WSMan

from benchmarks.labfarm import LabFarm
from orchestrator import journal as journal_mod
from orchestrator import names_in_use
from orchestrator.certs import der
from orchestrator.commands import Blob, Command, Flag, Number, Secret, Shell, Switch, Text, TextList, Thumbprint
from orchestrator.connect import session_factory
from orchestrator.dialects import dialect_for
from orchestrator.events import JsonEvents
from orchestrator.execute import Executor, RunOptions
from orchestrator.issuance import from_lab_ca
from orchestrator.plan import Facts, IntermediateFact, StepName, build_plan
from orchestrator.playbook import LoadedPlaybook, Server
from orchestrator.secrets_store import SecretStore
from orchestrator.transport.base import ServerSession

OPERATION_TIMEOUT = 20  # seconds a Receive may be held (bounded; the lab caps it at 60)
READ_TIMEOUT = 30


class BenchmarkFailure(RuntimeError):
    """A client did not complete the migration: the numbers would be meaningless."""


@dataclass
class RunResult:
    client: str
    wall: float  # seconds, the whole migration
    thumbprint: str
    commands: dict[str, list[str]] = field(default_factory=dict)  # per server, cmdlet names in order sent
    # exmig only: (start, end) of the targets' part of the run, seconds from the run's start.
    target_phase: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


# --- exmig ---------------------------------------------------------------------------------------


class TimedEvents(JsonEvents):
    """exmig's JSON events into a buffer, plus a monotonic clock reading per step event."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.steps: list[tuple[str, str, str, float]] = []  # server, step, phase, monotonic

    def step_started(self, server: str, step: str) -> None:
        self.steps.append((server, step, "start", time.monotonic()))
        super().step_started(server, step)

    def step_finished(self, server: str, step: str, outcome: str, reason: str, seconds: float) -> None:
        self.steps.append((server, step, "end", time.monotonic()))
        super().step_finished(server, step, outcome, reason, seconds)


class OneCommandPerRequest:
    """A session that never batches: WinRS as it was before issue 19, one powershell.exe per command."""

    def __init__(self, inner: ServerSession) -> None:
        self._inner = inner
        self.name = inner.name

    def can_batch(self, shell: Shell) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def run_exmig(farm: LabFarm, parallel: int | None = None, label: str = "exmig",
              one_command_per_request: bool = False) -> RunResult:
    """`exmig run --yes --json` in-process: the journal, secrets, sessions and options as the CLI builds them.
    `one_command_per_request`: every request carries one command (the WinRS baseline)."""
    loaded = farm.loaded()
    path = farm.state_dir / "journal.json"
    journal = journal_mod.load(path, loaded.path)
    secrets = SecretStore(loaded.playbook, interactive=False)
    events = TimedEvents()
    options = RunOptions() if parallel is None else RunOptions(parallel=parallel)
    factory = session_factory(loaded, secrets)
    if one_command_per_request:
        inner = factory

        def factory(server: Server) -> ServerSession:  # type: ignore[misc]
            return OneCommandPerRequest(inner(server))  # type: ignore[return-value]
    executor = Executor(loaded, journal, factory, secrets, events, options)
    start = time.monotonic()
    executor.run()
    wall = time.monotonic() - start
    events.finish()
    stream = events._stream
    assert isinstance(stream, io.StringIO)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = [r for r in records if r.get("event") == "step" and r.get("outcome") == "failed"]
    if failed or executor.thumbprint is None:
        raise BenchmarkFailure(f"{label}: {failed or 'no certificate'}")
    commands: dict[str, list[str]] = {}
    for r in records:
        if r.get("event") == "command":
            commands.setdefault(r["server"], []).append(r["command"])
    targets = set(farm.target_names)
    marks = [t for server, _, _, t in events.steps if server in targets]
    phase = max(marks) - min(marks) if marks else None
    _check_served(farm, executor.thumbprint, label)
    return RunResult(label, wall, executor.thumbprint, commands, phase, records)


def _check_served(farm: LabFarm, thumbprint: str, client: str) -> None:
    wrong = farm.not_serving(thumbprint)
    if wrong:
        raise BenchmarkFailure(f"{client}: certificate {thumbprint} does not serve every service on {', '.join(wrong)}")


# --- plain pypsrp ----------------------------------------------------------------------------------


def _plain_value(value: Any, blobs: dict[str, bytes], secrets: dict[str, str]) -> Any:
    if isinstance(value, (Text, Number, Flag, Thumbprint)):
        return value.value
    if isinstance(value, TextList):
        return list(value.values)
    if isinstance(value, Switch):
        return None if value.present else False  # pypsrp sends a None value as a present switch
    if isinstance(value, Blob):
        return blobs[value.key]
    if isinstance(value, Secret):
        return TaggedValue("SS", secrets[value.key])
    raise TypeError(type(value).__name__)


class PlainPsrp:
    """pypsrp used directly. `per_command`: a new connection and pool for every cmdlet."""

    def __init__(self, per_command: bool, users: dict[str, tuple[str, str]]) -> None:
        self.per_command = per_command
        self._users = users  # server name -> (username, password)
        self._pools: dict[tuple[str, str, str], RunspacePool] = {}
        self._snapin: set[tuple[str, str, str]] = set()
        self._keyed: set[tuple[str, str, str]] = set()

    def _open(self, server: Server, shell: Shell) -> tuple[tuple[str, str, str], RunspacePool]:
        ep = server.exchange_endpoint if shell is Shell.EXCHANGE else server.system_endpoint
        key = (server.name, ep.path.lower(), ep.configuration)
        if not self.per_command and key in self._pools:
            return key, self._pools[key]
        username, password = self._users[server.name]
        wsman = WSMan(server.connection.host, port=ep.port, path=ep.path.lstrip("/"), ssl=False, auth="ntlm",
                      username=username, password=password, encryption="auto",
                      operation_timeout=OPERATION_TIMEOUT, read_timeout=READ_TIMEOUT)
        pool = RunspacePool(wsman, configuration_name=ep.configuration)
        pool.open()
        if not self.per_command:
            self._pools[key] = pool
        return key, pool

    @staticmethod
    def _invoke(pool: RunspacePool, name: str, params: list[tuple[str | None, Any]]) -> list[Any]:
        ps = PowerShell(pool)
        ps.add_cmdlet(name)
        for pname, value in params:
            if pname is None:
                ps.add_argument(value)
            else:
                ps.add_parameter(pname, value)
        output = ps.invoke()
        if ps.had_errors or ps.streams.error:
            raise BenchmarkFailure(f"{name}: {[str(e) for e in ps.streams.error]}")
        return list(output)

    def invoke(self, server: Server, command: Command, blobs: dict[str, bytes], secrets: dict[str, str]) -> list[Any]:
        key, pool = self._open(server, command.shell)
        try:
            if command.shell is Shell.EXCHANGE and server.snapin and key not in self._snapin:
                self._invoke(pool, "Add-PSSnapin", [("Name", server.snapin)])
                if not self.per_command:
                    self._snapin.add(key)
            if any(isinstance(p.value, Secret) for p in command.params) and key not in self._keyed:
                pool.exchange_keys()
                if not self.per_command:
                    self._keyed.add(key)
            params = [(p.name, _plain_value(p.value, blobs, secrets)) for p in command.params]
            return self._invoke(pool, command.name, params)
        finally:
            if self.per_command:
                pool.close()

    def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


def _csr(output: list[Any]) -> str:
    for item in output:
        text = item if isinstance(item, str) else getattr(item, "to_string", None) or str(item)
        if "REQUEST-----" in text:
            return text
    raise BenchmarkFailure(f"no CSR in the request's output: {output!r}")


def _file_data(output: list[Any]) -> bytes:
    for item in output:
        if isinstance(item, (bytes, bytearray)):
            return bytes(item)
        for props in (getattr(item, "adapted_properties", {}), getattr(item, "extended_properties", {})):
            data = props.get("FileData")
            if isinstance(data, (bytes, bytearray)):
                return bytes(data)
    raise BenchmarkFailure("Export-ExchangeCertificate returned no FileData")


def run_plain(farm: LabFarm, per_command: bool, pfx_password: str = "Bench-Pfx-Password-1") -> RunResult:
    """The plan's commands, in plan order, sent with plain pypsrp (the facts filled in as exmig would)."""
    loaded: LoadedPlaybook = farm.loaded()
    playbook = loaded.playbook
    users = farm.credentials()
    client = PlainPsrp(per_command, users)
    secrets = {"pfx-password": pfx_password}
    blobs: dict[str, bytes] = {}
    commands: dict[str, list[str]] = {}
    label = "naive" if per_command else "minimum"
    start = time.monotonic()
    try:
        source = playbook.source
        # The procedure reads every server's names in use before the request (issue 17): so does a script.
        for server in playbook.servers:
            for read in names_in_use.reads(server.name, server.version):
                client.invoke(server, read.command, blobs, secrets)
                commands.setdefault(server.name, []).append(read.command.name)
        request = next(s for s in build_plan(playbook).steps if s.name is StepName.REQUEST)
        output: list[Any] = []
        for command in request.commands:
            output = client.invoke(source, command, blobs, secrets)
            commands.setdefault(source.name, []).append(command.name)
        csr = _csr(output)
        issued = from_lab_ca(loaded, csr, playbook.certificate)  # the workstation's part: no request
        facts = Facts(
            csr_pem=csr, issued_thumbprint=issued.thumbprint, issued_subject=issued.leaf.subject.rfc4514_string(),
            issued_file="lab CA",
            intermediates=tuple(IntermediateFact(_thumb(c), c.subject.rfc4514_string(), "lab CA", None, der(c))
                                for c in issued.intermediates),
        )
        blobs["issued-certificate"] = issued.leaf_der
        for cert in issued.intermediates:
            blobs[f"intermediate:{_thumb(cert)}"] = der(cert)
        for step in build_plan(playbook, facts).steps:
            if step.name in (StepName.REQUEST, StepName.ISSUE):
                continue
            server = playbook.server(step.server)
            # A script reads the certificate back by thumbprint (exmig's verify finds it in the server's list).
            sent = step.commands if step.name is not StepName.VERIFY else (
                dialect_for(server).get_certificate(server, Thumbprint(issued.thumbprint)),)
            for command in sent:
                output = client.invoke(server, command, blobs, secrets)
                commands.setdefault(server.name, []).append(command.name)
                if command.capture == "Export":
                    blobs["pfx"] = _file_data(output)
                if step.name is StepName.VERIFY and not output:
                    raise BenchmarkFailure(f"{label}: verify on {server.name} found no certificate")
    finally:
        client.close()
    wall = time.monotonic() - start
    _check_served(farm, issued.thumbprint, label)
    return RunResult(label, wall, issued.thumbprint, commands)


def _thumb(cert: Any) -> str:
    from orchestrator.checks import sha1_thumbprint

    return sha1_thumbprint(cert)


def extra_commands(sent: dict[str, list[str]], needed: dict[str, list[str]]) -> dict[str, Counter[str]]:
    """Per server, the cmdlets a client sent beyond the plan's (multiset difference)."""
    return {server: Counter(names) - Counter(needed.get(server, [])) for server, names in sent.items()}

