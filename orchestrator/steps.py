"""What each plan step does, decided without I/O: (the plan's step, the server's facts, what the run did)
-> send these commands, or nothing, and why.

`decide` is pure: the executor (orchestrator/execute.py) gathers the reads a decision asks for
(`Need`), sends a `Send` exactly as it is and records the outcome; `exmig plan`, `run --dry-run` and
`run --check` render the same values. Every command comes from the plan's step (its commands, reads
and branches, built from orchestrator/dialects.py), so what the plan prints is all a step can send.
What a run did (a request made now, a PFX written now, ...) is an explicit `RunState`; `after`
says what it becomes when a `Send` succeeded, for the executor and `--check` alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orchestrator import checks, coexistence, reads, retire, rollback, status, trust
from orchestrator.certs import load_csr
from orchestrator.commands import Command, Shell, Text, Thumbprint
from orchestrator.decision import Noop, Read, Send
from orchestrator.dialects import dialect_for
from orchestrator.errors import ExitCode, ExmigError
from orchestrator.plan import WORKSTATION, BranchName, Step, StepName
from orchestrator.playbook import Playbook, Role, Server, Service
from orchestrator.previous import SERVICES, TLS_KIND
from orchestrator.reads import ServerFacts, TlsRead


class DependencyError(ExmigError):
    """A selected step needs something an earlier (unselected or unfinished) step provides."""

    exit_code = ExitCode.USAGE


class VerifyFailed(ExmigError):
    exit_code = ExitCode.VERIFY_FAILED


# Effects a Send has on the run once it succeeded (RunState.after).
REQUESTED = "requested"  # the source's request was made by this run
IMPORTED = "imported"  # the certificate was imported by this run (complete, import)
ENABLED = "enabled"  # the server's Enable went in the import's pipeline
PFX_WRITTEN = "pfx-written"  # this run's PFX is in the 2007 target's working folder
PFX_REMOVED = "pfx-removed"


@dataclass(frozen=True)
class Need:
    """Read these first, then decide again. `fresh`: read even what is known (the state may be moving)."""

    reads: tuple[Read[Any] | TlsRead, ...]
    reason: str
    fresh: bool = False
    # Settling: the server may still be carrying out a command whose reply was lost; the executor re-reads
    # for a while (bounded) and then decides with Attempt.settled.
    settle: bool = False


@dataclass(frozen=True)
class RunState:
    """What this run knows and has done, as a value: decisions read it, `after` makes the next one."""

    playbook: Playbook
    csr_pem: str | None = None
    thumbprint: str | None = None
    intermediates: tuple[str, ...] = ()  # SHA-1 thumbprints of the CA's intermediates
    chain_top: x509.Certificate | None = None  # the chain's top, whose root the servers must trust
    # Servers (by name) where this run made the request / imported the certificate and saw it with its key
    # (nothing else enabled it since) / enabled it in the import's pipeline / wrote its PFX.
    requested_now: frozenset[str] = frozenset()
    imported_now: frozenset[str] = frozenset()
    enabled_now: frozenset[str] = frozenset()
    pfx_written: frozenset[str] = frozenset()
    previously_done: frozenset[str] = frozenset()  # step keys finished by earlier runs
    interrupted: frozenset[str] = frozenset()  # step keys an earlier run was killed in
    pfx_held: bool = False  # the PFX bytes are in memory
    pfx_wanted: bool = False  # a target still needs the PFX, or --save-pfx asks for it
    enable_pending: frozenset[str] = frozenset()  # servers whose enable step is selected and not done
    backed_up: frozenset[str] = frozenset()  # thumbprints with a backup beside the journal (from any server)
    # The journal's record of what served before this run, per server (orchestrator/previous.py served_before).
    previous: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    finished: frozenset[str] = frozenset()  # step keys the journal holds as done (earlier runs and this one)

    def after(self, server: str, send: Send) -> RunState:
        def add(names: frozenset[str], effect: str) -> frozenset[str]:
            return names | {server} if effect in send.effects else names

        written = add(self.pfx_written, PFX_WRITTEN)
        if PFX_REMOVED in send.effects:
            written = written - {server}
        return replace(self, requested_now=add(self.requested_now, REQUESTED),
                       imported_now=add(self.imported_now, IMPORTED), enabled_now=add(self.enabled_now, ENABLED),
                       pfx_written=written)


@dataclass(frozen=True)
class Attempt:
    """The attempt of one step now: whether an earlier attempt's modifying command lost its reply, and whether
    the re-reading that follows has run out of time."""

    maybe_changed: bool = False
    settled: bool = False


Decision = Noop | Send | Need


# -- batching ---------------------------------------------------------------------------------------


def pipelines(commands: Iterable[Command], batches: frozenset[Shell]) -> tuple[tuple[Command, ...], ...]:
    """Consecutive commands for one shell share a pipeline where that session takes several statements. A kept
    output stays alone: only commands that answer nothing may follow it (Enable). The dialects keep every such
    run safe to go on after a failed command (a later one fails too, or only cleans up)."""
    out: list[list[Command]] = []
    for command in commands:
        last = out[-1] if out else None
        if (last is not None and last[-1].shell is command.shell and command.shell in batches
                and not command.capture and (not any(c.capture for c in last) or command.silent)):
            last.append(command)
        else:
            out.append([command])
    return tuple(tuple(p) for p in out)


def _send(step: Step, commands: Iterable[Command], facts: ServerFacts, reason: str,
          effects: Iterable[str] = (), outcome: str = "changed") -> Send:
    return Send(pipelines(commands, facts.batches), reason, frozenset(effects), outcome)


# -- the steps --------------------------------------------------------------------------------------


def _certs(facts: ServerFacts) -> list[checks.CertInfo]:
    assert facts.certificates is not None
    return list(facts.certificates)


def _need_certificates(server: Server, why: str, fresh: bool = False) -> Need:
    return Need((reads.certificates(server),), why, fresh=fresh)


def _csr_key(csr_pem: str) -> bytes:
    return load_csr(csr_pem).public_key().public_bytes(serialization.Encoding.DER,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)


def _request(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    if facts.certificates is None:
        return _need_certificates(server, "whether the request or its certificate exists")
    certs = _certs(facts)
    if run.thumbprint and checks.installed_with_key(certs, run.thumbprint).done:
        return Noop("the request is already completed on the source")
    spec = run.playbook.certificate
    match = checks.matching_requests(certs, spec.subject.CN, spec.domains)
    lost = attempt.maybe_changed or step.key in run.interrupted
    if not match.all and not run.csr_pem and lost and not attempt.settled:
        # The server may still be generating the key (the command runs on after the connection broke):
        # another request now would be a duplicate.
        return Need((reads.certificates(server),), "the lost request may still be landing", fresh=True, settle=True)
    if run.csr_pem:
        if run.thumbprint is not None or any(p.public_key_der == _csr_key(run.csr_pem) for p in match.all):
            return Noop("the pending request exists; the CSR is in the journal")
    elif match.all:
        if len(match.all) > 1 or match.ambiguous:
            thumbs = ", ".join(p.thumbprint for p in match.all)
            what = (f"{len(match.all)} pending requests for {spec.subject.CN}" if len(match.all) > 1 else
                    f"a pending request for {spec.subject.CN} with other names than certificate.domains")
            raise ExmigError(
                f"{server.name}: {what} ({thumbs}) and none is known to this journal; remove the stray one "
                "(Remove-ExchangeCertificate -Thumbprint ...) and run again"
            )
        pending = match.mine[0]
        # A request exists but its CSR was lost (the reply never arrived): export it instead of a second one.
        recover = dialect_for(server).export_request(server, Thumbprint(pending.thumbprint))
        return _send(step, (recover,), facts, f"adopted the pending request {pending.thumbprint}; its CSR was "
                     "exported again", outcome="ok")
    return _send(step, step.commands, facts, "certificate request created; the CSR is kept in the journal",
                 effects=(REQUESTED,))


def _install_chain(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    if facts.stores is None:
        return Need((reads.stores(),), "which intermediates and roots the server holds")
    if run.thumbprint is None:
        # Only `run --check` gets here before the CA has answered: the chain it will send is not known yet.
        return _send(step, step.commands, facts, "the CA's chain, once known, unless the stores hold it")
    decision = checks.ca_store_has(facts.stores.ca, run.intermediates)
    if decision.done and run.playbook.issuer.install_root and run.chain_top is not None \
            and not trust.trusted(facts.stores.root, run.chain_top):
        decision = checks.Decision(False, "the CA's root is not in LocalMachine\\Root")
    if not decision.done:
        root = run.playbook.issuer.install_root
        return _send(step, step.commands, facts,
                     "the CA's root added to LocalMachine\\Root, intermediate(s) to LocalMachine\\CA" if root
                     else "intermediate certificate(s) added to LocalMachine\\CA")
    # An earlier attempt whose answer was lost after certutil ran leaves its .cer file behind.
    leftovers = step.branch(BranchName.LEFTOVERS)
    removes = [c for c in leftovers if c.name == "Remove-Item"]
    unknown = [reads.path_exists(_path(c)) for c in removes if _path(c) not in facts.paths]
    if unknown:
        return Need(tuple(unknown), "whether an interrupted attempt left files", fresh=True)
    found = [c for c in removes if facts.paths[_path(c)]]
    if found:
        return _send(step, found, facts, f"{decision.reason}; removed the intermediate file an interrupted "
                     "attempt left")
    return Noop(decision.reason)


def _path(command: Command) -> str:
    value = command.param("Path")
    assert isinstance(value, Text)
    return value.value


def _with_enable(step: Step, server: Server, facts: ServerFacts, run: RunState) -> tuple[Command, ...]:
    """This server's Enable, in the import's pipeline where the session takes several statements (one request
    fewer), when its enable step is still to do: an Enable that finds no certificate (the import failed) fails
    too, and changes nothing."""
    if Shell.EXCHANGE in facts.batches and server.name in run.enable_pending:
        return step.branch(BranchName.WITH_ENABLE)
    return ()


def _import_send(step: Step, server: Server, facts: ServerFacts, run: RunState, reason: str,
                 first: tuple[Command, ...] = (), effects: tuple[str, ...] = ()) -> Send:
    enable = _with_enable(step, server, facts, run)
    return _send(step, (*first, *step.commands, *enable), facts, reason,
                 effects=(*effects, IMPORTED, *((ENABLED,) if enable else ())))


def _complete(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    thumb = run.thumbprint
    done = f"request completed: certificate {thumb} with its private key"
    if server.name in run.requested_now and not attempt.maybe_changed:
        # This run made the request: the CA's certificate for it cannot be there yet.
        return _import_send(step, server, facts, run, done)
    if facts.certificates is None:
        return _need_certificates(server, "whether the request is completed")
    certs = _certs(facts)
    decision = checks.installed_with_key(certs, thumb)
    if decision.done:
        return Noop(decision.reason)
    found = checks.find(certs, thumb)
    if found is not None and found.has_private_key is False:
        raise ExmigError(
            f"{server.name} holds certificate {thumb} without its private key (it was imported where the "
            "request was not made); remove it with Remove-ExchangeCertificate and run again"
        )
    return _import_send(step, server, facts, run, done)


def _enable(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    services = server.services_for(run.playbook.certificate)
    enabled = "enabled for " + ", ".join(s.value for s in services)
    if server.name in run.enabled_now:
        return Noop(enabled + " (in the import's pipeline)", changed_by="import")
    if server.name in run.imported_now:
        # Imported a moment ago by this run: it is there, with no services yet.
        return _send(step, step.commands, facts, enabled)
    if facts.certificates is None:
        return _need_certificates(server, "which services the certificate serves")
    certs = _certs(facts)
    if checks.find(certs, run.thumbprint) is None and run.thumbprint is not None:
        earlier = "complete" if server.name == run.playbook.source.name else "import"
        raise DependencyError(
            f"enable on {server.name} needs certificate {run.thumbprint} on that server: run the {earlier} step first"
        )
    decision = checks.services_enabled(certs, run.thumbprint, services, step.key in run.previously_done)
    if decision.done:
        return Noop(decision.reason)
    return _send(step, step.commands, facts, enabled)  # Enable answers nothing; verify reads the result


def _export(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    if not run.pfx_wanted:
        return Noop("no target needs the PFX")
    if server.name not in run.imported_now:
        if facts.certificates is None:
            return _need_certificates(server, "whether the source holds the completed certificate")
        if run.thumbprint is not None and not checks.installed_with_key(_certs(facts), run.thumbprint).done:
            raise DependencyError(
                f"the PFX must be exported from {server.name}, which does not hold the completed certificate yet; "
                "run the request, issue and complete steps first"
            )
    return _send(step, step.commands, facts, "PFX exported (held in memory)", outcome="ok")


def _copy(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    if facts.certificates is None:
        return _need_certificates(server, "whether the certificate is imported already")
    if checks.installed_with_key(_certs(facts), run.thumbprint).done:
        return Noop("the certificate is already imported; no copy needed")
    path = next((_path(c) for c in step.commands if c.name == "Set-Content"), "")
    return _send(step, step.commands, facts, f"PFX written to {path}", effects=(PFX_WRITTEN,))


def _import(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    if facts.certificates is None:
        return _need_certificates(server, "whether the certificate is imported already")
    decision = checks.installed_with_key(_certs(facts), run.thumbprint)
    if decision.done:
        return Noop(decision.reason)
    done = f"certificate {run.thumbprint} imported with its private key"
    copy = step.branch(BranchName.COPY)
    if copy and server.name not in run.pfx_written:
        # A file an earlier run left carries that run's password: this run's PFX goes first.
        return _import_send(step, server, facts, run, done, first=copy, effects=(PFX_WRITTEN,))
    return _import_send(step, server, facts, run, done)


def discard(step: Step, facts: ServerFacts) -> Decision:
    """After a failed import on 2007: the PFX holds the private key, so it must not stay (the run stops there
    and its cleanup step would never come)."""
    commands = step.branch(BranchName.DISCARD)
    remove = [c for c in commands if c.name == "Remove-Item"]
    if not remove:
        return Noop("no PFX is written for this server")
    path = _path(remove[0])
    if path not in facts.paths:
        return Need((reads.path_exists(path),), "whether the PFX is on the server", fresh=True)
    if not facts.paths[path]:
        return Noop("no PFX left in the working folder")
    return _send(step, remove, facts, "PFX removed after the failed import", effects=(PFX_REMOVED,))


def _cleanup(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    # This run wrote the file: no need to ask whether it is there, unless an earlier attempt of this step lost
    # its reply (its Remove-Item may have run: a second one fails on the missing file).
    ask = server.name not in run.pfx_written or attempt.maybe_changed
    path = _path(step.commands[0])
    if ask:
        if path not in facts.paths:
            return Need((reads.path_exists(path),), "whether the PFX is on the server", fresh=True)
        if not facts.paths[path]:
            return Noop("no PFX left in the working folder")
    return _send(step, step.commands, facts, "PFX removed from the working folder", effects=(PFX_REMOVED,))


def _verify(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    thumb = run.thumbprint
    if reads.CERTIFICATES not in facts.fresh:
        return _need_certificates(server, "the certificate as the server holds it now", fresh=True)
    found = checks.find(_certs(facts), thumb)
    if found is None:
        raise VerifyFailed(f"{server.name}: certificate {thumb} not found")
    problems = status.certificate_problems(found.has_private_key, found.status)
    wanted = {s.value for s in server.services_for(run.playbook.certificate)}
    if found.services is not None and not wanted <= found.services:
        problems.append("not enabled for " + ", ".join(sorted(wanted - found.services)))
    if problems:
        raise VerifyFailed(f"{server.name}: certificate {thumb}: " + "; ".join(problems))
    services = "services not reported" if found.services is None else "enabled for " + ", ".join(sorted(wanted))
    caution = status.warning(found.status)
    if caution:
        return Noop(f"certificate {thumb}: private key, {services}; warning: {caution}",
                    note=f"{server.name}: warning: certificate {thumb}: {caution}")
    return Noop(f"certificate {thumb}: private key, status {found.status or 'not reported'}, {services}")


def _coexistence(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    spec = run.playbook.coexistence
    assert spec is not None
    declared = [coexistence.vdir_read(server.name, service) for service in spec.service_names]
    unknown = tuple(r for r in declared if not facts.known(r.name))
    if unknown:
        return Need(unknown, "the virtual directories' URLs now")
    planned = coexistence.decide(server.name, server.version, server.role is Role.SOURCE,
                                 {r.name.removeprefix("coexistence."): facts.extra[r.name] for r in declared}, spec)
    decision = planned.decision
    if isinstance(decision, Send):
        return replace(decision, record=planned.changes)
    return decision


def _services(server: Server, run: RunState) -> list[Service]:
    """The playbook's services for this server that a previous certificate is recorded for (not UM)."""
    wanted = set(server.services_for(run.playbook.certificate))
    return [s for s in SERVICES if s in wanted]


def _default_smtp(server: Server, run: RunState) -> str | None:
    """This run's Enable -Services SMTP -Force made the new certificate the default SMTP certificate (retire.py):
    known once this server's enable step is done."""
    enabled = f"{server.name}:{StepName.ENABLE.value}" in run.finished or server.name in run.enabled_now
    if run.thumbprint and enabled and Service.SMTP in _services(server, run):
        return run.thumbprint
    return None


def _need_now(server: Server, facts: ServerFacts, why: str) -> Need | None:
    if reads.HELD in facts.fresh and reads.PRESENTED in facts.fresh:
        return None
    return Need((reads.held(server), reads.presented()), why, fresh=True)


def _retire(step: Step, server: Server, facts: ServerFacts, run: RunState, attempt: Attempt) -> Decision:
    before = run.previous.get(server.name)
    if before is None:
        return Noop("nothing is recorded as serving before this run (a run's preflight records it before its first "
                    "change)")
    if run.thumbprint is None:
        # Only `run --check` gets here before the CA has answered.
        return Noop("the certificate that served before is retired once the new one serves")
    need = _need_now(server, facts, "the certificates and what the TLS endpoints present now")
    if need is not None:
        return need
    assert facts.held is not None and facts.presented is not None
    # Verified from outside first: every endpoint of this server's services hands clients the new certificate.
    new = run.thumbprint.upper()
    unverified = [f"{TLS_KIND[s]} presents {facts.presented.get(TLS_KIND[s]) or 'nothing (no answer)'}"
                  for s in _services(server, run) if (facts.presented.get(TLS_KIND[s]) or "").upper() != new]
    if unverified:
        return Noop(f"nothing retired: the new certificate {new} is not verified over TLS ({'; '.join(unverified)})")
    # One command per request: each backup's bytes are written to disk before the next request (the removal).
    return retire.retire(server, facts.held, before, run.thumbprint, facts.presented,
                         retire.RetireOptions.from_playbook(run.playbook), _default_smtp(server, run),
                         _services(server, run), run.backed_up)


def rollback_decision(server: Server, facts: ServerFacts, run: RunState, backups: Mapping[str, Path]) -> Decision:
    """Re-enable what served before (orchestrator/rollback.py) over fresh reads; `backups`: thumbprint -> the backup
    PFX on the workstation, for retired certificates. The commands are the verify step's rollback branch (and the
    backup's import)."""
    before = run.previous.get(server.name)
    if before is None:
        raise rollback.RollbackImpossible(
            f"{server.name}: the journal holds no record of what served before (a run records it before its first "
            "change); enable the old certificate by hand (Enable-ExchangeCertificate -Thumbprint ... -Services ...)")
    need = _need_now(server, facts, "the certificates and what the TLS endpoints present now")
    if need is not None:
        return need
    assert facts.held is not None and facts.presented is not None
    return rollback.rollback(server, facts.held, before, facts.presented, backups, None, _services(server, run))


_DECIDE = {
    StepName.REQUEST: _request,
    StepName.INSTALL_CHAIN: _install_chain,
    StepName.COMPLETE: _complete,
    StepName.ENABLE: _enable,
    StepName.EXPORT: _export,
    StepName.COPY: _copy,
    StepName.IMPORT: _import,
    StepName.CLEANUP: _cleanup,
    StepName.COEXISTENCE: _coexistence,
    StepName.VERIFY: _verify,
    StepName.RETIRE: _retire,
}

# Steps that need the CA's certificate (its thumbprint) before a run can send anything for them.
NEEDS_ISSUED = frozenset(_DECIDE) - {StepName.REQUEST}


def decide(step: Step, facts: ServerFacts, run: RunState, attempt: Attempt = Attempt()) -> Decision:
    """The step's decision for its server. Raises ExmigError for a state exmig must not act on."""
    assert step.server != WORKSTATION, "the issue step runs on the workstation (orchestrator/workstation.py)"
    server = run.playbook.server(step.server)
    return _DECIDE[step.name](step, server, facts, run, attempt)


def imported(certificates: Iterable[checks.CertInfo], thumb: str | None) -> checks.Decision:
    """Whether an import left the certificate with its key (from Import's own answer, or a read)."""
    return checks.installed_with_key(list(certificates), thumb)
