"""The `exmig` command line (typer). Commands import what they need lazily: start-up stays fast."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestrator.errors import ExitCode, ExmigError, UsageError

app = typer.Typer(
    name="exmig",
    help="Move an Exchange certificate from Exchange 2010 to Exchange 2007/2010 servers over WinRM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lab_app = typer.Typer(help="The rehearsal lab: emulated Exchange servers on 127.0.0.1.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")


class PlanFormat(str, Enum):
    text = "text"
    json = "json"
    ps1 = "ps1"


PlaybookArg = Annotated[Path, typer.Argument(help="The migration playbook (YAML).", show_default=False)]
ServerOpt = Annotated[Optional[list[str]], typer.Option("--server", help="Only this server (repeatable).")]
StepOpt = Annotated[Optional[list[str]], typer.Option("--step", help="Only this step (repeatable); see `exmig steps`.")]
CertOpt = Annotated[Optional[list[Path]], typer.Option("--certificate", help="The CA's certificate (or zip/p7b bundle).")]
ChainOpt = Annotated[Optional[list[Path]], typer.Option("--chain", help="The CA's intermediate certificate(s).")]


def _echo(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _check_selection(loaded: object, servers: list[str] | None, steps: list[str] | None) -> None:
    from orchestrator.plan import StepName
    from orchestrator.playbook import LoadedPlaybook

    assert isinstance(loaded, LoadedPlaybook)
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
    from orchestrator.facts import local_facts
    from orchestrator.plan import build_plan
    from orchestrator.playbook import load_playbook
    from orchestrator.render.plan_output import render_json, render_ps1, render_text

    loaded = load_playbook(playbook)
    _check_selection(loaded, servers, steps)
    facts = local_facts(loaded, certificate or [], chain or [])
    plan = build_plan(loaded.playbook, facts).select(servers, steps)
    if fmt is PlanFormat.json:
        return render_json(plan)
    if fmt is PlanFormat.ps1:
        scripts = render_ps1(plan, loaded.playbook)
        return "\n".join(f"# ===== {name}.ps1 =====\n{text}" for name, text in scripts.items())
    return render_text(plan, loaded.playbook)


@app.command()
def validate(playbook: PlaybookArg) -> None:
    """Check a playbook; print one line naming file, line and field for the first problem."""
    from orchestrator.playbook import load_playbook

    loaded = load_playbook(playbook)
    p = loaded.playbook
    _echo(f"{playbook}: ok ({len(p.servers)} servers: source {p.source.name}, "
          f"targets {', '.join(t.name for t in p.targets)}; issuer {p.issuer.type})\n")


@app.command()
def steps() -> None:
    """List the step names a plan is made of, in order."""
    from orchestrator.plan import STEP_DESCRIPTIONS

    width = max(len(s.value) for s in STEP_DESCRIPTIONS)
    for step, text in STEP_DESCRIPTIONS.items():
        _echo(f"{step.value:<{width}}  {text}\n")


@app.command()
def plan(
    playbook: PlaybookArg,
    server: ServerOpt = None,
    step: StepOpt = None,
    format: Annotated[PlanFormat, typer.Option("--format", help="text, json, or ps1 (one script per server).")]
    = PlanFormat.text,
    certificate: CertOpt = None,
    chain: ChainOpt = None,
) -> None:
    """Print the plan: every command, per server and in order, as the PowerShell it amounts to."""
    _echo(_plan_output(playbook, server, step, format, certificate, chain))


@app.command()
def run(
    playbook: PlaybookArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    server: ServerOpt = None,
    step: StepOpt = None,
    format: Annotated[PlanFormat, typer.Option("--format", help="Dry-run output format.")] = PlanFormat.text,
    certificate: CertOpt = None,
    chain: ChainOpt = None,
) -> None:
    """Run the migration (with --dry-run: print exactly what would be sent)."""
    if dry_run:
        _echo(_plan_output(playbook, server, step, format, certificate, chain))
        return
    raise ExmigError("live runs are not available in this build yet; use --dry-run (see README: status)")


def main(argv: list[str] | None = None) -> int:
    """Entry point: ExmigError becomes one line on stderr and its exit code, never a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except ExmigError as exc:
        sys.stderr.write(f"exmig: error: {exc}\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("exmig: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # click's own usage errors
        import click

        if isinstance(exc, click.exceptions.Exit):
            return int(exc.exit_code)
        if isinstance(exc, click.ClickException):
            sys.stderr.write(f"exmig: error: {exc.format_message()}\n")
            return int(ExitCode.USAGE)
        if isinstance(exc, click.exceptions.Abort):
            sys.stderr.write("exmig: aborted\n")
            return int(ExitCode.INTERRUPTED)
        raise
    return int(ExitCode.OK)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
