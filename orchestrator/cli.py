"""The `exmig` command line (typer). Commands import what they need lazily: start-up stays fast."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.errors import ExitCode, ExmigError, UsageError

if TYPE_CHECKING:  # imported lazily at run time: start-up stays fast
    from orchestrator.events import Events
    from orchestrator.journal import Journal
    from orchestrator.lab.costs import LabCosts
    from orchestrator.plan import Plan
    from orchestrator.playbook import LoadedPlaybook, Server
    from orchestrator.report.model import VerifyMatrix
    from orchestrator.transport.base import ServerSession
    from orchestrator.verify.report import Finding

app = typer.Typer(
    name="exmig",
    help="Move an Exchange certificate from Exchange 2010 to Exchange 2007/2010 servers over WinRM.",
    no_args_is_help=True,
    # Plain (click) help: typer's rich help prints a `<bool>` type after every flag, and rich costs start-up.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
lab_app = typer.Typer(help="The rehearsal lab: emulated Exchange servers on 127.0.0.1.", no_args_is_help=True,
                      rich_markup_mode=None)
app.add_typer(lab_app, name="lab")


def _example(*lines: str) -> str:
    """A command's epilog: its most useful invocation(s), kept verbatim by click's \\b marker."""
    return "\b\n" + ("Examples:" if len(lines) > 1 else "Example:") + "\n" + "\n".join(f"  {line}" for line in lines)


def versions_line() -> str:
    """exmig's version and those of the WinRM clients and PSRP library it runs with (installed metadata:
    no import of the packages themselves, so --version stays as fast as --help)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"exmig {of('exmig')} (pypsrp {of('pypsrp')}, pywinrm {of('pywinrm')}, psrpcore {of('psrpcore')}; "
            f"Python {platform.python_version()})\n")


def _print_versions(value: bool) -> None:
    if value:
        _echo(versions_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_versions,
                                          help="Print the versions of exmig, pypsrp, pywinrm and psrpcore.")]
    = False,
) -> None:
    pass


class PlanFormat(str, Enum):
    text = "text"
    json = "json"
    ps1 = "ps1"


class WindowsPowerShell(str, Enum):
    """The lab hosts' Windows PowerShell (LabSettings.windows_powershell)."""

    v2 = "2.0"
    v3 = "3.0"
    v4 = "4.0"
    v5 = "5.1"


class RehearseAuth(str, Enum):
    """How a rehearsal authenticates: as the playbook says (Kerberos with the lab's realm), or NTLM."""

    playbook = "playbook"
    ntlm = "ntlm"


class CostProfile(str, Enum):
    """The lab servers' cost profile (orchestrator/lab/costs.py)."""

    none = "none"
    realistic = "realistic"


CostsOpt = Annotated[CostProfile, typer.Option(
    "--costs", help="none: the lab answers at once; realistic: sessions, processes and cmdlets take the time real "
                    "Exchange servers take (seconds each; see orchestrator/lab/costs.py).")]
CostScaleOpt = Annotated[float, typer.Option(
    "--cost-scale", min=0.0, help="Multiply every cost by this (0.01: the realistic profile a hundred times faster).")]


def _lab_costs(profile: CostProfile, scale: float) -> LabCosts:
    from dataclasses import replace

    from orchestrator.lab.costs import PROFILES

    chosen = PROFILES[profile.value]
    return chosen if profile is CostProfile.none else replace(chosen, scale=scale)


WindowsPowerShellOpt = Annotated[WindowsPowerShell, typer.Option(
    "--windows-powershell",
    help="The lab servers' Windows PowerShell: 2.0 as Windows 2008 R2 ships it, or a later WMF (3.0+ lets "
         "exmig send several commands per request).")]

UntrustedRootOpt = Annotated[bool, typer.Option(
    "--untrusted-root", help="The lab CA's root is not in the servers' LocalMachine\\Root.")]
RawDataOnlyOpt = Annotated[bool, typer.Option(
    "--rawdata-only", help="Certificate objects arrive with RawData only (Exchange types not on the client).")]
NoServicesOpt = Annotated[bool, typer.Option("--no-services", help="Certificate objects arrive without Services.")]
RevocationOfflineOpt = Annotated[bool, typer.Option(
    "--revocation-offline", help="The servers cannot reach the CA's revocation list (RevocationCheckFailure).")]
PreviousCertificateOpt = Annotated[bool, typer.Option(
    "--previous-certificate", help="The servers start with a previous commercial certificate (the lab CA's, for the "
    "playbook's names, expiring in 20 days) serving IIS, SMTP, POP and IMAP.")]
KeepsIisBindingOpt = Annotated[list[str] | None, typer.Option(
    "--enable-keeps-iis-binding", metavar="NAME", help="Fault: this server's Enable-ExchangeCertificate answers "
    "success without changing the IIS binding (repeatable).")]

PlaybookArg = Annotated[Path, typer.Argument(help="The migration playbook (YAML).", show_default=False,
                                             metavar="PLAYBOOK")]
ServerOpt = Annotated[list[str] | None, typer.Option("--server", metavar="NAME",
                                                     help="Only this server (repeatable).")]
StepOpt = Annotated[list[str] | None, typer.Option("--step", metavar="STEP",
                                                   help="Only this step (repeatable); see `exmig steps`.")]
CertOpt = Annotated[list[Path] | None, typer.Option("--certificate", metavar="FILE",
                                                    help="The CA's certificate (or zip/p7b bundle).")]
ChainOpt = Annotated[list[Path] | None, typer.Option("--chain", metavar="FILE",
                                                     help="The CA's intermediate certificate(s).")]


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="On stderr: each WinRM request per server "
                                          "(WSMan action, HTTP status, ms) and each retry with its cause.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="As --verbose, plus the clients' own logs (pypsrp, pywinrm, "
                                        "pyspnego), with secrets, PFX bytes and key material redacted.")]


def _troubleshooting(verbose: bool, debug: bool) -> None:
    from orchestrator.troubleshoot import configure

    configure(verbose, debug)


def _echo(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _check_selection(loaded: LoadedPlaybook, servers: list[str] | None, steps: list[str] | None) -> None:
    from orchestrator.plan import StepName

    known = {s.name.lower() for s in loaded.playbook.servers} | {"workstation"}
    for name in servers or []:
        if name.lower() not in known:
            raise UsageError(
                f"--server {name}: not a server of {loaded.path.name}; use one of "
                + ", ".join(s.name for s in loaded.playbook.servers)
            )
    valid = [s.value for s in StepName]
    for name in steps or []:
        if name not in valid:
            raise UsageError(f"--step {name}: not a step; use one of {', '.join(valid)} (see `exmig steps`)")


def _plan_output(playbook: Path, servers: list[str] | None, steps: list[str] | None, fmt: PlanFormat,
                 certificate: list[Path] | None, chain: list[Path] | None) -> str:
    from orchestrator.playbook import load_playbook
    from orchestrator.render.plan_output import render_json, render_ps1, render_text

    loaded = load_playbook(playbook)
    plan = _built_plan(loaded, servers, steps, certificate, chain)
    if fmt is PlanFormat.json:
        return render_json(plan, loaded.playbook)
    if fmt is PlanFormat.ps1:
        scripts = render_ps1(plan, loaded.playbook)
        return "\n".join(f"# ===== {name}.ps1 =====\n{text}" for name, text in scripts.items())
    return render_text(plan, loaded.playbook)


def _built_plan(loaded: LoadedPlaybook, servers: list[str] | None, steps: list[str] | None,
                certificate: list[Path] | None, chain: list[Path] | None) -> Plan:
    """The plan `exmig plan` prints (and `exmig report` shows), from the playbook and the CA's files."""
    from orchestrator.plan import Facts, build_plan

    _check_selection(loaded, servers, steps)
    facts = Facts()
    if certificate or chain or loaded.playbook.issuer.type == "files":
        # Only the CA's files need X.509 parsing: without them cryptography stays out of start-up (~60 ms).
        from orchestrator.facts import local_facts

        facts = local_facts(loaded, certificate or [], chain or [])
    if loaded.playbook.issuer.install_root:
        from dataclasses import replace

        from orchestrator.roots import chain_top, root_fact

        files = [*(certificate or []), *(chain or [])]
        facts = replace(facts, root=root_fact(loaded, chain_top(loaded, None, files), files))
    return build_plan(loaded.playbook, facts).select(servers, steps)


@app.command(epilog=_example("exmig validate playbooks/mitserv.yml"))
def validate(playbook: PlaybookArg) -> None:
    """Check a playbook: the first problem as file:line: field.

    Checks what the servers would refuse too (names, key size, services) and that the files it names exist."""
    from orchestrator.playbook import load_playbook

    loaded = load_playbook(playbook)
    p = loaded.playbook
    _echo(f"{playbook}: ok ({len(p.servers)} servers: source {p.source.name}, "
          f"targets {', '.join(t.name for t in p.targets)}; issuer {p.issuer.type})\n")


@app.command(epilog=_example("exmig steps"))
def steps() -> None:
    """List the step names a plan is made of, in order."""
    from orchestrator.plan import STEP_DESCRIPTIONS

    width = max(len(s.value) for s in STEP_DESCRIPTIONS)
    for step, text in STEP_DESCRIPTIONS.items():
        _echo(f"{step.value:<{width}}  {text}\n")


@app.command(epilog=_example("exmig plan playbooks/mitserv.yml --server EX2007 --format ps1"))
def plan(
    playbook: PlaybookArg,
    server: ServerOpt = None,
    step: StepOpt = None,
    format: Annotated[PlanFormat, typer.Option("--format", help="text, json, or ps1 (one script per server).")]
    = PlanFormat.text,
    certificate: CertOpt = None,
    chain: ChainOpt = None,
) -> None:
    """Print every command, per server and in order, as PowerShell.

    Nothing is sent: the plan as the PowerShell it amounts to (--format ps1: one script per server)."""
    _echo(_plan_output(playbook, server, step, format, certificate, chain))


@app.command(epilog=_example("exmig run playbooks/mitserv.yml --dry-run",
                             "exmig run playbooks/mitserv.yml --certificate ca-delivery.zip"))
def run(
    playbook: PlaybookArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Connect and read only; print what a run would send now "
                                        "per server and step, or why nothing.")] = False,
    server: ServerOpt = None,
    step: StepOpt = None,
    from_step: Annotated[str | None, typer.Option("--from", help="Start at this step (plan order).")] = None,
    format: Annotated[PlanFormat, typer.Option("--format", help="Dry-run and --check output format.")]
    = PlanFormat.text,
    certificate: CertOpt = None,
    chain: ChainOpt = None,
    state: Annotated[Path | None, typer.Option("--state", help="Journal file (default .exmig/ beside the playbook).")]
    = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing servers.")] = False,
    save_pfx: Annotated[Path | None, typer.Option("--save-pfx", help="Keep a backup of the PFX (mode 0600).")]
    = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Do not end with `exmig verify`.")] = False,
    # The default is RunOptions.parallel's, kept literal here: importing execute would slow start-up.
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64, help="Targets deployed at once.")] = 32,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run the migration against the servers.

    With --dry-run: print every command a run can send. With --check: connect, read, and print exactly what
    a run would send now (nothing is changed). With a manual issuer the first run writes the CSR and exits 3;
    run again with the CA's files (--certificate)."""
    _troubleshooting(verbose, debug)
    if dry_run:
        _echo(_plan_output(playbook, server, step, format, certificate, chain))
        return
    from orchestrator.playbook import load_playbook

    loaded = load_playbook(playbook)
    _check_selection(loaded, server, step)
    if from_step is not None:
        _check_selection(loaded, None, [from_step])
    if check:
        _echo(_check(loaded, state, server, step, from_step, [*(certificate or []), *(chain or [])], format))
        return
    if save_pfx is not None:
        from orchestrator.execute import RunOptions

        RunOptions(save_pfx=save_pfx).check(loaded)  # before the question (and _execute checks again)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("this run changes servers; add --yes to run without a terminal")
        if not typer.confirm(f"Run {playbook} against {', '.join(s.name for s in loaded.playbook.servers)}?"):
            raise typer.Abort()
    then_verify = not no_verify and not step and not from_step
    code = _execute(loaded, state, json_output, server, step, from_step, certificate or [], chain or [], save_pfx,
                    parallel, verify_after=_verify_after(loaded, state, json_output, server, None) if then_verify
                    else None)
    if code:
        raise typer.Exit(code)


@app.command(epilog=_example("exmig rollback playbooks/mitserv.yml",
                             "exmig rollback playbooks/mitserv.yml --server EX2007 --yes --json"))
def rollback(
    playbook: PlaybookArg,
    server: ServerOpt = None,
    state: Annotated[Path | None, typer.Option("--state", help="Journal file (default .exmig/ beside the playbook).")]
    = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing servers.")] = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Put back the certificate that served before the migration.

    Per server and service (IIS, SMTP, POP, IMAP) the certificate the journal records as serving before the first
    run is enabled again (a retired one is imported from its backup first; without a backup exmig says so and
    changes nothing there), then each TLS endpoint is checked to present it again."""
    _troubleshooting(verbose, debug)
    from orchestrator import journal as journal_mod
    from orchestrator.playbook import load_playbook

    loaded = load_playbook(playbook)
    _check_selection(loaded, server, None)
    journal_path = state or journal_mod.default_path(loaded.path)
    journal = journal_mod.load(journal_path, loaded.path)
    selected = _selected_servers(loaded, server)
    unrecorded = [s.name for s in selected if s.name not in journal.previous]
    if unrecorded:
        raise UsageError(f"{journal_path}: no record of what served {', '.join(unrecorded)} before (a run records it "
                         "before its first change); nothing to roll back to there")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("a rollback changes servers; add --yes to run without a terminal")
        if not typer.confirm(f"Roll back {', '.join(s.name for s in selected)} to the certificates that served "
                             "before?"):
            raise typer.Abort()
    code = _rollback(loaded, journal, json_output, selected)
    if code:
        raise typer.Exit(code)


def _events(json_output: bool) -> tuple[Events, Callable[[str], None]]:
    """The run's event display, and how a warning reaches the admin: in --json mode stdout carries only events,
    so warnings go to stderr."""
    from orchestrator.events import ConsoleEvents, JsonEvents

    events: Events = JsonEvents() if json_output else ConsoleEvents()

    def warn(text: str) -> None:
        if json_output:
            sys.stderr.write(text + "\n")
        else:
            events.note(text)

    return events, warn


def _rollback(loaded: LoadedPlaybook, journal: Journal, json_output: bool, selected: list[Server]) -> int:
    from orchestrator.backups import backed_up
    from orchestrator.connect import session_factory
    from orchestrator.execute import Executor, RunOptions
    from orchestrator.secret_keys import backup_password_source
    from orchestrator.secrets_store import SecretStore

    secrets = SecretStore(loaded.playbook)
    # A retired certificate comes back from its backup (its own server's, or its source's of the same certificate).
    kept = backed_up(journal.path)
    restores = any(thumb.upper() in kept
                   for s in selected for thumb in (journal.previous[s.name].get("services") or {}).values() if thumb)
    secrets.resolve(selected, False, backup_password=restores and backup_password_source(loaded.playbook) is not None)
    events, warn = _events(json_output)

    options = RunOptions(servers=[s.name for s in selected])
    executor = Executor(loaded, journal, session_factory(loaded, secrets, warn), secrets, events, options)
    try:
        executor.rollback(selected)
    finally:
        events.finish()
    return int(ExitCode.OK)


def _selected_servers(loaded: LoadedPlaybook, servers: list[str] | None) -> list[Server]:
    wanted = {n.lower() for n in servers or []}
    return [s for s in loaded.playbook.servers if not wanted or s.name.lower() in wanted]


def _needs_pfx_password(steps: list[str] | None, from_step: str | None) -> bool:
    from orchestrator.plan import StepName

    users = {StepName.EXPORT.value, StepName.COPY.value, StepName.IMPORT.value}
    if steps:
        return bool(users & set(steps))
    if from_step is not None:
        names = [s.value for s in StepName]
        return any(names.index(u) >= names.index(from_step) for u in users if u in names)
    return True


def _needs_backup_password(loaded: LoadedPlaybook, steps: list[str] | None, from_step: str | None) -> bool:
    """The retire step backs up each certificate it removes (or rollback_on_failure may restore one)."""
    from orchestrator.secret_keys import backup_password_source

    playbook = loaded.playbook
    if backup_password_source(playbook) is None or not (playbook.retire_previous or playbook.rollback_on_failure):
        return False
    return not steps or bool({"retire", "verify"} & set(steps))


def _verify_after(loaded: LoadedPlaybook, state: Path | None, json_output: bool, servers: list[str] | None,
                  ca_file: Path | None) -> Callable[..., int]:
    """`exmig verify` at the end of a run, over the run's own sessions and secrets."""
    def after(sessions: Callable[[Server], ServerSession]) -> int:
        return _verify(loaded, state, json_output, servers, 30, ca_file, 10.0, sessions=sessions)

    return after


def _execute(loaded: LoadedPlaybook, state: Path | None, json_output: bool, servers: list[str] | None,
             steps: list[str] | None, from_step: str | None, certificate: list[Path], chain: list[Path],
             save_pfx: Path | None, parallel: int | None = None,
             verify_after: Callable[[Callable[[Server], ServerSession]], int] | None = None,
             interactive: bool | None = None) -> int:
    from orchestrator import journal as journal_mod
    from orchestrator.connect import session_factory
    from orchestrator.execute import Executor, RunOptions
    from orchestrator.issuance import WaitingForCA
    from orchestrator.secrets_store import SecretStore

    journal = journal_mod.load(state or journal_mod.default_path(loaded.path), loaded.path)
    options = RunOptions(servers=servers, steps=steps, from_step=from_step,
                         certificate_files=[*certificate, *chain], save_pfx=save_pfx)
    options.check(loaded)
    secrets = SecretStore(loaded.playbook, interactive=interactive)
    # Every prompt now, on this thread, before the first connection and before the live display starts.
    needs_pfx = _needs_pfx_password(steps, from_step)
    involved = _selected_servers(loaded, servers)
    if needs_pfx and loaded.playbook.source not in involved:
        involved.append(loaded.playbook.source)  # the PFX is exported there, whichever target imports it
    secrets.resolve(involved, needs_pfx, backup_password=_needs_backup_password(loaded, steps, from_step))
    events, warn = _events(json_output)

    if parallel is not None:
        options.parallel = parallel
    executor = Executor(loaded, journal, session_factory(loaded, secrets, warn), secrets, events, options)
    try:
        try:
            executor.run(close=verify_after is None)
        except WaitingForCA as exc:
            events.finish()
            sys.stderr.write(f"exmig: {exc}\n")
            return int(exc.exit_code)
        except BaseException:
            events.finish()
            raise
        events.finish()
        if verify_after is not None:
            return verify_after(executor.session)
        return int(ExitCode.OK)
    finally:
        executor.close()


@app.command(epilog=_example("exmig renew playbooks/mitserv-acme.yml", "exmig renew playbooks/mitserv-acme.yml --days 45"))
def renew(
    playbook: PlaybookArg,
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="Renew when a certificate presented is valid "
                                      "for this many days or fewer.")] = 30,
    state: Annotated[Path | None, typer.Option("--state", help="Journal file (default .exmig/ beside the playbook).")]
    = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="Roots the renewed certificate is verified "
                                                 "against (default: the system's).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, max=300, help="Seconds per TLS probe.")] = 10.0,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Renew the certificate when it is about to expire.

    For cron or a systemd timer. Reads what every server presents (verify's TLS view). When every certificate is valid for more than --days
    days it does nothing and says so (exit 0). Otherwise it runs the whole migration with a new request,
    unattended (no prompt: secrets from the environment), retiring the previous certificate as the playbook
    says, and ends with verify. Exit codes: 0 renewed or nothing to do, 1 failed, 2 usage, 3 waiting for a
    manual CA, 4 verification failed."""
    _troubleshooting(verbose, debug)
    from orchestrator import journal as journal_mod
    from orchestrator import renew as renewal
    from orchestrator.playbook import load_playbook

    loaded = load_playbook(playbook)
    seen = renewal.presented(loaded.playbook, loaded.playbook.servers, timeout)
    decision = renewal.decide(seen, days)
    if not decision.renew:
        _echo(decision.reason + "\n")
        return
    journal_path = state or journal_mod.default_path(loaded.path)
    kept = renewal.set_aside(journal_path)
    sys.stderr.write(f"exmig: renewing: {decision.reason}" + (f"; the last run's journal is kept as {kept}"
                                                              if kept else "") + "\n")
    code = _execute(loaded, journal_path, json_output, None, None, None, [], [], None,
                    verify_after=_verify_after(loaded, journal_path, json_output, None, ca_file), interactive=False)
    if code:
        raise typer.Exit(code)


def _check(loaded: LoadedPlaybook, state: Path | None, servers: list[str] | None, steps: list[str] | None,
           from_step: str | None, files: list[Path], fmt: PlanFormat) -> str:
    """`run --check`: the run's own decisions over what the servers hold now, with only the reads sent."""
    from orchestrator import journal as journal_mod
    from orchestrator.connect import session_factory
    from orchestrator.events import QuietEvents
    from orchestrator.execute import Executor, RunOptions
    from orchestrator.render.check_output import render_check_json, render_check_ps1, render_check_text
    from orchestrator.secrets_store import SecretStore

    journal = journal_mod.load(state or journal_mod.default_path(loaded.path), loaded.path)
    options = RunOptions(servers=servers, steps=steps, from_step=from_step, certificate_files=files)
    secrets = SecretStore(loaded.playbook)
    involved = _selected_servers(loaded, servers)
    if loaded.playbook.source not in involved:
        involved.append(loaded.playbook.source)  # a target's import reads the source's export decision
    secrets.resolve(involved, False)  # reads carry no PFX password

    def warn(text: str) -> None:
        sys.stderr.write(text + "\n")

    executor = Executor(loaded, journal, session_factory(loaded, secrets, warn), secrets, QuietEvents(), options,
                        check=True)
    try:
        executor.run()
    finally:
        executor.close()
    if fmt is PlanFormat.json:
        return render_check_json(executor.planned, loaded.playbook, executor.names, executor.name_problems)
    if fmt is PlanFormat.ps1:
        return render_check_ps1(executor.planned, loaded.playbook)
    return render_check_text(executor.planned, loaded.playbook, executor.names, executor.name_problems)


def _verify(loaded: LoadedPlaybook, state: Path | None, json_output: bool, servers: list[str] | None, warn_days: int,
            ca_file: Path | None, timeout: float, certificate: list[Path] | None = None,
            sessions: Callable[[Server], ServerSession] | None = None) -> int:
    """Verify the selected servers; over `sessions` (a run's own) when given, else with sessions of its own."""
    from orchestrator.verify.report import exit_code, findings_table

    findings = _verify_findings(loaded, state, servers, warn_days, ca_file, timeout, certificate, sessions)
    if json_output:
        import json

        _echo("".join(json.dumps({"event": "verify", **f.to_dict()}) + "\n" for f in findings))
    else:
        from rich.console import Console

        console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
        console.print(findings_table(findings))
        dns = _dns_changes(loaded)
        if dns:
            _echo("\n" + dns)
    return exit_code(findings)


def _dns_changes(loaded: LoadedPlaybook) -> str:
    """Which names must point where in coexistence: the primary names to the 2010 source, legacy. to 2007."""
    from orchestrator.coexistence import dns_table, render_dns

    playbook = loaded.playbook
    legacy = playbook.coexistence.legacy_host if playbook.coexistence is not None else None
    olds = [(s.name, s.connection.host) for s in playbook.targets if s.version == 2007]
    if playbook.source.version != 2010 or not olds:
        return ""
    return render_dns(dns_table(list(playbook.certificate.domains), (playbook.source.name,
                                                                      playbook.source.connection.host),
                                legacy, olds if legacy else []))


def _verify_findings(loaded: LoadedPlaybook, state: Path | None, servers: list[str] | None, warn_days: int,
                     ca_file: Path | None, timeout: float, certificate: list[Path] | None = None,
                     sessions: Callable[[Server], ServerSession] | None = None) -> list[Finding]:
    """The verify matrix `exmig verify` prints (and `exmig report` shows)."""
    from orchestrator import journal as journal_mod
    from orchestrator.certs import load_delivery
    from orchestrator.connect import session_factory
    from orchestrator.issuance import issued_from_journal, lab_ca_dir
    from orchestrator.playbook import LabIssuer
    from orchestrator.secrets_store import SecretStore
    from orchestrator.verify.live import load_roots, verify

    if certificate:
        issued = load_delivery(certificate)
    else:
        journal = journal_mod.load(state or journal_mod.default_path(loaded.path), loaded.path)
        if not journal.issued_pem:
            raise UsageError("verify needs the issued certificate: run the migration first, or pass --certificate FILE")
        issued = issued_from_journal(journal.issued_pem, journal.chain_pems)
    roots = None
    if ca_file is not None:
        roots = load_roots(ca_file)
    elif isinstance(loaded.playbook.issuer, LabIssuer):
        from orchestrator.lab.ca import LabCA

        roots = [LabCA.load_or_create(lab_ca_dir(loaded)).root_cert]
    elif loaded.playbook.issuer.root is not None:
        # The playbook names the CA's root (the servers get it with install_root): what they present must
        # verify to it, as their clients will once it is trusted there.
        roots = load_roots(loaded.resolve(loaded.playbook.issuer.root))
    selected = _selected_servers(loaded, servers)
    owns = sessions is None
    if sessions is None:
        secrets = SecretStore(loaded.playbook)
        secrets.resolve(selected, pfx_password=False)
        sessions = session_factory(loaded, secrets)
    return verify(loaded.playbook, issued, selected, sessions, roots, warn_days, timeout, close=owns)


@app.command("verify", epilog=_example("exmig verify playbooks/mitserv.yml"))
def verify_command(
    playbook: PlaybookArg,
    server: ServerOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per finding.")] = False,
    warn_days: Annotated[int, typer.Option("--warn-days", help="Warn when the certificate expires sooner.")] = 30,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="Roots clients trust (PEM); default: the "
                                                    "system's, or the lab CA for lab playbooks.")] = None,
    certificate: CertOpt = None,
    state: Annotated[Path | None, typer.Option("--state", help="Journal file.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per TLS probe.")] = 10.0,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Prove the migration from outside: every service and name.

    Connects to every TLS service of every server, per name, and checks the certificate, its chain and expiry."""
    _troubleshooting(verbose, debug)
    from orchestrator.playbook import load_playbook

    loaded = load_playbook(playbook)
    _check_selection(loaded, server, None)
    code = _verify(loaded, state, json_output, server, warn_days, ca_file, timeout, certificate)
    if code:
        raise typer.Exit(code)


class ReportFormat(str, Enum):
    html = "html"
    md = "md"


@app.command(epilog=_example("exmig report playbooks/mitserv.yml --out change-record.html",
                             "exmig report playbooks/mitserv.yml --format md --no-verify > ticket.md"))
def report(
    playbook: PlaybookArg,
    out: Annotated[Path | None, typer.Option("--out", metavar="FILE", help="Write here (default: stdout).")]
    = None,
    format: Annotated[ReportFormat, typer.Option("--format", help="html (one self-contained page) or md.")]
    = ReportFormat.html,
    state: Annotated[Path | None, typer.Option("--state", help="Journal file.")] = None,
    certificate: CertOpt = None,
    chain: ChainOpt = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Do not contact the servers: no verify matrix.")]
    = False,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="Roots clients trust (PEM), as for verify.")]
    = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.5, help="Seconds per TLS probe.")] = 10.0,
    verify_within: Annotated[float, typer.Option("--verify-within", min=1.0, help="Seconds the verify matrix may "
                                                 "take in all; past that the record says the check did not finish.")]
    = 60.0,
) -> None:
    """Write a change record to attach to a change ticket.

    Before a run: the plan per server with the exact PowerShell. After a run: what each step did and when, Exchange's
    warnings, the certificate's thumbprints and CSR, and the verify matrix (asked of the servers now; when they do
    not answer the record says so). Never a secret. Exit status 0 once written, whatever the record says."""
    from orchestrator.fileio import write_atomic
    from orchestrator.playbook import load_playbook

    loaded = load_playbook(playbook)
    if ca_file is not None and not ca_file.is_file():
        raise UsageError(f"--ca-file {ca_file}: file not found; give the PEM file of the roots clients trust")
    text = _report_text(loaded, state, format, certificate, chain, no_verify, ca_file, timeout, verify_within)
    if out is None:
        _echo(text)
        return
    try:
        write_atomic(out, text.encode(), mode=0o644)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write ({exc.strerror}); choose another file") from None
    _echo(f"report written to {out}\n")


def _report_text(loaded: LoadedPlaybook, state: Path | None, fmt: ReportFormat, certificate: list[Path] | None,
                 chain: list[Path] | None, no_verify: bool, ca_file: Path | None, timeout: float,
                 verify_within: float) -> str:
    from datetime import UTC, datetime
    from importlib.metadata import version

    from orchestrator import journal as journal_mod
    from orchestrator.plan import WORKSTATION
    from orchestrator.render.plan_output import render_ps1
    from orchestrator.report import build_report, render_html, render_markdown, verify_not_run
    from orchestrator.report.model import PlannedStep

    plan = _built_plan(loaded, None, None, certificate, chain)
    path = state or journal_mod.default_path(loaded.path)
    journal = journal_mod.load(path, loaded.path) if path.exists() else None
    if no_verify:
        matrix = verify_not_run("not asked for (--no-verify)")
    elif journal is None or not journal.issued_pem:
        matrix = verify_not_run("no certificate has been issued yet, so there is nothing to verify")
    else:
        matrix = _bounded_verify(loaded, state, ca_file, timeout, verify_within)
    from orchestrator.coexistence import dns_table
    from orchestrator.report.model import SectionTable

    names = SectionTable(("server", "setting", "name", "certificate"), tuple(
        (n["server"], n["setting"], n["name"], n["status"] + (f": {n['detail']}" if n.get("detail") else ""))
        for n in journal.names_in_use)) if journal is not None and journal.names_in_use else None
    playbook = loaded.playbook
    olds = [(t.name, t.connection.host) for t in playbook.targets if t.version == 2007]
    legacy = playbook.coexistence.legacy_host if playbook.coexistence is not None else None
    dns = SectionTable(("name", "points to", "why"), tuple(
        (r.name, r.points_to, r.why) for r in dns_table(list(playbook.certificate.domains),
                                                         (playbook.source.name, playbook.source.connection.host),
                                                         legacy, olds if legacy else []))) \
        if playbook.source.version == 2010 and olds else None
    data = build_report(
        loaded.playbook, str(loaded.path), render_ps1(plan, loaded.playbook),
        [PlannedStep(s.name.value, s.why) for s in plan.for_server(WORKSTATION)], journal, matrix,
        datetime.now(UTC).isoformat(timespec="seconds"), version("exmig"), names_in_use=names, dns_changes=dns)
    return render_html(data) if fmt is ReportFormat.html else render_markdown(data)


def _bounded_verify(loaded: LoadedPlaybook, state: Path | None, ca_file: Path | None, timeout: float,
                    within: float) -> VerifyMatrix:
    """`exmig verify`'s findings, or why there are none, in at most `within` seconds: a server that does not
    answer (a dropped SYN waits out the connect timeout) must not hold up the record."""
    import threading

    from orchestrator.connect import session_factory
    from orchestrator.report import verify_matrix
    from orchestrator.report.model import VerifyMatrix
    from orchestrator.secrets_store import SecretStore

    secrets = SecretStore(loaded.playbook)
    try:
        secrets.resolve(loaded.playbook.servers, pfx_password=False)  # any prompt here, on this thread
        factory = session_factory(loaded, secrets)
    except ExmigError as exc:
        return VerifyMatrix("unavailable", f"the servers could not be asked ({exc})")
    opened: list[ServerSession] = []

    def sessions(server: Server) -> ServerSession:
        session = factory(server)
        opened.append(session)
        return session

    result: list[VerifyMatrix] = []

    def work() -> None:
        try:
            findings = _verify_findings(loaded, state, None, 30, ca_file, timeout, None, sessions)
            result.append(verify_matrix(findings))
        except Exception as exc:  # noqa: BLE001 - the record says why, instead of no record
            result.append(VerifyMatrix("unavailable", f"the check failed ({exc})"))
        finally:
            for session in opened:
                with contextlib.suppress(Exception):
                    session.close()

    worker = threading.Thread(target=work, name="exmig-report-verify", daemon=True)
    worker.start()
    worker.join(within)
    if not result:
        return VerifyMatrix("unavailable", f"the servers did not all answer within {within:g} s "
                                           "(--verify-within); run `exmig verify` to see which")
    return result[0]


class IssuerKind(str, Enum):
    manual = "manual"
    files = "files"
    lab = "lab"


@app.command(epilog=_example("exmig init mitserv.yml --domain mitserv.net --source EX2010=ex2010.mitserv.net "
                             "--target EX2007=ex2007.mitserv.net:2007"))
def init(
    path: Annotated[Path, typer.Argument(help="The playbook to write; an existing file is never replaced.",
                                         metavar="PATH")] = Path("exmig.yml"),
    domain: Annotated[str | None, typer.Option("--domain", metavar="DOMAIN", help="The mail domain.")] = None,
    name: Annotated[list[str] | None, typer.Option("--name", metavar="HOST", help="A name on the certificate "
                                                   "(repeatable); default mail., autodiscover., legacy.")] = None,
    source: Annotated[str | None, typer.Option("--source", metavar="NAME=HOST", help="The Exchange 2010 source.")]
    = None,
    target: Annotated[list[str] | None, typer.Option("--target", metavar="NAME=HOST[:VERSION]", help="A target "
                                                     "(repeatable); VERSION 2007 (default) or 2010.")] = None,
    issuer: Annotated[IssuerKind | None, typer.Option("--issuer", help="How the CA signs; default manual.")] = None,
) -> None:
    """Write a commented starter playbook, from questions or flags.

    With --domain, --source and --target nothing is asked (scripts): the names default to mail., autodiscover.
    and legacy. of the domain, the issuer to manual. What it writes passes `exmig validate`."""
    from orchestrator.scaffold import gather, refuse_existing, summary, write_playbook

    refuse_existing(path)  # before any question
    answers = gather(domain, name, source, target, issuer.value if issuer else None, sys.stdin.isatty())
    write_playbook(answers, path)
    _echo(summary(answers, path))


@app.command(epilog=_example("exmig schema > exmig.schema.json"))
def schema() -> None:
    """Print the playbook's JSON Schema, for editors' YAML support.

    Save it beside the playbooks and make this a playbook's first line; editors with the YAML language server
    (VS Code's YAML extension, Neovim, Helix...) then complete and check the playbook as you type:

    \b
      # yaml-language-server: $schema=exmig.schema.json"""
    import json

    from orchestrator.schema import playbook_schema

    _echo(json.dumps(playbook_schema(), indent=2) + "\n")


@app.command(epilog=_example("exmig status playbooks/mitserv.yml"))
def status(
    playbook: PlaybookArg,
    state: Annotated[Path | None, typer.Option("--state", help="Journal file.")] = None,
) -> None:
    """Show the journal: what has been done, per server and step."""
    from orchestrator import journal as journal_mod

    path = state or journal_mod.default_path(playbook)
    if not path.exists():
        _echo(f"{playbook}: no run yet (no journal at {path})\n")
        return
    j = journal_mod.load(path, playbook)
    _echo(f"journal {path}\n")
    _echo(f"  CSR: {'kept' if j.csr_pem else 'not yet'}; issued certificate: {j.issued_thumbprint or 'not yet'}\n")
    for record in j.steps.values():
        _echo(f"  {record.server:<12} {record.step:<14} {record.outcome:<8} {record.finished or record.started}"
              f"  {record.message or ''}\n")
        for warning in record.warnings:
            _echo(f"  {'':<12} {'':<14} warning  {warning}\n")


@app.command(epilog=_example("exmig rehearse playbooks/mitserv.yml"))
def rehearse(
    playbook: PlaybookArg,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
    keep: Annotated[Path | None, typer.Option("--keep", help="Keep the lab's state in this folder.")] = None,
    windows_powershell: WindowsPowerShellOpt = WindowsPowerShell.v2,
    costs: CostsOpt = CostProfile.none,
    cost_scale: CostScaleOpt = 1.0,
    auth: Annotated[RehearseAuth, typer.Option(
        "--auth", help="playbook: authenticate as the playbook says (Kerberos gets a real MIT KDC started for "
        "its realm); ntlm: NTLM everywhere (where the KDC programs are missing).")] = RehearseAuth.playbook,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
    untrusted_root: UntrustedRootOpt = False,
    rawdata_only: RawDataOnlyOpt = False,
    no_services: NoServicesOpt = False,
    revocation_offline: RevocationOfflineOpt = False,
    previous_certificate: PreviousCertificateOpt = False,
    enable_keeps_iis_binding: KeepsIisBindingOpt = None,
) -> None:
    """Rehearse the migration against a lab mirroring the servers.

    Starts emulated copies of the playbook's servers on 127.0.0.1, runs the whole migration against them,
    verifies it and stops the lab."""
    _troubleshooting(verbose, debug)
    import contextlib
    import tempfile
    from dataclasses import replace

    from orchestrator.lab.kdc import require_kerberos
    from orchestrator.lab.options import LabBehaviour
    from orchestrator.lab.rehearsal import rehearsal_playbook
    from orchestrator.lab.site import LabSite, lab_fqdn, playbook_realm
    from orchestrator.playbook import load_playbook

    loaded = load_playbook(playbook)
    with tempfile.TemporaryDirectory(prefix="exmig-rehearse-") as tmp:
        state_dir = keep or Path(tmp)
        lab_loaded = rehearsal_playbook(loaded, state_dir, force_ntlm=auth is RehearseAuth.ntlm)
        realm = playbook_realm(lab_loaded.playbook)
        if realm is not None:
            require_kerberos(f"rehearsing {playbook} with Kerberos (realm {realm})",
                             f"or rehearse with NTLM: exmig rehearse {playbook} --auth ntlm")
        # The twin keeps production's FQDNs, which a fresh install's URLs use (names in use are checked).
        fqdns = {s.name: lab_fqdn(s.name, s.connection.host) for s in loaded.playbook.servers}
        site = LabSite(lab_loaded.playbook, state_dir, use_playbook_ports=False,
                       costs=_lab_costs(costs, cost_scale), fqdns=fqdns)
        behaviour = LabBehaviour(untrusted_root, rawdata_only, no_services, revocation_offline, previous_certificate,
                                 tuple(enable_keeps_iis_binding or ()))
        behaviour.check([s.name for s in lab_loaded.playbook.servers])
        site.settings = behaviour.apply(replace(site.settings, windows_powershell=windows_powershell.value))
        with site, (site.realm.client_environment() if site.realm else contextlib.nullcontext()):
            final = site.playbook_for_lab()
            lab_loaded = lab_loaded.model_copy(update={"playbook": final})
            if not json_output:
                for d in site.describe():
                    how = f" (Kerberos, realm {d['realm']}, SPN {d['spn']})" if d["realm"] else ""
                    _echo(f"lab {d['name']} (Exchange {d['version']}) at {d['exchange_url']}{how}\n")
                for note in site.notes():
                    _echo(note + "\n")
            journal_path = state_dir / "journal.json"
            os.environ.update(site.acme_secrets())  # the lab ACME's TSIG secret and EAB key, made for this lab
            code = _execute(lab_loaded, journal_path, json_output, None, None, None, [], [], None,
                            verify_after=_verify_after(lab_loaded, journal_path, json_output, None,
                                                        site.issuing_roots))
            if not json_output:
                for name, emulated in site.servers.items():
                    serving = emulated.inspector.serving()
                    _echo(f"lab {name}: " + ", ".join(f"{svc}={thumb or '-'}" for svc, thumb in serving.items()) + "\n")
    if code:
        raise typer.Exit(code)


@contextlib.contextmanager
def _announced(announce: Callable[[], object], withdraw: Callable[[], None]) -> Iterator[None]:
    # `exmig run PLAYBOOK` signs with the CA of the lab serving it (orchestrator.issuance.lab_ca_dir).
    announce()
    try:
        yield
    finally:
        withdraw()


@lab_app.command("serve", epilog=_example("exmig lab serve playbooks/lab.yml"))
def lab_serve(
    playbook: PlaybookArg,
    state: Annotated[Path | None, typer.Option("--state", help="Folder for the lab's state.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per server, once listening.")]
    = False,
    windows_powershell: WindowsPowerShellOpt = WindowsPowerShell.v2,
    costs: CostsOpt = CostProfile.none,
    cost_scale: CostScaleOpt = 1.0,
    untrusted_root: UntrustedRootOpt = False,
    rawdata_only: RawDataOnlyOpt = False,
    no_services: NoServicesOpt = False,
    revocation_offline: RevocationOfflineOpt = False,
    previous_certificate: PreviousCertificateOpt = False,
    enable_keeps_iis_binding: KeepsIisBindingOpt = None,
) -> None:
    """Serve the playbook's servers, emulated, on 127.0.0.1.

    One emulated Exchange server per playbook server, on the playbook's ports, until Ctrl-C or SIGTERM."""
    import signal
    import threading
    from dataclasses import replace

    from orchestrator.issuance import announce_served_lab, lab_state_dir, withdraw_served_lab
    from orchestrator.lab.kdc import require_kerberos
    from orchestrator.lab.options import LabBehaviour
    from orchestrator.lab.site import LabSite, playbook_realm
    from orchestrator.playbook import load_playbook

    loaded = load_playbook(playbook)
    realm = playbook_realm(loaded.playbook)
    if realm is not None:
        require_kerberos(f"serving {playbook} with Kerberos (realm {realm})",
                         "or serve a playbook whose servers use auth: ntlm")
    site = LabSite(loaded, state or lab_state_dir(loaded), costs=_lab_costs(costs, cost_scale))
    behaviour = LabBehaviour(untrusted_root, rawdata_only, no_services, revocation_offline, previous_certificate,
                             tuple(enable_keeps_iis_binding or ()))
    behaviour.check([s.name for s in loaded.playbook.servers])
    site.settings = behaviour.apply(replace(site.settings, windows_powershell=windows_powershell.value))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with site, _announced(lambda: announce_served_lab(loaded, site.state_dir), lambda: withdraw_served_lab(loaded)):
        if json_output:
            _echo(site.describe_json_lines())
        else:
            for d in site.describe():
                offered = "; ".join(f"{path} {', '.join(schemes)}" for path, schemes in d["auth"].items())
                _echo(f"{d['name']} (Exchange {d['version']}): {d['exchange_url']} [{d['configuration_name']}]\n"
                      f"  wsman {d['wsman_url']}  auth {offered}  user {d['username']}  "
                      f"password {d['password']}\n"
                      f"  tls " + ", ".join(f"{k} {v}" for k, v in d["tls_ports"].items()) + "\n")
            if site.realm is not None:
                _echo(f"Kerberos realm {site.realm.realm}: KDC on {site.realm.host}:{site.realm.port}; clients need\n"
                      f"  export KRB5_CONFIG={site.realm.krb5_config}\n")
            for note in site.notes():
                _echo(note + "\n")
            _echo(f"lab CA: {site.ca_file}\nCtrl-C stops the lab; its state stays in {site.state_dir}\n")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


@lab_app.command("sign", epilog=_example("exmig lab sign mitserv.csr --out ca-answer --playbook playbooks/lab.yml"))
def lab_sign(
    csr: Annotated[Path, typer.Argument(help="The certificate request (CSR) file.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the CA's answer.")],
    ca: Annotated[Path | None, typer.Option("--ca", help="The lab CA folder.")] = None,
    playbook: Annotated[Path | None, typer.Option("--playbook", help="Use this playbook's lab CA.")] = None,
) -> None:
    """Play the third-party CA: sign a CSR with the lab CA.

    Writes the leaf, the intermediate, a .p7b and a .zip into --out."""
    from orchestrator.issuance import lab_ca_dir
    from orchestrator.lab.ca import CSRRejected, sign_request_file
    from orchestrator.playbook import load_playbook

    if ca is None:
        if playbook is None:
            raise UsageError("give --ca DIR or --playbook PLAYBOOK (whose lab CA signs)")
        ca = lab_ca_dir(load_playbook(playbook))
    if not csr.is_file():
        raise UsageError(f"{csr}: file not found")
    try:
        delivery = sign_request_file(csr, out, ca)
    except (CSRRejected, ValueError) as exc:
        raise UsageError(f"{csr}: {exc}") from None
    _echo(f"signed: {delivery.thumbprint}\n  {delivery.leaf}\n  {delivery.intermediate}\n  {delivery.zip}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point: ExmigError becomes one line on stderr and its exit code, never a traceback."""
    try:
        # Without standalone mode click returns (not raises) a command's typer.Exit code.
        returned = app(args=argv, prog_name="exmig", standalone_mode=False)
        if isinstance(returned, int) and not isinstance(returned, bool):
            return returned
    except ExmigError as exc:
        sys.stderr.write(f"exmig: error: {exc}\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("exmig: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("exmig: aborted\n")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        # Usage errors (typer's own, or click's in older typer): they know their message and code.
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            if type(exc).__name__ == "NoArgsIsHelpError":  # `exmig` or `exmig lab` alone: its message is the help
                _echo(exc.format_message() + "\n")
            else:
                sys.stderr.write(f"exmig: error: {exc.format_message()}\n")
            return int(ExitCode.USAGE)
        raise
    return int(ExitCode.OK)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
