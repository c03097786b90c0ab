"""Execute a plan against live servers: facts first, then only what is missing, with retries.

Every step first reads the server's state (one Get-ExchangeCertificate, the CA store, Test-Path)
and does nothing when the desired state already holds; so a second run changes nothing, and a
step whose answer was lost is re-read before it is tried again (no second request, no double
import). Transient failures are retried with exponential backoff and jitter, bounded in
attempts and time; anything else stops the run with the server's own message. The journal is
written after every step, so a crash or Ctrl-C resumes where it stopped.

This module runs the plan (sessions, the reads, sending, order, fan-out, retries, journal); what each
step does is decided in orchestrator/steps.py, without I/O, and sent here exactly as decided.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential, wait_random

from orchestrator import (
    checks,
    coexistence,
    names_in_use,
    previous,
    reads,
    roots,
    steps,
    troubleshoot,
    trust,
    workstation,
)
from orchestrator.backups import backed_up, backup_path, check_backup, write_backup
from orchestrator.certs import IssuedCertificate, der
from orchestrator.certs import thumbprint as sha1_thumbprint
from orchestrator.commands import Command, Text
from orchestrator.decision import Noop, Read, Send
from orchestrator.dialects import native_failure
from orchestrator.errors import ExitCode, ExmigError, UsageError
from orchestrator.events import Events
from orchestrator.facts import facts_from_delivery
from orchestrator.fileio import write_atomic
from orchestrator.issuance import WaitingForCA, issued_from_journal, issued_to_pems
from orchestrator.journal import Journal
from orchestrator.plan import WORKSTATION, BranchName, Facts, Plan, Step, StepName, build_plan
from orchestrator.playbook import AcmeIssuer, LoadedPlaybook, Server
from orchestrator.reads import ServerFacts, TlsRead
from orchestrator.retire import BACKUP_CAPTURE
from orchestrator.secret_keys import BACKUP_PASSWORD
from orchestrator.secrets_store import SecretStore
from orchestrator.steps import Attempt, DependencyError, Need, RunState, VerifyFailed
from orchestrator.transport.base import InvocationResult, RemoteError, ServerSession, TransientError, first_line


@dataclass
class RunOptions:
    servers: list[str] | None = None
    steps: list[str] | None = None
    from_step: str | None = None
    certificate_files: list[Path] = field(default_factory=list)
    save_pfx: Path | None = None
    # Targets deployed at once: the work per target is waiting on the network, and one wave covers the
    # dozens of servers of a larger organisation; the bound protects the workstation.
    parallel: int = 32

    def check(self, loaded: LoadedPlaybook) -> None:
        """Refuse what cannot work, before anything is sent."""
        if self.save_pfx is not None and loaded.playbook.pfx_password.generate:
            # A generated password is never shown or kept: the backup could never be opened.
            raise UsageError(
                f"--save-pfx {self.save_pfx}: {loaded.path.name}'s pfx_password is generated for the run and never "
                "shown, so nobody could open the backup; set `pfx_password: {env: VARIABLE}` or "
                "`pfx_password: {prompt: true}`"
            )


SessionFactory = Callable[[Server], ServerSession]


class NamesNotCovered(ExmigError):
    """Names in use on the servers that the certificate would serve but not cover: found before the request."""

    exit_code = ExitCode.USAGE

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} name(s) in use are not covered by certificate.domains; nothing was "
                         "changed:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


class TargetsFailed(ExmigError):
    """Several targets failed: one line per server, and the most specific exit code they share (4 when every
    failure is a verification, else 1)."""

    def __init__(self, failures: list[tuple[str, BaseException]], targets: int) -> None:
        lines = []
        for name, exc in sorted(failures, key=lambda f: f[0]):
            text = (str(exc) or type(exc).__name__).splitlines()[0]
            lines.append(text if text.lower().startswith(name.lower() + ":") else f"{name}: {text}")
        super().__init__(f"{len(failures)} of {targets} targets failed:\n" + "\n".join(f"  {line}" for line in lines))
        self.failures = failures
        verify_only = all(getattr(exc, "exit_code", None) == ExitCode.VERIFY_FAILED for _, exc in failures)
        self.exit_code = ExitCode.VERIFY_FAILED if verify_only else ExitCode.FAILED


@dataclass(frozen=True)
class Planned:
    """What `run --check` found for one step: the decision a run would act on now."""

    server: str
    step: str
    decision: Send | Noop | None  # None: the step only reads (verify) or runs on the workstation
    reason: str


# What a TLS endpoint presents, asked with this bound per handshake (all of a server's endpoints side by side): an
# endpoint that does not answer in time presents "not known".
PROBE_TIMEOUT = 5.0

# A decision asks for reads a few times at most (certificates, then files); a bound against a decision
# that keeps asking.
MAX_ROUNDS = 50


class Executor:
    """Sessions, reads, sending, the run's order, retries and the journal; what each step does is decided
    by orchestrator/steps.py. With `check=True` only the reads are sent, and `planned` collects what a run
    would send now (`exmig run --check`)."""

    def __init__(self, loaded: LoadedPlaybook, journal: Journal, sessions: SessionFactory, secrets: SecretStore,
                 events: Events, options: RunOptions, check: bool = False) -> None:
        self.loaded = loaded
        self.playbook = loaded.playbook
        self.journal = journal
        self.secrets = secrets
        self.events = events
        self.options = options
        self.check = check
        self.planned: list[Planned] = []
        # --check: the names in use judged against the certificate, and what would stop the run before the request.
        self.names: list[names_in_use.Coverage] = []
        self.name_problems: list[str] = []
        options.check(loaded)
        self._session_factory = sessions
        self._sessions: dict[str, ServerSession] = {}
        self._server_facts: dict[str, ServerFacts] = {}
        self._blobs: dict[str, bytes] = {}
        self._issued: IssuedCertificate | None = None
        self._facts: tuple[tuple[str | None, str | None], Facts] | None = None
        # Per thread (targets run concurrently): the step being run, and whether one of its
        # modifying commands lost its reply.
        self._local = threading.local()
        self._sessions_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._preflight_lock = threading.Lock()
        self._preflight_done = False
        self._roots_checked = False
        self._top: tuple[str | None, x509.Certificate | None] | None = None
        self._state = RunState(
            self.playbook,
            # Steps finished by earlier runs (read before this run marks them running again).
            previously_done=frozenset(key for key in journal.steps if journal.done(key)),
            # Steps an earlier run was killed in: what they sent may still be landing on the server.
            interrupted=frozenset(key for key, record in journal.steps.items() if record.outcome == "running"),
        )
        if journal.issued_pem:
            self._remember_issued(issued_from_journal(journal.issued_pem, journal.chain_pems))

    # -- values the transport asks for (ValueSource) -------------------------------------------

    def blob(self, key: str) -> bytes:
        try:
            return self._blobs[key]
        except KeyError:
            raise DependencyError(f"the {key} bytes are not available yet") from None

    def secret(self, key: str) -> str:
        return self.secrets.secret(key)

    # -- what is known ------------------------------------------------------------------------------

    def _remember_issued(self, issued: IssuedCertificate) -> None:
        self._issued = issued
        self._blobs["issued-certificate"] = issued.leaf_der
        for cert in issued.intermediates:
            self._blobs[f"intermediate:{checks.sha1_thumbprint(cert)}"] = der(cert)

    def facts(self) -> Facts:
        """What the plan is built from. Cached: the run re-plans after every step, and with --certificate
        files building the facts means reading and parsing those files again."""
        key = (self.journal.csr_pem, self.thumbprint)
        if self._facts is None or self._facts[0] != key:
            if self._issued is None:
                facts = Facts(csr_pem=self.journal.csr_pem)
            else:
                facts = facts_from_delivery(self._issued, self.options.certificate_files, self.journal.csr_pem,
                                            held_in="the CA's certificate (journal)")
            if self.playbook.issuer.install_root:
                root = roots.root_fact(self.loaded, self._chain_top(), self.options.certificate_files)
                if root is not None:
                    self._blobs[f"root:{root.thumbprint}"] = root.der
                    facts = replace(facts, root=root)
            self._facts = (key, facts)
        return self._facts[1]

    def plan(self) -> Plan:
        return build_plan(self.playbook, self.facts())

    @property
    def thumbprint(self) -> str | None:
        return self._issued.thumbprint if self._issued else None

    def run_state(self) -> RunState:
        """What the decisions see: the run's record, with what the journal and memory hold now."""
        selected = self._selected(self.plan())
        pending = frozenset(s.server for s in selected.steps
                            if s.name is StepName.ENABLE and not self.journal.done(s.key)
                            and (self.check or not s.unresolved))  # --check: the thumbprint is still to come
        wanted = self.options.save_pfx is not None or any(
            not self.journal.done(f"{t.name}:{StepName.IMPORT.value}") for t in self.playbook.targets)
        intermediates = tuple(checks.sha1_thumbprint(c) for c in self._issued.intermediates) if self._issued else ()
        with self._state_lock:
            return replace(self._state, csr_pem=self.journal.csr_pem, thumbprint=self.thumbprint,
                           intermediates=intermediates, chain_top=self._chain_top(), pfx_held="pfx" in self._blobs,
                           pfx_wanted=wanted, enable_pending=pending, previous=dict(self.journal.previous),
                           finished=frozenset(k for k in self.journal.steps if self.journal.done(k)),
                           backed_up=frozenset(backed_up(self.journal.path)))

    def server_facts(self, server: Server) -> ServerFacts:
        with self._state_lock:
            return self._server_facts.get(server.name, ServerFacts())

    def _set_facts(self, server: Server, facts: ServerFacts) -> None:
        with self._state_lock:
            self._server_facts[server.name] = facts

    def _drop_facts(self, server: Server, affected: frozenset[str] | None = None) -> None:
        with self._state_lock:
            known = self._server_facts.get(server.name)
            if known is not None:
                self._server_facts[server.name] = ServerFacts() if affected is None else known.without(affected)

    def read(self, server: Server, read: Read[Any] | TlsRead) -> None:
        """Send one declared read and keep its parsed value among the server's facts."""
        if isinstance(read, TlsRead):
            self._set_facts(server, self.server_facts(server).with_value(read.name, self.presented(server)))
            return
        output = self.call(server, read.command).output
        value = read.parse(output)
        if read.name == reads.STORES and value is None:
            # A server that does not say which store an object is from: one read per store.
            ca, root = (self.call(server, r.command).output for r in reads.store_fallback())
            value = reads.stores_from(ca, root)
        facts = self.server_facts(server)
        # Whether that session takes several statements per request is known once it is open (never opened
        # just to ask: a session costs requests, and seconds on a real server).
        shell = read.command.shell
        if shell not in facts.batches and self.session(server).can_batch(shell):
            facts = replace(facts, batches=facts.batches | {shell})
        facts = facts.with_value(read.name, value)
        if read.name in (reads.CERTIFICATES, reads.HELD):
            # One Get-ExchangeCertificate, two views of it: no second request for the other.
            other = reads.held(server) if read.name == reads.CERTIFICATES else reads.certificates(server)
            facts = facts.with_value(other.name, other.parse(output))
        self._set_facts(server, facts)

    def presented(self, server: Server) -> dict[str, str | None]:
        """TLS probe kind -> the leaf thumbprint each of the server's endpoints presents now (None: not known)."""
        from orchestrator.verify.tls_probe import probe

        sni = server.names_for(self.playbook.certificate)[0]

        def one(item: tuple[str, int]) -> tuple[str, str | None]:
            kind, port = item
            try:
                seen = probe(server.connection.host, port, kind, sni, timeout=PROBE_TIMEOUT)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a probe that fails records "not known"
                return kind, None
            return kind, sha1_thumbprint(seen.leaf) if seen.leaf is not None else None

        ports = server.tls_ports.items()
        with ThreadPoolExecutor(max_workers=len(ports), thread_name_prefix="exmig-probe") as pool:
            return dict(pool.map(one, ports))

    def certificates(self, server: Server) -> list[checks.CertInfo]:
        facts = self.server_facts(server)
        if facts.certificates is None:
            self.read(server, reads.certificates(server))
            facts = self.server_facts(server)
        assert facts.certificates is not None
        return list(facts.certificates)

    def _stores(self, server: Server) -> reads.Stores:
        facts = self.server_facts(server)
        if facts.stores is None:
            self.read(server, reads.stores())
            facts = self.server_facts(server)
        assert facts.stores is not None
        return facts.stores

    # -- sessions and sending -------------------------------------------------------------------------

    def session(self, server: Server) -> ServerSession:
        with self._sessions_lock:
            if server.name not in self._sessions:
                self._sessions[server.name] = self._session_factory(server)
            return self._sessions[server.name]

    def close(self) -> None:
        """Delete every session's shells, servers side by side (one after another, 50 targets at 50 ms
        cost seconds of Deletes after the last step)."""
        sessions, self._sessions = self._sessions, {}
        if len(sessions) <= 1 or self.options.parallel <= 1:
            for session in sessions.values():
                session.close()
            return
        with ThreadPoolExecutor(max_workers=min(self.options.parallel, len(sessions)),
                                thread_name_prefix="exmig-close") as pool:
            list(pool.map(lambda session: session.close(), sessions.values()))

    def call(self, server: Server, command: Command) -> InvocationResult:
        return self.call_batch(server, (command,))

    def call_batch(self, server: Server, commands: tuple[Command, ...]) -> InvocationResult:
        """Send commands for one shell of `server` as the statements of one pipeline (one command: a
        plain call); the decision has checked the session can take them together."""
        changes = any(c.changes for c in commands)
        assert not (changes and self.check), "run --check sends reads only"
        if changes and not self._preflight_done:
            self._preflight()
        if changes and not self._roots_checked:
            self._check_roots()
        start = time.monotonic()
        outcome = "ok"
        session = self.session(server)
        try:
            if len(commands) == 1:
                result = session.invoke(commands[0], self)
            else:
                result = session.invoke_batch(commands, self)
            self._warnings(server, commands, result)
            return result
        except TransientError:
            outcome = "transient-error"
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            if changes:
                # Changed, or maybe changed (a lost reply): read again what it can have touched.
                self._drop_facts(server, frozenset().union(*(c.affects for c in commands if c.changes)))
                if outcome == "transient-error":
                    self._local.maybe_changed = True
            self.events.command(server.name, getattr(self._local, "step", ""),
                                " + ".join(c.name for c in commands), time.monotonic() - start, outcome,
                                parameters=[[p.name or "" for p in c.params] for c in commands])

    def _warnings(self, server: Server, commands: tuple[Command, ...], result: InvocationResult) -> None:
        """The server's warnings, shown and journaled with the step they came in (never dropped)."""
        if not result.warnings:
            return
        step = getattr(self._local, "step", "")
        key = getattr(self._local, "step_key", None)
        cmdlet = " + ".join(c.name for c in commands)
        for text in result.warnings:
            self.events.warning(server.name, step, cmdlet, text)
            if key is not None:
                self.journal.warn(key, f"{server.name}: {cmdlet}: {text}")

    def _preflight(self) -> None:
        """Before the run's first change anywhere, read every server the run will touch (both endpoints):
        a wrong password, an unreachable host, a TLS or endpoint mistake on a target then stops the run
        with no server changed, instead of after the source has a new request."""
        with self._preflight_lock:
            if self._preflight_done or getattr(self._local, "in_preflight", False):
                return
            self._local.in_preflight = True
            try:
                names = {s.server for s in self._selected(self.plan()).steps} - {WORKSTATION}

                requesting = self._requesting()

                def read(server: Server) -> None:
                    self._local.in_preflight = True
                    for declared in reads.preflight(server, requesting):
                        if not self.server_facts(server).known(declared.name):
                            self.read(server, declared)
                    self._record_previous(server)

                servers = [s for s in self.playbook.servers if s.name in names]
                with ThreadPoolExecutor(max_workers=max(1, min(self.options.parallel, len(servers) or 1)),
                                        thread_name_prefix="exmig-preflight") as pool:
                    list(pool.map(read, servers))  # re-raises the first server's error
                if requesting:
                    rows = self.names_in_use()
                    self.journal.names_in_use = [
                        {"server": c.row.server, "setting": c.row.setting, "name": c.row.host, "status": c.status,
                         "detail": c.detail} for c in names_in_use.playbook_coverage(self.playbook, rows)]
                    self.journal.save()
                    problems = names_in_use.grouped_problems(self.playbook, rows)
                    if problems:
                        raise NamesNotCovered(problems)
                issuing = any(s.name is StepName.ISSUE for s in self._selected(self.plan()).steps)
                if isinstance(self.playbook.issuer, AcmeIssuer) and self._issued is None and issuing:
                    workstation.acme_preflight(self.loaded, self.journal, self.secrets)
                self._preflight_done = True
            finally:
                self._local.in_preflight = False

    def _requesting(self) -> bool:
        """Whether this run may make the certificate request (it is selected, and no CSR is known yet)."""
        return self.journal.csr_pem is None and any(
            s.name is StepName.REQUEST for s in self._selected(self.plan()).steps)

    def names_in_use(self) -> dict[str, list[Any]]:
        """Per server, the host names its settings use (orchestrator/names_in_use.py), read side by side."""
        def rows(server: Server) -> list[Any]:
            found: list[Any] = []
            for declared in names_in_use.reads(server.name, server.version):
                if not self.server_facts(server).known(declared.name):
                    self.read(server, declared)
                found += self.server_facts(server).extra[declared.name]
            return found

        servers = self.playbook.servers
        with ThreadPoolExecutor(max_workers=max(1, min(self.options.parallel, len(servers))),
                                thread_name_prefix="exmig-names") as pool:
            return dict(zip((s.name for s in servers), pool.map(rows, servers), strict=True))

    def _record_previous(self, server: Server) -> None:
        """What served this server before the run's first change, into the journal once (a resumed run keeps the
        first run's record): its certificates (the preflight's read) and what its TLS endpoints present."""
        if server.name in self.journal.previous:
            return
        facts = self.server_facts(server)
        if facts.held is None:
            self.read(server, reads.held(server))
            facts = self.server_facts(server)
        assert facts.held is not None
        record = previous.served_before(server.name, facts.held, self.presented(server))
        self.journal.record_previous(server.name, record)

    def _chain_top(self) -> x509.Certificate | None:
        """Cached per issued thumbprint: for lab and files issuers it means reading the CA's files."""
        if self._top is None or self._top[0] != self.thumbprint:
            self._top = (self.thumbprint, roots.chain_top(self.loaded, self._issued, self.options.certificate_files))
        return self._top[1]

    def _check_roots(self) -> None:
        """Before the run's first change (or, while the CA's answer is unknown, the first change after it):
        every server that will import the certificate trusts the CA's root, or the run stops here."""
        with self._preflight_lock:
            if self._roots_checked:
                return
            top = self._chain_top()
            if top is None:
                return  # the manual issuer before the CA answered: checked before install-chain/complete
            importing = {s.server for s in self._selected(self.plan()).steps
                         if s.name in (StepName.COMPLETE, StepName.IMPORT)}
            servers = [s for s in self.playbook.servers if s.name in importing]
            if len(servers) > 1 and self.options.parallel > 1:
                with ThreadPoolExecutor(max_workers=min(self.options.parallel, len(servers)),
                                        thread_name_prefix="exmig-roots") as pool:
                    list(pool.map(self._stores, servers))
            root = self.facts().root
            lacking = [s.name for s in servers if not trust.trusted(self._stores(s).root, top)]
            if lacking and not self.playbook.issuer.install_root:
                raise roots.untrusted(lacking, top, root)
            if lacking and root is None:
                raise roots.missing_root_file(top)
            self._roots_checked = True

    # -- one step ---------------------------------------------------------------------------------------

    def _perform(self, step: Step) -> tuple[str, str]:
        if step.server == WORKSTATION:
            if self.check:
                self.planned.append(Planned(step.server, step.name.value, None, step.local_action or ""))
                return "ok", step.local_action or ""
            outcome, reason, issued = workstation.issue(self.loaded, self.journal, self.options.certificate_files,
                                                        self._issued, self.secrets, self._send_one)
            if issued is not None:
                self._remember_issued(issued)
                self.journal.issued_thumbprint = issued.thumbprint
                self.journal.issued_pem, self.journal.chain_pems = issued_to_pems(issued)
                self.journal.save()
            return outcome, reason
        server = self.playbook.server(step.server)
        if step.name in steps.NEEDS_ISSUED and self.thumbprint is None and not self.check:
            raise DependencyError(
                f"{step.name.value} on {server.name} needs the CA's certificate: run the request and issue steps "
                "first, or pass --certificate FILE"
            )
        if step.name is StepName.VERIFY and self.check:
            self.planned.append(Planned(server.name, step.name.value, None, "reads only"))
            return "ok", "reads only"
        # Files are re-read per attempt; and what the last attempt read fresh is not fresh for this one.
        self._set_facts(server, replace(self.server_facts(server), paths={}, fresh=frozenset()))
        if step.name is StepName.VERIFY:
            self._drop_facts(server, frozenset({"certificates"}))
        decision = self._decide(step, server)
        if isinstance(decision, Noop):
            if decision.note:
                self.events.note(decision.note)
            self._planned(step, decision, decision.reason)
            return ("changed" if decision.changed_by else "ok"), decision.reason
        assert isinstance(decision, Send)
        if self.check:
            self._planned(step, decision, decision.reason)
            with self._state_lock:
                self._state = self._state.after(server.name, decision)
            return decision.outcome, decision.reason
        if decision.record:
            # Journaled before the change is sent: `exmig rollback` restores these values.
            self.journal.record_changes(step.key, [dataclasses.asdict(c) for c in decision.record])
        try:
            results = self._send(server, decision)
            reason = self._conclude(step, server, decision, results)
        except TransientError:
            raise  # retried: a 2007 import's PFX is still needed (the cleanup step removes it)
        except Exception:
            if step.name is StepName.IMPORT and step.branch(BranchName.DISCARD):
                self._discard_pfx(step, server)
            raise
        with self._state_lock:
            self._state = self._state.after(server.name, decision)
        return decision.outcome, reason

    def _send_one(self, server: Server, command: Command) -> None:
        """For the issue step's ACME http-01 tokens: one command on a server's system session."""
        self.call(server, command)

    def _planned(self, step: Step, decision: Send | Noop, reason: str) -> None:
        if self.check:
            with self._state_lock:
                self.planned.append(Planned(step.server, step.name.value, decision, reason))

    def _decide(self, step: Step, server: Server) -> Send | Noop:
        """Ask the step's decision, making the reads it asks for; a lost reply's request is re-read for a while
        before deciding that it never landed (bounded in time and count)."""
        attempt = Attempt(maybe_changed=bool(getattr(self._local, "maybe_changed", False)))
        deadline: float | None = None
        for _ in range(MAX_ROUNDS):
            decision = steps.decide(step, self.server_facts(server), self.run_state(), attempt)
            if not isinstance(decision, Need):
                return decision
            if decision.settle:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + max(5.0, 2.0 * self.playbook.retry.operation_timeout)
                elif now >= deadline:
                    attempt = replace(attempt, settled=True)
                    continue
                else:
                    time.sleep(0.5)
            for declared in decision.reads:
                if decision.fresh or not self.server_facts(server).known(declared.name):
                    self.read(server, declared)
        raise ExmigError(f"{server.name}: {step.name.value}: the decision kept asking for reads")

    def _send(self, server: Server, send: Send) -> list[InvocationResult]:
        """Exactly the decision's pipelines, in order; any error record fails the step."""
        missing = [m for c in send.commands for m in c.unresolved]
        if missing:
            raise DependencyError(f"{self._local.step} on {server.name} needs {', '.join(dict.fromkeys(missing))}")
        results = []
        for pipeline in send.pipelines:
            result = self.call_batch(server, pipeline)
            if any(c.native for c in pipeline):
                # certutil's lines are strings; other commands' objects (New-Item's folder) are not its text.
                failure = native_failure([o for o in result.output if isinstance(o, str)] if len(pipeline) > 1
                                         else result.output)
                if failure:
                    raise RemoteError(server.name, next(c.name for c in pipeline if c.native), failure)
            results.append(result)
            for command in pipeline:
                if command.capture and command.capture.startswith(BACKUP_CAPTURE):
                    # Before the next request (the removal): on disk, 0600, and opening with the password.
                    self._keep_backup(server, command.capture.removeprefix(BACKUP_CAPTURE), result.output)
        return results

    def _keep_backup(self, server: Server, thumb: str, output: list[Any]) -> None:
        data = checks.pfx_bytes(output)
        check_backup(data, self.secrets.secret(BACKUP_PASSWORD), thumb)
        path, written = write_backup(self.journal.path, server.name, thumb, data)
        self.events.note(f"{server.name}: certificate {thumb} backed up to {path}" if written else
                         f"{server.name}: certificate {thumb}: the backup {path} from an earlier run is kept")

    def _conclude(self, step: Step, server: Server, send: Send, results: list[InvocationResult]) -> str:
        """Keep what the commands answered (the CSR, the PFX) and check an import took; the step's reason."""
        reason = send.reason
        for pipeline, result in zip(send.pipelines, results, strict=True):
            captures = {c.capture for c in pipeline}
            if "Request" in captures:
                self.journal.csr_pem = checks.csr_text(result.output)
                self.journal.save()
                workstation.write_csr_file(self.loaded, self.journal.csr_pem)
            if "Export" in captures:
                self._blobs["pfx"] = checks.pfx_bytes(result.output)
                if self.options.save_pfx is not None:
                    write_atomic(self.options.save_pfx, self._blobs["pfx"], mode=0o600)
                reason = f"PFX exported ({len(self._blobs['pfx'])} bytes, held in memory)"
        if steps.IMPORTED in send.effects:
            # Import-ExchangeCertificate answers with what it imported: no second read when that says enough.
            answered = [c for r, p in zip(results, send.pipelines, strict=True)
                        if any(x.capture == "Imported" for x in p) for c in checks.certificates(r.output)]
            after = steps.imported(answered, self.thumbprint)
            if not after.done:
                after = steps.imported(self.certificates(server), self.thumbprint)
            if not after.done:
                if step.name is StepName.COMPLETE:
                    raise ExmigError(f"{server.name}: Import-ExchangeCertificate did not complete the request: "
                                     f"{after.reason}")
                raise ExmigError(f"{server.name}: the import did not leave certificate {self.thumbprint} with its "
                                 f"key: {after.reason}")
            if steps.ENABLED in send.effects:
                self._drop_facts(server, frozenset({"certificates"}))
        return reason

    def _discard_pfx(self, step: Step, server: Server) -> None:
        """The PFX holds the private key: a failed import must not leave it on the server. When it cannot be
        removed, that is the cleanup step failing: reported and journaled as such, so the next run's cleanup
        (or import) removes it; the import's own error still ends the run."""
        with self._state_lock:
            self._state = replace(self._state, pfx_written=self._state.pfx_written - {server.name})
        try:
            for _ in range(MAX_ROUNDS):
                decision = steps.discard(step, self.server_facts(server))
                if isinstance(decision, Need):
                    for declared in decision.reads:
                        self.read(server, declared)
                    continue
                if isinstance(decision, Send):
                    self._send(server, decision)
                return
        except Exception as exc:  # noqa: BLE001 - reported as the cleanup step's failure below
            path = next((c.param("Path") for c in step.branch(BranchName.DISCARD) if c.name == "Remove-Item"), None)
            where = path.value if isinstance(path, Text) else "the working folder"
            key = f"{server.name}:{StepName.CLEANUP.value}"
            message = (f"{server.name}: the PFX with the private key may be left at {where} ({first_line(exc)}); "
                       "the next run removes it, or remove it by hand")
            self.journal.begin(key, StepName.CLEANUP.value, server.name)
            self.journal.finish(key, "failed", message)
            self.events.step_started(server.name, StepName.CLEANUP.value)
            self.events.step_finished(server.name, StepName.CLEANUP.value, "failed", message, 0.0)

    # -- the run ----------------------------------------------------------------------------------

    def run(self, close: bool = True) -> None:
        """The selected plan; `close=False` keeps the sessions open for the caller (verify after a run), who
        then calls close()."""
        if not self.check:
            self.journal.runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            self.journal.save()
        elif self._requesting():
            rows = self.names_in_use()
            self.names = names_in_use.playbook_coverage(self.playbook, rows)
            self.name_problems = names_in_use.grouped_problems(self.playbook, rows)
        targets = {t.name for t in self.playbook.targets}
        try:
            index = 0
            while True:
                # Re-planned after every step: the issue step turns placeholders into facts.
                plan = self._selected(self.plan())
                if index >= len(plan.steps):
                    break
                if plan.steps[index].server not in targets:
                    self._run_step(plan.steps[index])
                    index += 1
                    continue
                end = index
                while end < len(plan.steps) and plan.steps[end].server in targets:
                    end += 1
                self._fan_out(plan.steps[index:end])
                index = end
        finally:
            if close:
                self.close()

    def _fan_out(self, steps: tuple[Step, ...]) -> None:
        """Each target's steps in order; targets side by side, at most `parallel` at once."""
        by_server: dict[str, list[Step]] = {}
        for step in steps:
            by_server.setdefault(step.server, []).append(step)
        if len(by_server) == 1 or self.options.parallel <= 1:
            for server_steps in by_server.values():
                for step in server_steps:
                    self._run_step(step)
            return
        failures: list[tuple[str, BaseException]] = []

        def one(server_steps: list[Step]) -> None:
            try:
                for step in server_steps:
                    self._run_step(step)
            except BaseException as exc:  # noqa: BLE001 - reported per server below; other targets go on
                failures.append((server_steps[0].server, exc))

        with ThreadPoolExecutor(max_workers=self.options.parallel, thread_name_prefix="exmig-target") as pool:
            list(pool.map(one, by_server.values()))
        if failures:
            for _, exc in failures:
                if not isinstance(exc, Exception):
                    raise exc  # Ctrl-C and the like end the run as they would have
            if len(failures) == 1:
                raise failures[0][1]
            raise TargetsFailed(failures, len(by_server))

    def _selected(self, plan: Plan) -> Plan:
        chosen = plan.select(self.options.servers, self.options.steps)
        if self.options.from_step:
            names = [s.name.value for s in chosen.steps]
            if self.options.from_step not in names:  # nothing selected from there on
                return Plan(())
            chosen = Plan(chosen.steps[names.index(self.options.from_step):])
        # Before the CA's certificate is known the targets' steps cannot run: they say so themselves.
        return _with_export(plan, chosen) if self.thumbprint is not None else chosen

    def _run_step(self, step: Step) -> None:
        self._local.step = step.name.value
        self._local.step_key = step.key
        self.events.step_started(step.server, step.name.value)
        start = time.monotonic()
        journal = self.journal if not self.check else None  # --check leaves the journal as it is
        if journal is not None:
            journal.begin(step.key, step.name.value, step.server)
        self._local.maybe_changed = False
        attempts = 0

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, TransientError):
                # The failing server is the one the error names: a step's facts can come from another.
                failing = exc.server if exc.server in self._sessions else step.server
                if exc.reopen and failing in self._sessions:
                    self._sessions[failing].reopen()
                    self._drop_facts(self.playbook.server(failing))
                delay = state.next_action.sleep if state.next_action else 0.0
                self.events.retrying(step.server, step.name.value, state.attempt_number, str(exc), delay)
                troubleshoot.retry(failing, step.name.value, state.attempt_number, str(exc), delay)

        policy = self.playbook.retry
        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.max_seconds),
            # Exponential backoff with jitter, so parallel targets do not retry in lock step.
            wait=wait_exponential(multiplier=policy.initial_backoff, max=policy.max_backoff)
            + wait_random(0, policy.initial_backoff),
            retry=retry_if_exception_type(TransientError),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    outcome, reason = self._perform(step)
        except WaitingForCA as exc:
            if journal is not None:
                journal.finish(step.key, "waiting", str(exc), attempts)
            self.events.step_finished(step.server, step.name.value, "skipped", "waiting for the CA",
                                      time.monotonic() - start)
            raise
        except BaseException as exc:
            message = str(exc) or type(exc).__name__
            if journal is not None:
                journal.finish(step.key, "failed", message, attempts)
            self.events.step_finished(step.server, step.name.value, "failed", message, time.monotonic() - start)
            if (isinstance(exc, VerifyFailed) and step.name is StepName.VERIFY and self.playbook.rollback_on_failure
                    and journal is not None):
                self._rollback_after(self.playbook.server(step.server), exc)
            raise
        if outcome == "ok" and self._local.maybe_changed:
            # The re-read found the state in place: the attempt whose reply was lost made the change.
            outcome, reason = "changed", reason + " (made by the attempt whose reply was lost)"
        if journal is not None:
            journal.finish(step.key, outcome, reason, attempts)
        self.events.step_finished(step.server, step.name.value, outcome, reason, time.monotonic() - start)

    # -- rolling back ------------------------------------------------------------------------------------

    def _rollback_after(self, server: Server, failure: VerifyFailed) -> None:
        """rollback_on_failure: the server is rolled back; the verification's failure still ends the run, and a
        rollback that fails too is shown and journaled beside it."""
        self.events.note(f"{server.name}: verification failed ({failure}); rolling back (rollback_on_failure)")
        # A failed rollback is shown and journaled by rollback_server; the verification's failure is what is raised.
        with contextlib.suppress(Exception):
            self.rollback_server(server)

    def rollback(self, servers: list[Server]) -> None:
        """`exmig rollback`: each server back to what served it before this migration, then verified over TLS.
        Every server is tried; the first failure is raised once all were (several: TargetsFailed)."""
        # Nothing is recorded now: the journal's record is of before the migration.
        self._preflight_done = self._roots_checked = True
        failures: list[tuple[str, BaseException]] = []
        try:
            for server in servers:
                try:
                    self.rollback_server(server)
                except Exception as exc:  # noqa: BLE001 - reported per server below
                    failures.append((server.name, exc))
        finally:
            self.close()
        if len(failures) == 1:
            raise failures[0][1]
        if failures:
            raise TargetsFailed(failures, len(servers))

    def rollback_server(self, server: Server) -> str:
        """Re-enable, per service, the certificate recorded as serving before (a retired one from its backup),
        then check over TLS that each endpoint presents it again. Journaled as the server's rollback step."""
        name = "rollback"
        key = f"{server.name}:{name}"
        self._local.step, self._local.step_key = name, key
        self._local.maybe_changed = False
        self.events.step_started(server.name, name)
        start = time.monotonic()
        self.journal.begin(key, name, server.name)
        outcome = "ok"
        try:
            record = self.journal.previous.get(server.name, {})
            backups = {}
            anywhere = backed_up(self.journal.path)
            for thumb in previous.previous_services(record):
                path = backup_path(self.journal.path, server.name, thumb)
                if not path.exists():
                    path = anywhere.get(thumb.upper(), path)  # the same certificate's backup from its source
                if path.exists():
                    backups[thumb] = path
                    self._blobs[f"backup:{thumb}"] = path.read_bytes()
            self._set_facts(server, replace(self.server_facts(server), fresh=frozenset()))
            decision: Any = None
            for _ in range(MAX_ROUNDS):
                decision = steps.rollback_decision(server, self.server_facts(server), self.run_state(), backups)
                if not isinstance(decision, Need):
                    break
                for declared in decision.reads:
                    self.read(server, declared)
            reason = decision.reason
            if isinstance(decision, Send):
                self._send(server, decision)
                outcome = "changed"
            reason += "; " + self._verify_rollback(server, record)
            undone = self._undo_coexistence(server)
            if undone:
                outcome, reason = "changed", f"{reason}; {undone}"
        except BaseException as exc:
            message = str(exc) or type(exc).__name__
            self.journal.finish(key, "failed", message)
            self.events.step_finished(server.name, name, "failed", message, time.monotonic() - start)
            raise
        self.journal.finish(key, outcome, reason)
        self.events.step_finished(server.name, name, outcome, reason, time.monotonic() - start)
        return reason

    def _undo_coexistence(self, server: Server) -> str | None:
        """The coexistence step's URLs back to the values journaled before it changed them; the record goes once
        they are restored (a later run's coexistence step records afresh)."""
        key = f"{server.name}:{StepName.COEXISTENCE.value}"
        recorded = self.journal.changes.get(key)
        if not recorded:
            return None
        decision = coexistence.undo([coexistence.UrlChange(**c) for c in recorded])
        if not isinstance(decision, Send):
            return None
        self._send(server, decision)
        self.journal.changes.pop(key, None)
        self.journal.save()
        return decision.reason

    def _verify_rollback(self, server: Server, record: dict[str, Any]) -> str:
        """Each endpoint presents the certificate recorded for its service again (services of this playbook with a
        recorded thumbprint)."""
        now = self.presented(server)
        wanted = set(server.services_for(self.playbook.certificate))
        wrong = []
        checked = []
        for service in previous.SERVICES:
            thumb = record.get("services", {}).get(service.value)
            if service not in wanted or not thumb:
                continue
            seen = now.get(previous.TLS_KIND[service])
            checked.append(service.value)
            if seen != thumb.upper():
                wrong.append(f"{service.value} presents {seen or 'nothing (no answer)'}, not {thumb}")
        if wrong:
            raise VerifyFailed(f"{server.name}: after the rollback " + "; ".join(wrong))
        return "presented again on " + (", ".join(checked) if checked else "no recorded service")


def _with_export(plan: Plan, chosen: Plan) -> Plan:
    """A selection that copies or imports on a target gets the source's export step too, before the first
    target step: the PFX is exported as a step of its own, shown and journaled, never from inside a target's
    call."""
    names = {s.name for s in chosen.steps}
    if not names & {StepName.COPY, StepName.IMPORT} or StepName.EXPORT in names:
        return chosen
    export = next((s for s in plan.steps if s.name is StepName.EXPORT), None)
    if export is None:
        return chosen
    first = next(i for i, s in enumerate(chosen.steps) if s.server not in (export.server, WORKSTATION))
    return Plan((*chosen.steps[:first], export, *chosen.steps[first:]))
