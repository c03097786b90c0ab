"""Prototypes of optimizations proposed for code the benchmark's owner does not own (execute.py, journal.py).

They exist only to measure what a proposal would gain (`python -m benchmarks.run --prototypes`); the
real change belongs in the owners' modules. Each one keeps exmig's guarantees:

- `GroupCommitJournal`: `save()` still returns only once the caller's change is on disk (fsync'd,
  atomic rename), but concurrent callers share one write: the writer snapshots every change made
  so far, so N targets finishing steps at once cost one or two fsyncs instead of a queue of N.
- `ParallelPreflightExecutor`: the pre-change read of every server (commit 9cedc36) runs in a bounded
  thread pool (the run's --parallel) instead of one server after another.
- `LeanReadsExecutor`: knowledge of a server is dropped per resource (a file or certutil command does
  not change the Exchange certificate list; New-/Enable-ExchangeCertificate do not change the CA
  store), Import-ExchangeCertificate's own output object replaces the read after it, Enable's success
  (no error record) replaces the read after it (verify reads at the end anyway), and cleanup skips
  Test-Path when this run wrote the PFX. Plus the two above.
- `BatchingExecutor`: LeanReadsExecutor, and a step's commands for one endpoint sent as one pipeline.
- `shared_exchange_key()`: one RSA key pair per run for pypsrp's SecureString key exchange, not one per pool.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from orchestrator import checks
from orchestrator.commands import Command, Shell
from orchestrator.execute import Executor
from orchestrator.fileio import write_atomic
from orchestrator.journal import Journal, StepRecord, now
from orchestrator.plan import WORKSTATION, Step
from orchestrator.playbook import Server
from orchestrator.transport.base import InvocationResult

WRITE_WAIT = 30.0  # seconds a caller waits for the writer before writing itself (bound; never reached normally)


@dataclass
class GroupCommitJournal(Journal):
    _cv: threading.Condition = field(default_factory=threading.Condition, repr=False, compare=False)
    _changes: int = field(default=0, repr=False, compare=False)
    _durable: int = field(default=0, repr=False, compare=False)
    _writing: bool = field(default=False, repr=False, compare=False)

    def begin(self, key: str, step: str, server: str) -> StepRecord:
        with self._lock:
            record = StepRecord(step=step, server=server, outcome="running", started=now())
            self.steps[key] = record
        self.save()
        return record

    def finish(self, key: str, outcome: str, message: str | None = None, attempts: int = 1) -> None:
        with self._lock:
            record = self.steps[key]
            record.outcome, record.finished, record.message, record.attempts = outcome, now(), message, attempts
        self.save()

    def save(self) -> None:
        with self._cv:
            self._changes += 1
            mine = self._changes
            for _ in range(1000):  # bounded: each round either writes or waits for a write
                if self._durable >= mine:
                    return
                if self._writing:
                    self._cv.wait(WRITE_WAIT)
                    continue
                self._writing = True
                upto = self._changes
                with self._lock:  # every change counted up to `upto` was made before its save() call
                    data = (json.dumps(self.to_json(), indent=2) + "\n").encode()
                self._cv.release()
                try:
                    write_atomic(self.path, data)
                finally:
                    self._cv.acquire()
                    self._writing = False
                    self._cv.notify_all()
                self._durable = max(self._durable, upto)
            raise RuntimeError("journal: write did not complete")


_RELIES_ON = ("_preflight", "_preflight_lock", "_preflight_done", "_knowledge", "_pfx_written", "_run_commands",
              "_cleanup", "_selected", "call", "known")


class ParallelPreflightExecutor(Executor):
    """The prototypes override Executor internals; if those move, say so instead of measuring nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing = [name for name in _RELIES_ON if not hasattr(self, name)]
        if missing:
            raise RuntimeError(f"benchmarks/prototypes.py is out of date with orchestrator/execute.py: no {missing}")

    def _preflight(self) -> None:
        with self._preflight_lock:
            if self._preflight_done or getattr(self._local, "in_preflight", False):
                return
            self._local.in_preflight = True
            try:
                names = {s.server for s in self._selected(self.plan()).steps} - {WORKSTATION}
                servers = [s for s in self.playbook.servers if s.name in names]

                def read(server: Server) -> None:
                    self.certificates(server)
                    if server.system_endpoint != server.exchange_endpoint:
                        self.ca_store(server)

                with ThreadPoolExecutor(max_workers=max(1, self.options.parallel),
                                        thread_name_prefix="exmig-preflight") as pool:
                    list(pool.map(read, servers))  # re-raises the first failure, as the loop did
                self._preflight_done = True
            finally:
                self._local.in_preflight = False


_FILE_COMMANDS = {"New-Item", "Set-Content", "Remove-Item"}


class LeanReadsExecutor(ParallelPreflightExecutor):
    def call(self, server: Server, command: Command) -> InvocationResult:
        if command.changes and not self._preflight_done:
            self._preflight()  # first, so that what it reads is kept below
        before = self._knowledge.get(server.name)
        kept_certs = before.certificates if before else None
        kept_store = before.ca_store if before else None
        result: InvocationResult | None = None
        try:
            result = super().call(server, command)
            return result
        finally:
            if command.changes and result is not None:  # succeeded: keep what it cannot have changed
                k = self.known(server)
                if command.shell is Shell.SYSTEM and command.name in _FILE_COMMANDS:
                    k.certificates, k.ca_store = kept_certs, kept_store
                elif command.name == "certutil.exe":
                    k.certificates = kept_certs
                elif command.name in ("New-ExchangeCertificate", "Enable-ExchangeCertificate"):
                    k.ca_store = kept_store
                if command.name == "Import-ExchangeCertificate" and kept_certs is not None:
                    imported = checks.certificates(result.output)
                    if imported and all(c.thumbprint for c in imported):
                        thumbs = {c.thumbprint for c in imported}
                        k.certificates = [c for c in kept_certs if c.thumbprint not in thumbs] + imported
                if command.name == "Enable-ExchangeCertificate" and kept_certs is not None:
                    k.certificates = _with_services(kept_certs, command)

    def _cleanup(self, server: Server, step: Step) -> tuple[str, str]:
        if server.name in self._pfx_written:  # this run wrote it: remove without asking first
            self._run_commands(server, step)
            return "changed", "PFX removed from the working folder"
        return super()._cleanup(server, step)


def _with_services(certs: list[Any], command: Command) -> list[Any]:
    """The certificate list after a successful Enable: the enabled services added to its entry."""
    from dataclasses import replace

    thumb = command.param("Thumbprint")
    services = command.param("Services")
    value = getattr(thumb, "value", None)
    wanted = set(getattr(services, "values", ()) or ())
    out = []
    for c in certs:
        if value and c.thumbprint == value and c.services is not None:
            c = replace(c, services=frozenset(c.services | wanted))
        out.append(c)
    return out


class BatchingExecutor(LeanReadsExecutor):
    """LeanReadsExecutor, and a step whose commands all go to one endpoint and capture no output is sent
    as ONE pipeline, one statement per command (install-chain: New-Item, Set-Content, certutil,
    Remove-Item; copy: New-Item, Set-Content). Cmdlets get -ErrorAction Stop so the first error ends
    the pipeline, as the one-command-per-pipeline loop does; certutil's output is checked as before.

    Caveat for the real change: whether Exchange's restricted endpoint and PowerShell 2.0 stop at the
    first statement's error like the lab does is UNCONFIRMED; only SYSTEM-shell (full language) steps
    are batched here."""

    def _run_commands(self, server: Server, step: Step) -> list[InvocationResult]:
        from orchestrator.transport.psrp import PsrpServerSession

        commands = step.commands
        session = self.session(server)
        if (len(commands) < 2 or step.unresolved or any(c.capture or c.shell is not Shell.SYSTEM for c in commands)
                or not isinstance(session, PsrpServerSession)):
            return super()._run_commands(server, step)
        result = self._call_batch(server, session, commands)
        from orchestrator.dialects import native_failure
        from orchestrator.transport.base import RemoteError

        failure = native_failure(result.output)
        if failure:
            raise RemoteError(server.name, "certutil.exe", failure)
        return [InvocationResult() for _ in commands[:-1]] + [result]

    def _call_batch(self, server: Server, session: Any, commands: tuple[Command, ...]) -> InvocationResult:
        import time

        from pypsrp.powershell import PowerShell

        from orchestrator.transport.base import TransientError
        from orchestrator.transport.psrp import _value

        if not self._preflight_done:
            self._preflight()
        kept = self._knowledge.get(server.name)
        kept_certs = kept.certificates if kept else None
        _, pool = session._pool(session._endpoint(Shell.SYSTEM))
        ps = PowerShell(pool)
        for index, command in enumerate(commands):
            if index:
                ps.add_statement()
            ps.add_cmdlet(command.name)
            for param in command.params:
                value = _value(server.name, param.name, param.value, self)
                if param.name is None:
                    ps.add_argument(value)
                else:
                    ps.add_parameter(param.name, value)
            if not command.native:
                ps.add_parameter("ErrorAction", "Stop")
        start = time.monotonic()
        outcome = "ok"
        try:
            return session._run(ps, " + ".join(c.name for c in commands))
        except TransientError:
            outcome = "transient-error"
            self._local.maybe_changed = True
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self._knowledge.pop(server.name, None)
            if outcome == "ok":  # files and the CA store changed; the Exchange certificate list did not
                self.known(server).certificates = kept_certs
            self.events.command(server.name, getattr(self._local, "step", ""), " + ".join(c.name for c in commands),
                                time.monotonic() - start, outcome)


@contextlib.contextmanager
def shared_exchange_key() -> Iterator[None]:
    """pypsrp generates a fresh 2048-bit RSA key pair for every pool's SecureString key exchange
    (RunspacePool.exchange_keys): ~50 ms of CPU per target. The pair only wraps the session key the
    server picks for that pool, so one ephemeral pair per run (kept in memory, never written) serves
    every pool as well. Prototype: while active, pypsrp's key generation returns one cached pair."""
    import pypsrp.powershell as pypsrp_powershell

    real = pypsrp_powershell.rsa
    cache: dict[tuple[int, int], Any] = {}
    lock = threading.Lock()

    class _SharedRsa:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def generate_private_key(public_exponent: int, key_size: int, backend: Any = None) -> Any:
            with lock:
                key = (public_exponent, key_size)
                if key not in cache:
                    cache[key] = real.generate_private_key(public_exponent=public_exponent, key_size=key_size)
                return cache[key]

    pypsrp_powershell.rsa = _SharedRsa()  # type: ignore[assignment]
    try:
        yield
    finally:
        pypsrp_powershell.rsa = real
