"""What each plan step does on its server: read the state, act only where it does not hold.

Mixed into `Executor` (orchestrator/execute.py), which provides the sessions, remote calls, what is
known of each server, the run's order, retries and the journal. A handler returns (outcome, reason):
"ok" when the state already held, "changed" when it acted; anything wrong raises.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orchestrator import checks, roots, status
from orchestrator.certs import IssuedCertificate
from orchestrator.commands import Command, Param, Shell, Text, Thumbprint
from orchestrator.dialects import dialect_for, native_failure, remote_path, remove_file
from orchestrator.errors import ExitCode, ExmigError
from orchestrator.fileio import write_atomic
from orchestrator.issuance import WaitingForCA, check_issued, from_files, from_lab_ca, issued_to_pems, load_csr
from orchestrator.plan import WORKSTATION, Plan, Step, StepName, pfx_file_name
from orchestrator.playbook import FilesIssuer, LabIssuer, ManualIssuer, Server
from orchestrator.transport.base import InvocationResult, RemoteError, TransientError, first_line

if TYPE_CHECKING:
    from orchestrator.events import Events
    from orchestrator.execute import RunOptions, ServerKnowledge
    from orchestrator.journal import Journal
    from orchestrator.playbook import LoadedPlaybook, Playbook
    from orchestrator.transport.base import ServerSession


class DependencyError(ExmigError):
    """A selected step needs something an earlier (unselected or unfinished) step provides."""

    exit_code = ExitCode.USAGE


class VerifyFailed(ExmigError):
    exit_code = ExitCode.VERIFY_FAILED


class StepHandlers:
    if TYPE_CHECKING:  # provided by Executor
        loaded: LoadedPlaybook
        playbook: Playbook
        journal: Journal
        events: Events
        options: RunOptions
        _local: threading.local
        _knowledge: dict[str, ServerKnowledge]
        _blobs: dict[str, bytes]
        _issued: IssuedCertificate | None
        _previously_done: set[str]
        _interrupted: set[str]

        @property
        def thumbprint(self) -> str | None: ...
        def plan(self) -> Plan: ...
        def _selected(self, plan: Plan) -> Plan: ...
        def _remember_issued(self, issued: IssuedCertificate) -> None: ...
        def session(self, server: Server) -> ServerSession: ...
        def call(self, server: Server, command: Command) -> InvocationResult: ...
        def call_batch(self, server: Server, commands: tuple[Command, ...]) -> InvocationResult: ...
        def certificates(self, server: Server) -> list[checks.CertInfo]: ...
        def ca_store(self, server: Server) -> list[str]: ...
        def root_store(self, server: Server) -> list[x509.Certificate]: ...
        def _chain_top(self) -> x509.Certificate | None: ...

    def _init_step_state(self) -> None:
        # 2007 targets whose PFX file this run wrote: a file from an earlier run carries that run's
        # (generated) password, so it cannot be imported with ours.
        self._pfx_written: set[str] = set()
        # Servers where this run imported the certificate and saw it with its key: nothing else there
        # has enabled it since (the run's own Enable comes next), so those reads can be skipped.
        self._imported_now: set[str] = set()
        # Servers where this run made the request: the CA's certificate for it cannot be there before this
        # run's complete step imports it, so complete need not read the list first.
        self._requested_now: set[str] = set()
        # Servers whose Enable went in the import's pipeline (and succeeded with it).
        self._enabled_now: set[str] = set()

    def _perform(self, step: Step) -> tuple[str, str]:
        if step.server == WORKSTATION:
            return self._issue()
        server = self.playbook.server(step.server)
        handler = {
            StepName.REQUEST: self._request,
            StepName.INSTALL_CHAIN: self._install_chain,
            StepName.COMPLETE: self._complete,
            StepName.ENABLE: self._enable,
            StepName.EXPORT: self._export,
            StepName.COPY: self._copy,
            StepName.IMPORT: self._import,
            StepName.CLEANUP: self._cleanup,
            StepName.VERIFY: self._verify,
        }[step.name]
        return handler(server, step)

    def _run_commands(self, server: Server, step: Step, then: tuple[Command, ...] = ()) -> list[InvocationResult]:
        """The step's commands (and `then`) in order, one result per pipeline sent. Consecutive commands for
        one shell that keep no output share a pipeline where the server allows it (PSRP 2.2+). The dialects
        keep every such run safe to go on after a failed command (a later one fails too, or only cleans
        up): whether a server runs the next statement after a failed one is not exmig's to know. Any error
        record fails the step as before."""
        missing = step.unresolved
        if missing:
            raise DependencyError(f"{step.name.value} on {server.name} needs {', '.join(missing)}")
        results = []
        for batch in self._batches(server, step.commands + then):
            result = self.call_batch(server, batch)
            if any(c.native for c in batch):
                # certutil's lines are strings; other commands' objects (New-Item's folder) are not its text.
                failure = native_failure([o for o in result.output if isinstance(o, str)] if len(batch) > 1
                                         else result.output)
                if failure:
                    raise RemoteError(server.name, next(c.name for c in batch if c.native), failure)
            results.append(result)
        return results

    def _batches(self, server: Server, commands: tuple[Command, ...]) -> list[tuple[Command, ...]]:
        batches: list[list[Command]] = []
        for command in commands:
            last = batches[-1] if batches else None
            # A kept output must stay alone: only commands that answer nothing may follow it (Enable).
            if (last is not None and last[-1].shell is command.shell and not command.capture
                    and (not any(c.capture for c in last) or command.silent)):
                last.append(command)
            else:
                batches.append([command])
        out: list[tuple[Command, ...]] = []
        session = self.session(server)
        for batch in batches:
            if len(batch) > 1 and not session.can_batch(batch[0].shell):
                out.extend((c,) for c in batch)
            else:
                out.append(tuple(batch))
        return out

    def _request(self, server: Server, step: Step) -> tuple[str, str]:
        certs = self.certificates(server)
        if self.thumbprint and checks.installed_with_key(certs, self.thumbprint).done:
            return "ok", "the request is already completed on the source"
        match = self._pending(certs)
        lost = getattr(self._local, "maybe_changed", False) or step.key in self._interrupted
        if not match.all and not self.journal.csr_pem and lost:
            match = self._settle_pending(server)
        if self.journal.csr_pem:
            key = load_csr(self.journal.csr_pem).public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            if any(p.public_key_der == key for p in match.all) or (self._issued is not None):
                return "ok", "the pending request exists; the CSR is in the journal"
        elif match.all:
            if len(match.all) > 1 or match.ambiguous:
                thumbs = ", ".join(p.thumbprint for p in match.all)
                what = (f"{len(match.all)} pending requests for {self.playbook.certificate.subject.CN}"
                        if len(match.all) > 1 else
                        f"a pending request for {self.playbook.certificate.subject.CN} with other names than "
                        "certificate.domains")
                raise ExmigError(
                    f"{server.name}: {what} ({thumbs}) and none is known to this journal; remove the stray one "
                    "(Remove-ExchangeCertificate -Thumbprint ...) and run again"
                )
            return self._recover_request(server, match.mine[0])
        results = self._run_commands(server, step)
        csr = checks.csr_text(results[-1].output)
        self.journal.csr_pem = csr
        self.journal.save()
        self._write_csr_file()
        self._requested_now.add(server.name)
        return "changed", "certificate request created; the CSR is kept in the journal"

    def _pending(self, certs: list[checks.CertInfo]) -> checks.PendingMatch:
        spec = self.playbook.certificate
        return checks.matching_requests(certs, spec.subject.CN, spec.domains)

    def _settle_pending(self, server: Server) -> checks.PendingMatch:
        """An earlier attempt's New-ExchangeCertificate lost its reply (or an earlier run was killed in this
        step), and no request shows yet: the server may still be generating the key (the command runs on
        after the connection broke). Re-read for a while before making another: it would be a duplicate."""
        deadline = time.monotonic() + max(5.0, 2.0 * self.playbook.retry.operation_timeout)
        match = checks.PendingMatch((), ())
        while not match.all and time.monotonic() < deadline:
            time.sleep(0.5)
            self._knowledge.pop(server.name, None)
            match = self._pending(self.certificates(server))
        return match

    def _recover_request(self, server: Server, pending: checks.CertInfo) -> tuple[str, str]:
        """A request exists but its CSR was lost (the reply never arrived): export it instead of a second one."""
        params: tuple[Param, ...] = (Param("Thumbprint", Thumbprint(pending.thumbprint)),)
        if server.version == 2010:
            params += (Param("Server", Text(server.name)),)
        result = self.call(server, Command("Export-ExchangeCertificate", params, changes=False))
        self.journal.csr_pem = checks.csr_text(result.output)
        self.journal.save()
        self._write_csr_file()
        return "ok", f"adopted the pending request {pending.thumbprint}; its CSR was exported again"

    def _write_csr_file(self) -> None:
        issuer = self.playbook.issuer
        if isinstance(issuer, ManualIssuer) and self.journal.csr_pem:
            path = self.csr_path()
            write_atomic(path, self.journal.csr_pem.encode(), mode=0o644)

    def csr_path(self) -> Path:
        issuer = self.playbook.issuer
        name = issuer.csr_file if isinstance(issuer, ManualIssuer) and issuer.csr_file else \
            f"{self.loaded.path.stem}.csr"
        return self.loaded.resolve(name)

    def _issue(self) -> tuple[str, str]:
        cert = self.playbook.certificate
        files = self.options.certificate_files
        issuer = self.playbook.issuer
        if files:
            issued = from_files(files, self.journal.csr_pem, cert)
            reason = f"the CA's certificate {issued.thumbprint} from {', '.join(str(f) for f in files)}"
        elif self._issued is not None:
            check_issued(self._issued, self.journal.csr_pem, cert, "journal")
            return "ok", f"the CA's certificate {self._issued.thumbprint} is known"
        elif isinstance(issuer, FilesIssuer):
            paths = [self.loaded.resolve(p) for p in [issuer.certificate, issuer.bundle] if p]
            paths += [self.loaded.resolve(p) for p in issuer.chain]
            issued = from_files(paths, self.journal.csr_pem, cert)
            reason = f"the CA's certificate {issued.thumbprint} from the playbook's files"
        elif self.journal.csr_pem is None:
            raise DependencyError("issue needs the CSR: run the request step on the source first")
        elif isinstance(issuer, LabIssuer):
            issued = from_lab_ca(self.loaded, self.journal.csr_pem, cert)
            reason = f"signed by the lab CA: {issued.thumbprint}"
        else:
            self._write_csr_file()
            raise WaitingForCA(
                f"waiting for the CA: the CSR is in {self.csr_path()}; submit it to your CA, then run "
                f"`exmig run {self.loaded.path.name} --certificate FILE [--chain FILE]` with the files it returns"
            )
        if self._issued is not None and self._issued.thumbprint != issued.thumbprint:
            raise ExmigError(
                f"the journal already holds certificate {self._issued.thumbprint}; {issued.thumbprint} is another one. "
                "Move the journal away to start over with the new certificate"
            )
        self._remember_issued(issued)
        self.journal.issued_thumbprint = issued.thumbprint
        self.journal.issued_pem, self.journal.chain_pems = issued_to_pems(issued)
        self.journal.save()
        return "changed", reason

    def _need_issued(self, server: Server, step: Step) -> str:
        if self.thumbprint is None:
            raise DependencyError(
                f"{step.name.value} on {server.name} needs the CA's certificate: run the request and issue steps "
                "first, or pass --certificate FILE"
            )
        return self.thumbprint

    def _install_chain(self, server: Server, step: Step) -> tuple[str, str]:
        self._need_issued(server, step)
        assert self._issued is not None
        wanted = [checks.sha1_thumbprint(c) for c in self._issued.intermediates]
        decision = checks.ca_store_has(self.ca_store(server), wanted)
        top = self._chain_top()
        if decision.done and self.playbook.issuer.install_root and top is not None \
                and not roots.trusted(self.root_store(server), top):
            decision = checks.Decision(False, "the CA's root is not in LocalMachine\\Root")
        if decision.done:
            # An earlier attempt whose answer was lost after certutil ran leaves its .cer file behind.
            if self._remove_leftover_files(server, step):
                return "changed", f"{decision.reason}; removed the intermediate file an interrupted attempt left"
            return "ok", decision.reason
        self._run_commands(server, step)
        if self.playbook.issuer.install_root:
            return "changed", "the CA's root added to LocalMachine\\Root, intermediate(s) to LocalMachine\\CA"
        return "changed", "intermediate certificate(s) added to LocalMachine\\CA"

    def _remove_leftover_files(self, server: Server, step: Step) -> bool:
        removed = False
        for command in step.commands:
            if command.name != "Remove-Item":
                continue
            path = next(p.value for p in command.params if p.name == "Path")
            assert isinstance(path, Text)
            if self._exists(server, path.value):
                self.call(server, command)
                removed = True
        return removed

    def _complete(self, server: Server, step: Step) -> tuple[str, str]:
        thumb = self._need_issued(server, step)
        if server.name in self._requested_now and not getattr(self._local, "maybe_changed", False):
            return self._import_response(server, step, thumb)
        certs = self.certificates(server)
        decision = checks.installed_with_key(certs, thumb)
        if decision.done:
            return "ok", decision.reason
        found = checks.find(certs, thumb)
        if found is not None and found.has_private_key is False:
            raise ExmigError(
                f"{server.name} holds certificate {thumb} without its private key (it was imported where the "
                "request was not made); remove it with Remove-ExchangeCertificate and run again"
            )
        return self._import_response(server, step, thumb)

    def _enable_after(self, server: Server) -> tuple[Command, ...]:
        """This server's Enable, to go in the import's pipeline where the server takes several statements
        (one request fewer). Only when the enable step is selected and not done: a later Enable that finds
        no certificate (the import failed) fails too, and changes nothing."""
        if not self.session(server).can_batch(Shell.EXCHANGE):
            return ()
        for later in self._selected(self.plan()).for_server(server.name):
            if later.name is StepName.ENABLE and not self.journal.done(later.key) and not later.unresolved:
                return later.commands
        return ()

    def _import_response(self, server: Server, step: Step, thumb: str) -> tuple[str, str]:
        after = self._run_import(server, step, thumb)
        if not after.done:
            raise ExmigError(f"{server.name}: Import-ExchangeCertificate did not complete the request: {after.reason}")
        return "changed", f"request completed: certificate {thumb} with its private key"

    def _run_import(self, server: Server, step: Step, thumb: str) -> checks.Decision:
        """The step's import, with this server's Enable in its pipeline where that can go (_enable_after)."""
        enable = self._enable_after(server)
        after = self._imported(server, self._run_commands(server, step, enable), thumb)
        if enable and after.done:
            self._enabled_now.add(server.name)
        return after

    def _imported(self, server: Server, results: list[InvocationResult], thumb: str) -> checks.Decision:
        """Import-ExchangeCertificate answers with the certificate it imported: no second read when that
        answer says enough (a server that sends less is read again)."""
        decision = checks.Decision(False, "")
        for result in results:
            decision = checks.installed_with_key(checks.certificates(result.output), thumb)
            if decision.done:
                break
        else:
            decision = checks.installed_with_key(self.certificates(server), thumb)
        if decision.done:
            self._imported_now.add(server.name)
        return decision

    def _enable(self, server: Server, step: Step) -> tuple[str, str]:
        thumb = self._need_issued(server, step)
        services = server.services_for(self.playbook.certificate)
        enabled = "enabled for " + ", ".join(s.value for s in services)
        if server.name in self._enabled_now:
            return "changed", enabled + " (in the import's pipeline)"
        if server.name in self._imported_now:
            # Imported a moment ago by this run: it is there, with no services yet.
            self._run_commands(server, step)
            return "changed", enabled
        certs = self.certificates(server)
        if checks.find(certs, thumb) is None:
            earlier = "complete" if server.name == self.playbook.source.name else "import"
            raise DependencyError(
                f"enable on {server.name} needs certificate {thumb} on that server: run the {earlier} step first"
            )
        decision = checks.services_enabled(certs, thumb, services, step.key in self._previously_done)
        if decision.done:
            return "ok", decision.reason
        self._run_commands(server, step)  # Enable answers nothing; verify reads the result at the end
        return "changed", enabled

    def _targets_needing_pfx(self) -> list[Server]:
        out = []
        for target in self.playbook.targets:
            if not self.journal.done(f"{target.name}:{StepName.IMPORT.value}"):
                out.append(target)
        return out

    def _export_pfx(self) -> None:
        source = self.playbook.source
        thumb = self.thumbprint
        known_there = source.name in self._imported_now
        if thumb is None or not (known_there or checks.installed_with_key(self.certificates(source), thumb).done):
            raise DependencyError(
                f"the PFX must be exported from {source.name}, which does not hold the completed certificate yet; "
                "run the request, issue and complete steps first"
            )
        commands = dialect_for(source).export(source, Thumbprint(thumb), pfx_file_name(self.playbook))
        result: InvocationResult | None = None
        for command in commands:
            r = self.call(source, command)
            if command.capture == "Export":
                result = r
        assert result is not None
        self._blobs["pfx"] = checks.pfx_bytes(result.output)
        if self.options.save_pfx is not None:
            write_atomic(self.options.save_pfx, self._blobs["pfx"], mode=0o600)

    def _export(self, server: Server, step: Step) -> tuple[str, str]:
        self._need_issued(server, step)
        if not self._targets_needing_pfx() and self.options.save_pfx is None:
            return "ok", "no target needs the PFX"
        self._export_pfx()
        return "ok", f"PFX exported ({len(self._blobs['pfx'])} bytes, held in memory)"

    def _copy(self, server: Server, step: Step) -> tuple[str, str]:
        thumb = self._need_issued(server, step)
        if checks.installed_with_key(self.certificates(server), thumb).done:
            return "ok", "the certificate is already imported; no copy needed"
        self._run_commands(server, step)
        self._pfx_written.add(server.name)
        return "changed", f"PFX written to {remote_path(server, pfx_file_name(self.playbook))}"

    def _pfx_on_disk(self, server: Server) -> bool:
        return self._exists(server, remote_path(server, pfx_file_name(self.playbook)))

    def _exists(self, server: Server, path: str) -> bool:
        result = self.call(server, Command("Test-Path", (Param("Path", Text(path)),), shell=Shell.SYSTEM,
                                           changes=False))
        return bool(result.output and result.output[0] is True)

    def _import(self, server: Server, step: Step) -> tuple[str, str]:
        thumb = self._need_issued(server, step)
        decision = checks.installed_with_key(self.certificates(server), thumb)
        if decision.done:
            return "ok", decision.reason
        if server.version == 2007 and server.name not in self._pfx_written:
            copy = next(s for s in self.plan().for_server(server.name) if s.name is StepName.COPY)
            self._run_commands(server, copy)  # this run's PFX, with this run's password
            self._pfx_written.add(server.name)
        try:
            after = self._run_import(server, step, thumb)
            if not after.done:
                raise ExmigError(
                    f"{server.name}: the import did not leave certificate {thumb} with its key: {after.reason}")
        except TransientError:
            raise  # retried: the PFX is still needed (the cleanup step removes it)
        except Exception:
            if server.version == 2007:
                self._discard_pfx(server)  # the run stops here: its cleanup step would never come
            raise
        return "changed", f"certificate {thumb} imported with its private key"

    def _discard_pfx(self, server: Server) -> None:
        """The PFX holds the private key: a failed import must not leave it on the server. When it cannot be
        removed, that is the cleanup step failing: reported and journaled as such, so the next run's cleanup
        (or import) removes it; the import's own error still ends the run."""
        self._pfx_written.discard(server.name)
        path = remote_path(server, pfx_file_name(self.playbook))
        try:
            if self._exists(server, path):
                self.call(server, remove_file(server, path))
        except Exception as exc:  # noqa: BLE001 - reported as the cleanup step's failure below
            key = f"{server.name}:{StepName.CLEANUP.value}"
            message = (f"{server.name}: the PFX with the private key may be left at {path} ({first_line(exc)}); "
                       "the next run removes it, or remove it by hand")
            self.journal.begin(key, StepName.CLEANUP.value, server.name)
            self.journal.finish(key, "failed", message)
            self.events.step_started(server.name, StepName.CLEANUP.value)
            self.events.step_finished(server.name, StepName.CLEANUP.value, "failed", message, 0.0)

    def _cleanup(self, server: Server, step: Step) -> tuple[str, str]:
        # This run wrote the file: no need to ask whether it is there, unless an earlier attempt of this
        # step lost its reply (its Remove-Item may have run: a second one fails on the missing file).
        ask = server.name not in self._pfx_written or getattr(self._local, "maybe_changed", False)
        if ask and not self._pfx_on_disk(server):
            return "ok", "no PFX left in the working folder"
        self._run_commands(server, step)
        self._pfx_written.discard(server.name)
        return "changed", "PFX removed from the working folder"

    def _verify(self, server: Server, step: Step) -> tuple[str, str]:
        thumb = self._need_issued(server, step)
        self._knowledge.pop(server.name, None)  # verify reads fresh
        found = checks.find(self.certificates(server), thumb)
        if found is None:
            raise VerifyFailed(f"{server.name}: certificate {thumb} not found")
        problems = []
        if found.has_private_key is False:
            problems.append("no private key")
        trouble = status.problem(found.status)
        if trouble:
            problems.append(trouble)
        wanted = {s.value for s in server.services_for(self.playbook.certificate)}
        if found.services is not None and not wanted <= found.services:
            problems.append("not enabled for " + ", ".join(sorted(wanted - found.services)))
        if problems:
            raise VerifyFailed(f"{server.name}: certificate {thumb}: " + "; ".join(problems))
        services = "services not reported" if found.services is None else "enabled for " + ", ".join(sorted(wanted))
        caution = status.warning(found.status)
        if caution:
            self.events.note(f"{server.name}: warning: certificate {thumb}: {caution}")
            return "ok", f"certificate {thumb}: private key, {services}; warning: {caution}"
        return "ok", f"certificate {thumb}: private key, status {found.status or 'not reported'}, {services}"
