"""A plan printed for people (text), for programs (JSON) and as one PowerShell script per server."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.commands import (
    Blob,
    Captured,
    Command,
    Flag,
    LocalFile,
    Null,
    Number,
    Pending,
    Secret,
    Shell,
    Switch,
    Text,
    TextList,
    Thumbprint,
    Value,
)
from orchestrator.dialects import add_snapin
from orchestrator.plan import WORKSTATION, Plan, Step
from orchestrator.playbook import Playbook, Server
from orchestrator.render.powershell import render_command


def _server_heading(server: Server) -> str:
    ep = server.exchange_endpoint
    transport = "" if server.connection.transport == "psrp" else f", {server.connection.transport}"
    # The SPN is where Kerberos goes wrong in production (an alias, a load balancer): show what is asked for.
    spn = f", SPN {server.spn_service}/{server.spn_hostname}" if server.auth in ("kerberos", "negotiate") else ""
    return (f"{server.name} (Exchange {server.version}, {server.role.value}) "
            f"{ep.url(server.connection.host)} [{ep.configuration}, {server.auth}{transport}{spn}]")


def _console_file(server: Server) -> str:
    from orchestrator.render.winrs_script import EXSHELL_CONSOLE_FILE

    return server.connection.console_file or EXSHELL_CONSOLE_FILE


def _winrs(server: Server | None) -> bool:
    return server is not None and server.connection.transport == "winrs"


def requests(server: Server | None, commands: tuple[Command, ...]) -> tuple[tuple[Command, ...], ...]:
    """How a WinRS server gets a step's commands: one process per request, grouped as the executor groups
    them (its sessions batch both shells); elsewhere each command on its own (the PSRP grouping depends on
    the server's PowerShell, which a plan does not know; `exmig run --check` shows it)."""
    if not _winrs(server):
        return tuple((c,) for c in commands)
    from orchestrator.steps import pipelines

    return pipelines(commands, frozenset(Shell))


def winrs_sent(server: Server | None, commands: tuple[Command, ...]) -> tuple[str, str] | None:
    """(powershell.exe command line, the script it carries decoded) for one request to a WinRS server; None on
    PSRP servers and for what cannot be sent yet (a thumbprint not known)."""
    if server is None or not _winrs(server):
        return None
    from orchestrator.render.winrs_script import NotSendable, sent_request

    try:
        line, script = sent_request(commands, _console_file(server))
    except NotSendable:
        return None
    return line, script.text


def request_lines(server: Server | None, commands: tuple[Command, ...]) -> list[str]:
    """One request as it is sent: PowerShell text, or on a WinRS server the powershell.exe command line that
    goes over the cmd shell with, beside it, the script its -EncodedCommand carries (secrets and bytes read
    from stdin)."""
    sent = winrs_sent(server, commands)
    if sent is not None:
        line, script = sent
        return [f"# over WinRS: {line}", "# which runs:", *script.splitlines()]
    return [render_command(c) for c in commands]


def rendered_lines(server: Server | None, command: Command) -> list[str]:
    return request_lines(server, (command,))


def _session_note(server: Server, command: Command) -> str | None:
    if server.version == 2010 and command.shell is Shell.SYSTEM:
        return f"# in Windows PowerShell on {server.name} ({server.system_endpoint.configuration} at "\
               f"{server.system_endpoint.url(server.connection.host)}), not the Exchange endpoint"
    return None


def _command_lines(server: Server | None, commands: tuple[Command, ...], indent: str,
                   grouped: bool = True) -> list[str]:
    """`grouped` False: each command its own request (reads: the executor sends each read on its own)."""
    lines: list[str] = []
    last_note: str | None = None
    for request in requests(server, commands) if grouped else tuple((c,) for c in commands):
        note = _session_note(server, request[0]) if server else None
        if note and note != last_note:
            lines.append(indent + note)
        last_note = note
        lines.extend(indent + line for line in request_lines(server, request))
    return lines


def _reads_heading(step: Step) -> str:
    return "reads first" + (f" ({step.reads_when})" if step.reads_when else "") + ":"


def step_lines(step: Step, server: Server | None, indent: str = "      ") -> list[str]:
    """Everything the step can send: its reads, its commands, and each branch with when it is sent."""
    lines: list[str] = []
    if step.reads:
        lines.append(indent + "# " + _reads_heading(step))
        lines.extend(_command_lines(server, step.reads, indent, grouped=False))
        if step.commands:
            lines.append(indent + "# then, unless the server holds the result already:")
    lines.extend(_command_lines(server, step.commands, indent))
    for branch in step.branches:
        lines.append(indent + f"# only {branch.when}:")
        lines.extend(_command_lines(server, branch.commands, indent))
    return lines


def preflight_lines(plan: Plan, playbook: Playbook) -> list[str]:
    """The reads before the run's first change, per server the plan touches (orchestrator/reads.py preflight)."""
    from orchestrator.plan import StepName
    from orchestrator.reads import preflight

    requesting = any(s.name is StepName.REQUEST for s in plan.steps)
    lines = ["before the first change, each server the run touches is read (a wrong password, host or name in use "
             "stops the run with nothing changed)" + (":" if plan.steps else "")]
    for name in plan.servers:
        if name == WORKSTATION:
            continue
        server = playbook.server(name)
        lines.append(f"  {server.name}:")
        lines.extend(_command_lines(server, tuple(r.command for r in preflight(server, requesting)), "      "))
        kinds = ", ".join(f"{kind} {port}" for kind, port in server.tls_ports.items())
        lines.append(f"      # and, once, what its TLS endpoints present is recorded as served before ({kinds}): "
                     "exmig rollback's record")
    return lines


def render_text(plan: Plan, playbook: Playbook) -> str:
    lines: list[str] = preflight_lines(plan, playbook) if plan.steps else []
    current: str | None = None
    for number, step in enumerate(plan.steps, 1):
        if step.server != current:
            current = step.server
            if lines:
                lines.append("")
            if step.server == WORKSTATION:
                lines.append("workstation (this machine)")
            else:
                lines.append(_server_heading(playbook.server(step.server)))
        lines.append(f"  {number:>2}. {step.name.value}: {step.why}")
        if step.local_action:
            lines.append(f"      -> {step.local_action}")
        server = playbook.server(step.server) if step.server != WORKSTATION else None
        lines.extend(step_lines(step, server))
        if step.unresolved:
            lines.append("      (waiting for: " + "; ".join(step.unresolved) + ")")
    return "\n".join(lines) + "\n"


def render_ps1(plan: Plan, playbook: Playbook) -> dict[str, str]:
    """One script per server, in plan order, for an admin to read or paste into that server's shell."""
    from orchestrator.plan import StepName
    from orchestrator.reads import preflight

    requesting = any(s.name is StepName.REQUEST for s in plan.steps)
    scripts: dict[str, str] = {}
    for name in plan.servers:
        if name == WORKSTATION:
            continue
        server = playbook.server(name)
        lines = [
            f"# exmig plan for {server.name} (Exchange {server.version}, {server.role.value})",
            "# Generated from the playbook; exmig sends these as commands with typed parameters.",
            "# Values in <angle brackets> are not known yet; (Get-Credential).Password stands for a secret.",
        ]
        snapin = add_snapin(server)
        if snapin is not None:
            lines.append(render_command(snapin))
        lines += ["", "# --- before the first change: what the run reads of this server"]
        lines += _command_lines(server, tuple(r.command for r in preflight(server, requesting)), "")
        for step in plan.for_server(name):
            lines.append("")
            lines.append(f"# --- {step.name.value}: {step.why}")
            lines.extend(step_lines(step, server, indent=""))
        scripts[server.name] = "\n".join(lines) + "\n"
    return scripts


def _value_json(value: Value) -> Any:
    if isinstance(value, Text):
        return value.value
    if isinstance(value, TextList):
        return list(value.values)
    if isinstance(value, Number):
        return value.value
    if isinstance(value, (Flag,)):
        return value.value
    if isinstance(value, Null):
        return None
    if isinstance(value, Switch):
        return {"switch": value.present}
    if isinstance(value, Thumbprint):
        return {"thumbprint": value.value}
    if isinstance(value, Secret):
        return {"secret": value.key}  # the name of the secret, never its value
    if isinstance(value, Blob):
        origin = value.origin
        if isinstance(origin, LocalFile):
            source: dict[str, Any] = {"file": origin.path, "member": origin.member}
        elif isinstance(origin, Captured):
            source = {"output_of": origin.variable, "property": origin.property}
        else:
            assert isinstance(origin, Pending)
            source = {"pending": origin.description}
        return {"bytes": value.key, **source}
    raise TypeError(type(value).__name__)


def command_json(command: Command, server: Server | None = None) -> dict[str, Any]:
    out = {
        "command": command.name,
        "session": command.shell.value,
        "native": command.native,
        "changes": command.changes,
        "capture": command.capture,
        "parameters": [{"name": p.name, "value": _value_json(p.value)} for p in command.params],
        "powershell": render_command(command),
    }
    return out


def winrs_json(server: Server | None, commands: tuple[tuple[Command, ...], ...]) -> list[dict[str, Any]] | None:
    """Per request to a WinRS server: its commands' names, the command line and the script (None elsewhere)."""
    if not _winrs(server):
        return None
    out: list[dict[str, Any]] = []
    for request in commands:
        sent = winrs_sent(server, request)
        out.append({"commands": [c.name for c in request], "command_line": sent[0] if sent else None,
                    "script": sent[1] if sent else None})
    return out


def step_json(number: int, step: Step, server: Server | None = None) -> dict[str, Any]:
    out = {
        "number": number,
        "step": step.name.value,
        "server": step.server,
        "why": step.why,
        "local_action": step.local_action,
        "waiting_for": step.unresolved,
        "reads": [command_json(c, server) for c in step.reads],
        "reads_when": step.reads_when,
        "commands": [command_json(c, server) for c in step.commands],
        "branches": [{"branch": b.name.value, "when": b.when, "commands": [command_json(c, server) for c in b.commands]}
                     for b in step.branches],
    }
    sent = winrs_json(server, (*((c,) for c in step.reads), *requests(server, step.commands),
                               *(r for b in step.branches for r in requests(server, b.commands))))
    if sent is not None:
        out["winrs"] = sent  # each request as the WinRS server gets it: one powershell.exe
    return out


def render_json(plan: Plan, playbook: Playbook | None = None) -> str:
    def server(step: Step) -> Server | None:
        return playbook.server(step.server) if playbook is not None and step.server != WORKSTATION else None

    return json.dumps({"preflight": preflight_json(plan, playbook) if playbook is not None else [],
                       "steps": [step_json(n, s, server(s)) for n, s in enumerate(plan.steps, 1)]}, indent=2) + "\n"


def preflight_json(plan: Plan, playbook: Playbook) -> list[dict[str, Any]]:
    """The reads before the run's first change, per server (as the text's first section shows them)."""
    from orchestrator.plan import StepName
    from orchestrator.reads import preflight

    requesting = any(s.name is StepName.REQUEST for s in plan.steps)
    out: list[dict[str, Any]] = []
    for name in plan.servers:
        if name == WORKSTATION:
            continue
        server = playbook.server(name)
        reads = tuple(r.command for r in preflight(server, requesting))
        entry: dict[str, Any] = {"server": name, "reads": [command_json(c, server) for c in reads]}
        sent = winrs_json(server, tuple((c,) for c in reads))
        if sent is not None:
            entry["winrs"] = sent
        out.append(entry)
    return out
