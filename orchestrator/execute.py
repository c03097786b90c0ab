"""Execute a plan against live servers: facts first, then only what is missing, with retries.

Every step first reads the server's state (one Get-ExchangeCertificate, the CA store, Test-Path)
and does nothing when the desired state already holds; so a second run changes nothing, and a
step whose answer was lost is re-read before it is tried again (no second request, no double
import). Transient failures are retried with exponential backoff and jitter, bounded in
attempts and time; anything else stops the run with the server's own message. The journal is
written after every step, so a crash or Ctrl-C resumes where it stopped.

This module runs the plan (sessions, calls, what is known of each server, order, fan-out, retries,
journal); what each step does is in orchestrator/steps.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential, wait_random

from orchestrator import checks, roots, troubleshoot
from orchestrator.certs import IssuedCertificate, der
from orchestrator.commands import Command, Param, Shell, Text, TextList
from orchestrator.dialects import dialect_for
from orchestrator.errors import ExitCode, ExmigError, UsageError
from orchestrator.events import Events
from orchestrator.facts import facts_from_delivery
from orchestrator.issuance import (
    WaitingForCA,
    issued_from_journal,
)
from orchestrator.journal import Journal
from orchestrator.plan import WORKSTATION, Facts, Plan, Step, StepName, build_plan
from orchestrator.playbook import LoadedPlaybook, Server
from orchestrator.secrets_store import SecretStore
from orchestrator.steps import DependencyError, StepHandlers
from orchestrator.transport.base import InvocationResult, ServerSession, TransientError


@dataclass
class ServerKnowledge:
    """What was last read from a server; dropped after any change there."""

    certificates: list[checks.CertInfo] | None = None
    ca_store: list[str] | None = None
    root_store: list[x509.Certificate] | None = None


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


class Executor(StepHandlers):
    """Sessions, remote calls, what is known of each server, the run's order, retries and the journal;
    what each step does is StepHandlers'."""

    def __init__(self, loaded: LoadedPlaybook, journal: Journal, sessions: SessionFactory, secrets: SecretStore,
                 events: Events, options: RunOptions) -> None:
        self.loaded = loaded
        self.playbook = loaded.playbook
        self.journal = journal
        self.secrets = secrets
        self.events = events
        self.options = options
        options.check(loaded)
        self._session_factory = sessions
        self._sessions: dict[str, ServerSession] = {}
        self._knowledge: dict[str, ServerKnowledge] = {}
        self._blobs: dict[str, bytes] = {}
        self._init_step_state()
        self._issued: IssuedCertificate | None = None
        self._facts: tuple[tuple[str | None, str | None], Facts] | None = None
        # Per thread (targets run concurrently): the step being run, and whether one of its
        # modifying commands lost its reply.
        self._local = threading.local()
        self._export_lock = threading.Lock()
        self._sessions_lock = threading.Lock()
        self._preflight_lock = threading.Lock()
        self._preflight_done = False
        self._roots_checked = False
        self._top: tuple[str | None, x509.Certificate | None] | None = None
        # Steps finished by earlier runs (read before this run marks them running again).
        self._previously_done = {key for key in journal.steps if journal.done(key)}
        # Steps an earlier run was killed in: what they sent may still be landing on the server.
        self._interrupted = {key for key, record in journal.steps.items() if record.outcome == "running"}
        if journal.issued_pem:
            self._remember_issued(issued_from_journal(journal.issued_pem, journal.chain_pems))

    # -- values the transport asks for (ValueSource) -------------------------------------------

    def blob(self, key: str) -> bytes:
        if key == "pfx":
            with self._export_lock:
                if key not in self._blobs:
                    self._export_pfx()
        try:
            return self._blobs[key]
        except KeyError:
            raise DependencyError(f"the {key} bytes are not available yet") from None

    def secret(self, key: str) -> str:
        return self.secrets.secret(key)

    # -- facts ------------------------------------------------------------------------------------

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

    # -- sessions and remote calls ---------------------------------------------------------------

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
        plain call); the caller has checked the session can take them together."""
        changes = any(c.changes for c in commands)
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
                known = self._knowledge.get(server.name)
                affected = set().union(*(c.affects for c in commands if c.changes))
                if known is not None:
                    if "certificates" in affected:
                        known.certificates = None
                    if "ca_store" in affected:
                        known.ca_store = None
                    if "root_store" in affected:
                        known.root_store = None
                if outcome == "transient-error":
                    self._local.maybe_changed = True
            self.events.command(server.name, getattr(self._local, "step", ""),
                                " + ".join(c.name for c in commands), time.monotonic() - start, outcome)

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
                root_check = self._root_check_servers() if self._chain_top() is not None else set()

                def read(server: Server) -> None:
                    self._local.in_preflight = True
                    self.certificates(server)
                    if server.system_endpoint != server.exchange_endpoint:
                        self.ca_store(server)  # 2010: files and certutil go to another endpoint
                    if server.name in root_check:
                        self.root_store(server)  # side by side here; _check_roots then decides

                servers = [s for s in self.playbook.servers if s.name in names]
                with ThreadPoolExecutor(max_workers=max(1, min(self.options.parallel, len(servers) or 1)),
                                        thread_name_prefix="exmig-preflight") as pool:
                    list(pool.map(read, servers))  # re-raises the first server's error
                self._preflight_done = True
            finally:
                self._local.in_preflight = False

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
            importing = self._root_check_servers()
            root = self.facts().root
            lacking = [s.name for s in self.playbook.servers
                       if s.name in importing and not roots.trusted(self.root_store(s), top)]
            if lacking and not self.playbook.issuer.install_root:
                raise roots.untrusted(lacking, top, root)
            if lacking and root is None:
                raise roots.missing_root_file(top)
            self._roots_checked = True

    def _root_check_servers(self) -> set[str]:
        return {s.server for s in self._selected(self.plan()).steps if s.name in (StepName.COMPLETE, StepName.IMPORT)}

    def root_store(self, server: Server) -> list[x509.Certificate]:
        k = self.known(server)
        if k.root_store is None:
            self._read_stores(server)
            assert k.root_store is not None
        return k.root_store

    def _read_stores(self, server: Server) -> None:
        """LocalMachine\\CA and \\Root in one Get-ChildItem (two paths; told apart by PSParentPath): the root
        check costs no request where install-chain reads the CA store anyway."""
        k = self.known(server)
        both = Command("Get-ChildItem", (Param("Path", TextList(("Cert:\\LocalMachine\\CA",
                                                                  "Cert:\\LocalMachine\\Root"))),),
                       shell=Shell.SYSTEM, changes=False)
        split = roots.split_stores(self.call(server, both).output)
        if split is None:  # a server that does not say which store an object is from: one read per store
            split = {name: self.call(server, Command(
                "Get-ChildItem", (Param("Path", Text(f"Cert:\\LocalMachine\\{name}")),), shell=Shell.SYSTEM,
                changes=False)).output for name in ("CA", "Root")}
        k.ca_store = checks.store_thumbprints(split["CA"])
        k.root_store = roots.store_certificates(split["Root"])

    def known(self, server: Server) -> ServerKnowledge:
        return self._knowledge.setdefault(server.name, ServerKnowledge())

    def certificates(self, server: Server) -> list[checks.CertInfo]:
        k = self.known(server)
        if k.certificates is None:
            result = self.call(server, dialect_for(server).list_certificates(server))
            k.certificates = checks.certificates(result.output)
        return k.certificates

    def ca_store(self, server: Server) -> list[str]:
        k = self.known(server)
        if k.ca_store is None:
            self._read_stores(server)
            assert k.ca_store is not None
        return k.ca_store

    # -- the run ----------------------------------------------------------------------------------

    def run(self, close: bool = True) -> None:
        """The selected plan; `close=False` keeps the sessions open for the caller (verify after a run), who
        then calls close()."""
        self.journal.runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self.journal.save()
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
        if any(s.name in (StepName.COPY, StepName.IMPORT) for s in steps):
            self.blob("pfx")  # export once, before the threads need it
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
        return chosen

    def _run_step(self, step: Step) -> None:
        self._local.step = step.name.value
        self._local.step_key = step.key
        self.events.step_started(step.server, step.name.value)
        start = time.monotonic()
        self.journal.begin(step.key, step.name.value, step.server)
        self._local.maybe_changed = False
        attempts = 0

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, TransientError):
                # The failing server is the one the error names: a step's facts can come from another.
                failing = exc.server if exc.server in self._sessions else step.server
                if exc.reopen and failing in self._sessions:
                    self._sessions[failing].reopen()
                    self._knowledge.pop(failing, None)
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
            self.journal.finish(step.key, "waiting", str(exc), attempts)
            self.events.step_finished(step.server, step.name.value, "skipped", "waiting for the CA",
                                      time.monotonic() - start)
            raise
        except BaseException as exc:
            message = str(exc) or type(exc).__name__
            self.journal.finish(step.key, "failed", message, attempts)
            self.events.step_finished(step.server, step.name.value, "failed", message, time.monotonic() - start)
            raise
        if outcome == "ok" and self._local.maybe_changed:
            # The re-read found the state in place: the attempt whose reply was lost made the change.
            outcome, reason = "changed", reason + " (made by the attempt whose reply was lost)"
        self.journal.finish(step.key, outcome, reason, attempts)
        self.events.step_finished(step.server, step.name.value, outcome, reason, time.monotonic() - start)
