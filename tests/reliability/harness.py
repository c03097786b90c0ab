"""In-process migration runs against an in-process lab, with one injected fault, judged by the lab's own state.

A subprocess per run would cost ~1.5 s of start-up alone; here one run of the 2010 -> 2007 migration
takes about a second. The lab's initial state (CA, both servers with their default certificates) is
built once and copied for every run, so the runs differ only in the fault they get.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orchestrator import journal as journal_mod
from orchestrator.connect import session_factory
from orchestrator.decision import Send
from orchestrator.events import JsonEvents, QuietEvents
from orchestrator.execute import Executor, Planned, RunOptions
from orchestrator.issuance import load_csr
from orchestrator.lab.exchange import MY, REQUEST
from orchestrator.lab.faults import FaultKind, FaultRule
from orchestrator.lab.site import LabSite
from orchestrator.playbook import LabIssuer, LoadedPlaybook, Playbook, RetryPolicy, load_playbook
from orchestrator.secrets_store import SecretStore
from tests.conftest import ROOT
from tests.e2e.conftest import write_playbook
from tests.labstate import site_state

LAB_PLAYBOOK = ROOT / "playbooks" / "lab.yml"
SUBJECT_CN = "mail.mitserv.net"

# Short timeouts so that a stall beyond the client's read timeout costs seconds, not minutes; enough
# attempts that one fault per step is always absorbed by retries.
SWEEP_RETRY = RetryPolicy(attempts=8, max_seconds=60, initial_backoff=0.05, max_backoff=0.5,
                          operation_timeout=1, read_timeout=3)
STALL_SECONDS = 5.0  # longer than read_timeout: the client gives up, the server acts later
QUIET_TIMEOUT = STALL_SECONDS + 10.0  # bound on waiting for a faulted request to finish server-side
KINDS: tuple[FaultKind, ...] = (FaultKind.RESET_BEFORE, FaultKind.RESET_AFTER, FaultKind.HTTP_500,
                                FaultKind.HTTP_503, FaultKind.OPERATION_TIMEOUT, FaultKind.STALL)


def sweep_playbook(mutate: Callable[[Playbook], Playbook] | None = None) -> Playbook:
    playbook = load_playbook(LAB_PLAYBOOK).playbook.model_copy(update={"retry": SWEEP_RETRY})
    return mutate(playbook) if mutate is not None else playbook


@dataclass
class RunOutcome:
    error: str | None  # None: the run ended with every step done
    error_type: str | None
    events: list[dict[str, Any]]
    seconds: float

    @property
    def retries(self) -> int:
        return sum(1 for e in self.events if e.get("event") == "retry")


def checked_requests(planned: list[Planned]) -> dict[str, list[tuple[tuple[str, tuple[str, ...]], ...]]]:
    """Per server, each request `--check` said a run would send: commands with their parameter names."""
    out: dict[str, list[tuple[tuple[str, tuple[str, ...]], ...]]] = {}
    for entry in planned:
        if isinstance(entry.decision, Send):
            for pipeline in entry.decision.pipelines:
                out.setdefault(entry.server, []).append(tuple((c.name, tuple(p.name or "" for p in c.params))
                                                              for c in pipeline))
    return out


def _reads(command: str) -> bool:
    """A request of reads only (the facts a run gathers: every Get- cmdlet, Test-Path)."""
    return all(n.startswith("Get-") or n == "Test-Path" for n in command.split(" + "))


def sent_requests(events: list[dict[str, Any]]) -> dict[str, list[tuple[tuple[str, tuple[str, ...]], ...]]]:
    """Per server, each request a run sent beyond the reads, from its --json command events (those that
    answered: a request retried after a lost reply is sent again, and counted once)."""
    out: dict[str, list[tuple[tuple[str, tuple[str, ...]], ...]]] = {}
    for e in events:
        if e.get("event") != "command" or _reads(e["command"]) or e["outcome"] != "ok":
            continue
        names = e["command"].split(" + ")
        out.setdefault(e["server"], []).append(tuple(zip(names, (tuple(p) for p in e["parameters"]), strict=True)))
    return out


@dataclass
class InProcessLab:
    site: LabSite
    loaded: LoadedPlaybook
    tmp: Path

    @property
    def journal_path(self) -> Path:
        return self.tmp / ".exmig" / "lab.journal.json"

    def run(self, save_pfx: Path | None = None, options: RunOptions | None = None,
            events: JsonEvents | None = None) -> RunOutcome:
        """One `exmig run`, as a fresh process would do it: new journal object, secrets, sessions."""
        start = time.monotonic()
        journal = journal_mod.load(self.journal_path, self.loaded.path)
        secrets = SecretStore(self.loaded.playbook, interactive=False)
        out: io.StringIO = getattr(events, "stream", None) or io.StringIO()
        events = events or JsonEvents(out)
        opts = options or RunOptions(save_pfx=save_pfx)
        error: BaseException | None = None
        try:
            with self.client_environment():
                executor = Executor(self.loaded, journal, session_factory(self.loaded, secrets), secrets, events,
                                    opts)
                executor.run()
        except Exception as exc:  # noqa: BLE001 - the outcome is judged by the caller
            error = exc
        events.finish()
        parsed = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
        return RunOutcome(None if error is None else (str(error) or type(error).__name__),
                          None if error is None else type(error).__name__, parsed, time.monotonic() - start)

    def check(self) -> list[Planned]:
        """`exmig run --check`, in process: what a run would send now (reads only are sent)."""
        journal = journal_mod.load(self.journal_path, self.loaded.path)
        secrets = SecretStore(self.loaded.playbook, interactive=False)
        with self.client_environment():
            executor = Executor(self.loaded, journal, session_factory(self.loaded, secrets), secrets, QuietEvents(),
                                RunOptions(), check=True)
            executor.run()
        return executor.planned

    def client_environment(self) -> contextlib.AbstractContextManager[None]:
        """Kerberos clients in this process pointed at the lab's realm (nothing without one)."""
        realm = self.site.realm
        return realm.client_environment(self.tmp / "client.ccache") if realm else contextlib.nullcontext()

    def client_env(self) -> dict[str, str]:
        """The same for an `exmig` subprocess."""
        realm = self.site.realm
        return {"KRB5_CONFIG": str(realm.krb5_config), "KRB5CCNAME": f"FILE:{self.tmp / 'client.ccache'}"} \
            if realm else {}

    def state(self) -> dict[str, Any]:
        return site_state(self.site)

    def set_fault(self, server: str, rule: FaultRule) -> None:
        self.site.servers[server].winrm.faults.set_rules([rule])

    def fired(self, server: str) -> bool:
        return not self.site.servers[server].winrm.faults.rules

    def wait_quiet(self, server: str) -> bool:
        """Wait until a fired fault's request has finished server-side (a stalled one acts late)."""
        log = self.site.servers[server].winrm.log
        deadline = time.monotonic() + QUIET_TIMEOUT
        while time.monotonic() < deadline:
            if log.faults():
                return True
            time.sleep(0.05)
        return False

    def faulted_request(self, server: str) -> str:
        faults = self.site.servers[server].winrm.log.faults()
        return faults[0].action or "(auth)" if faults else ""

    def stop(self) -> None:
        self.site.stop()


class LabTemplate:
    """The lab's initial state, built once; `instantiate` copies it for one run."""

    def __init__(self, root: Path, mutate: Callable[[Playbook], Playbook] | None = None,
                 **lab_settings: Any) -> None:
        """`lab_settings`: LabSettings fields to change, e.g. windows_powershell="5.1"."""
        self.root = root
        self.playbook = sweep_playbook(mutate)
        self.state_dir = root / "template-state"
        self.lab_settings = lab_settings
        self._site(self.state_dir).start().stop()
        self._count = 0

    def _site(self, state_dir: Path) -> LabSite:
        site = LabSite(self.playbook, state_dir, use_playbook_ports=False)
        site.settings = replace(site.settings, **self.lab_settings)
        return site

    def instantiate(self, tmp: Path | None = None) -> InProcessLab:
        self._count += 1
        tmp = tmp or self.root / f"run-{self._count:04d}"
        tmp.mkdir(parents=True, exist_ok=True)
        state_dir = tmp / "lab-state"
        shutil.copytree(self.state_dir, state_dir)
        site = self._site(state_dir).start()
        try:
            lab_playbook = site.playbook_for_lab().model_copy(
                update={"issuer": LabIssuer(type="lab", ca_dir=str(state_dir / "ca"))})
            loaded = load_playbook(write_playbook(lab_playbook, tmp / "lab.yml"))
        except BaseException:
            site.stop()
            raise
        return InProcessLab(site, loaded, tmp)


# -- judging a run -----------------------------------------------------------------------------


def duplicates(lab: InProcessLab) -> int:
    """Certificates or pending requests for our name beyond the one each server should hold."""
    count = 0
    for emulated in lab.site.servers.values():
        view = emulated.inspector
        ours = [t for t in view.thumbprints(MY) if f"CN={SUBJECT_CN}" in (view.certificate(t, MY) or _NONE).subject]
        pending = [t for t in view.thumbprints(REQUEST)
                   if f"CN={SUBJECT_CN}" in (view.certificate(t, REQUEST) or _NONE).subject]
        count += max(0, len(ours) - 1) + len(pending)
    return count


class _NoCert:
    subject = ""


_NONE: Any = _NoCert()


def _spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def data_lost(lab: InProcessLab, source: str = "EX2010") -> list[str]:
    """What the promise says must never be lost: the journal, the CSR in it, the key on the source."""
    problems: list[str] = []
    try:
        journal = journal_mod.load(lab.journal_path, lab.loaded.path)
    except Exception as exc:  # noqa: BLE001
        return [f"journal unreadable: {exc}"]
    if not journal.csr_pem:
        problems.append("journal lost the CSR")
    if not journal.issued_pem or not journal.issued_thumbprint:
        problems.append("journal lost the issued certificate")
    if problems:
        return problems
    assert journal.csr_pem and journal.issued_pem and journal.issued_thumbprint
    leaf = x509.load_pem_x509_certificate(journal.issued_pem.encode())
    if _spki(leaf.public_key()) != _spki(load_csr(journal.csr_pem).public_key()):
        problems.append("the journal's CSR is not the issued certificate's request")
    view = lab.site.servers[source].inspector
    cert = view.certificate(journal.issued_thumbprint, MY)
    if cert is None or not cert.has_private_key:
        problems.append(f"{source} lost the private key of {journal.issued_thumbprint}")
    for name, emulated in lab.site.servers.items():
        if emulated.inspector.serving().get("https") != journal.issued_thumbprint:
            problems.append(f"{name} does not serve the journal's certificate")
    return problems


def local_pfx_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".pfx", ".p12")
            and "lab-state" not in p.parts]


@dataclass
class CaseResult:
    server: str
    index: int
    kind: str
    fired: bool
    action: str
    restarts: int
    converged: bool
    duplicates: int
    data_lost: list[str]
    errors: list[str] = field(default_factory=list)
    retries: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.converged and self.duplicates == 0 and not self.data_lost

    def describe(self) -> str:
        return (f"{self.server} request {self.index} ({self.action or 'not reached'}) {self.kind}: "
                f"converged={self.converged} restarts={self.restarts} duplicates={self.duplicates} "
                f"lost={self.data_lost} errors={self.errors}")


def run_case(template: LabTemplate, reference: dict[str, Any], server: str, index: int, kind: FaultKind
             ) -> CaseResult:
    """One migration with one fault on `server`'s request `index`; at most one restart."""
    start = time.monotonic()
    lab = template.instantiate()
    try:
        lab.set_fault(server, FaultRule(kind=kind, request=index,
                                        seconds=STALL_SECONDS if kind is FaultKind.STALL else 0.0))
        errors: list[str] = []
        first = lab.run()
        retries = first.retries
        fired = lab.fired(server)
        if fired:
            lab.wait_quiet(server)  # a stalled request acts late: judge (and restart) after it did
        restarts = 0
        final = first
        if first.error is not None:
            errors.append(f"{first.error_type}: {first.error}")
            restarts = 1
            final = lab.run()
            retries += final.retries
            if final.error is not None:
                errors.append(f"{final.error_type}: {final.error}")
        state = lab.state()
        result = CaseResult(
            server=server, index=index, kind=kind.value, fired=fired, action=lab.faulted_request(server),
            restarts=restarts, converged=final.error is None and state == reference,
            duplicates=duplicates(lab), data_lost=data_lost(lab), errors=errors, retries=retries,
        )
        if local_pfx_files(lab.tmp):
            result.data_lost.append("a PFX was left on the workstation's disk")
        if result.converged and not result.ok:
            result.converged = False
        if final.error is None and state != reference:
            result.errors.append(f"end state differs: {_diff(reference, state)}")
        for name, emulated in lab.site.servers.items():
            if emulated.winrm.errors:
                result.errors.append(f"{name} lab internal error: {emulated.winrm.errors[0][-300:]}")
        result.seconds = time.monotonic() - start
        return result
    finally:
        lab.stop()
        shutil.rmtree(lab.tmp, ignore_errors=True)


def _diff(reference: dict[str, Any], state: dict[str, Any]) -> str:
    parts = []
    for name in sorted(set(reference) | set(state)):
        a, b = reference.get(name, {}), state.get(name, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                parts.append(f"{name}.{key}: expected {a.get(key)!r}, got {b.get(key)!r}")
    return "; ".join(parts)


@dataclass
class Reference:
    state: dict[str, Any]
    requests: dict[str, int]  # HTTP requests each server served in the fault-free run
    actions: dict[str, list[str]]
    events: list[dict[str, Any]] = field(default_factory=list)

    def command_number(self, server: str, command: str, snapin: bool = False) -> int:
        """Which WSMan Command request (1-based) carries the first `command` on `server`: each command
        exmig sends is one Command; on 2007 the pool's Add-PSSnapin comes first."""
        sent = [e["command"] for e in self.events if e.get("event") == "command" and e.get("server") == server]
        return sent.index(command) + 1 + int(snapin)


def record_reference(template: LabTemplate) -> Reference:
    lab = template.instantiate()
    try:
        outcome = lab.run()
        assert outcome.error is None, outcome.error
        assert duplicates(lab) == 0 and not data_lost(lab)
        return Reference(
            state=lab.state(),
            requests={name: e.winrm.faults.http_count for name, e in lab.site.servers.items()},
            actions={name: e.winrm.log.actions() for name, e in lab.site.servers.items()},
            events=outcome.events,
        )
    finally:
        lab.stop()
        shutil.rmtree(lab.tmp, ignore_errors=True)


@dataclass
class Figures:
    runs: int = 0
    injected: int = 0
    converged: int = 0
    restarts: int = 0
    duplicates: int = 0
    data_lost: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def add(self, result: CaseResult) -> None:
        self.runs += 1
        self.injected += int(result.fired)
        self.converged += int(result.ok)
        self.restarts += result.restarts
        self.duplicates += result.duplicates
        self.data_lost += int(bool(result.data_lost))
        self.seconds += result.seconds
        if not result.ok:
            self.failures.append(result.describe())

    def line(self) -> str:
        rate = 100.0 * self.converged / self.runs if self.runs else 0.0
        return (f"runs {self.runs}, faults injected {self.injected}, converged {self.converged} ({rate:.1f}%), "
                f"restarts {self.restarts}, duplicates {self.duplicates}, data lost {self.data_lost}, "
                f"{self.seconds:.0f} s")


class StepBoundaries(JsonEvents):
    """Events that note, per step, which of its server's HTTP requests it used (first, last)."""

    def __init__(self, site: LabSite) -> None:
        self.stream = io.StringIO()
        super().__init__(self.stream)
        self.site = site
        self._open: dict[tuple[str, str], int] = {}
        self.ranges: list[tuple[str, str, int, int]] = []

    def _count(self, server: str) -> int:
        emulated = self.site.servers.get(server)
        return emulated.winrm.faults.http_count if emulated is not None else 0

    def step_started(self, server: str, step: str) -> None:
        self._open[(server, step)] = self._count(server)
        super().step_started(server, step)

    def step_finished(self, server: str, step: str, outcome: str, reason: str, seconds: float) -> None:
        first = self._open.pop((server, step), 0) + 1
        last = self._count(server)
        if server in self.site.servers and last >= first:
            self.ranges.append((server, step, first, last))
        super().step_finished(server, step, outcome, reason, seconds)


def record_step_ranges(template: LabTemplate) -> list[tuple[str, str, int, int]]:
    """(server, step, first request, last request) of every step of a fault-free run."""
    lab = template.instantiate()
    try:
        events = StepBoundaries(lab.site)
        assert lab.run(events=events).error is None
        return events.ranges
    finally:
        lab.stop()
        shutil.rmtree(lab.tmp, ignore_errors=True)
