"""What `exmig run --check` found: per server and step, the commands a run would send now, or why nothing.

The commands are the decisions' own (orchestrator/steps.py), rendered as `plan` renders commands.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from orchestrator.decision import Noop, Send
from orchestrator.names_in_use import Coverage, render_table
from orchestrator.plan import WORKSTATION
from orchestrator.playbook import Playbook, Server
from orchestrator.render.plan_output import _server_heading, command_json, request_lines, winrs_json

if TYPE_CHECKING:
    from orchestrator.execute import Planned


def _server(playbook: Playbook, name: str) -> Server | None:
    return playbook.server(name) if name != WORKSTATION else None


def _action(entry: Planned) -> str:
    if isinstance(entry.decision, Send):
        return "send"
    if isinstance(entry.decision, Noop):
        return "nothing"
    return "workstation" if entry.server == WORKSTATION else "reads-only"


def names_lines(names: list[Coverage], problems: list[str]) -> list[str]:
    """The names in use on the servers and what the certificate does for each (read before the request)."""
    if not names:
        return []
    lines = ["names in use on the servers (read before the request):"]
    lines += ["  " + line for line in render_table(names).splitlines()]
    if problems:
        lines.append(f"a run stops before the request: {len(problems)} name(s) not covered")
        lines += [f"  {p}" for p in problems]
    return [*lines, ""]


def render_check_text(planned: list[Planned], playbook: Playbook, names: list[Coverage] | None = None,
                      problems: list[str] | None = None) -> str:
    lines: list[str] = names_lines(names or [], problems or [])
    current: str | None = None
    for number, entry in enumerate(planned, 1):
        if entry.server != current:
            current = entry.server
            if lines:
                lines.append("")
            server = _server(playbook, entry.server)
            lines.append("workstation (this machine)" if server is None else _server_heading(server))
        server = _server(playbook, entry.server)
        decision = entry.decision
        if isinstance(decision, Send):
            lines.append(f"  {number:>2}. {entry.step}: would send ({entry.reason}):")
            for pipeline in decision.pipelines:
                if len(pipeline) > 1:
                    lines.append("      # in one request:")
                lines.extend("      " + line for line in request_lines(server, pipeline))
        elif isinstance(decision, Noop):
            lines.append(f"  {number:>2}. {entry.step}: nothing to do: {entry.reason}")
        elif entry.server == WORKSTATION:
            lines.append(f"  {number:>2}. {entry.step}: on this machine: {entry.reason}")
        else:
            lines.append(f"  {number:>2}. {entry.step}: reads only (changes nothing)")
    changes = sum(isinstance(e.decision, Send) and e.decision.outcome == "changed" for e in planned)
    lines.append("")
    lines.append(f"{changes} step(s) would change a server" if changes else "nothing to do on any server")
    return "\n".join(lines) + "\n"


def render_check_json(planned: list[Planned], playbook: Playbook, names: list[Coverage] | None = None,
                      problems: list[str] | None = None) -> str:
    steps: list[dict[str, Any]] = []
    for entry in planned:
        server = _server(playbook, entry.server)
        pipelines = entry.decision.pipelines if isinstance(entry.decision, Send) else ()
        steps.append({
            "server": entry.server,
            "step": entry.step,
            "action": _action(entry),
            "reason": entry.reason,
            "changes": isinstance(entry.decision, Send) and entry.decision.outcome == "changed",
            "requests": [[command_json(c, server) for c in pipeline] for pipeline in pipelines],
        })
        sent = winrs_json(server, pipelines)
        if sent is not None:
            steps[-1]["winrs"] = sent  # per request: the one powershell.exe command line and its script
    judged = [{"server": c.row.server, "setting": c.row.setting, "name": c.row.host, "value": c.row.value,
               "status": c.status, "detail": c.detail} for c in names or []]
    return json.dumps({"names_in_use": judged, "stops_before_request": problems or [], "steps": steps},
                      indent=2) + "\n"


def render_check_ps1(planned: list[Planned], playbook: Playbook) -> str:
    scripts: dict[str, list[str]] = {}
    for entry in planned:
        server = _server(playbook, entry.server)
        if server is None:
            continue
        lines = scripts.setdefault(server.name, [f"# exmig run --check for {server.name}: what a run sends now"])
        lines.append("")
        if isinstance(entry.decision, Send):
            lines.append(f"# --- {entry.step}: {entry.reason}")
            for pipeline in entry.decision.pipelines:
                lines.extend(request_lines(server, pipeline))
        else:
            lines.append(f"# --- {entry.step}: nothing to do: {entry.reason}")
    return "\n".join(f"# ===== {name}.ps1 =====\n" + "\n".join(body) + "\n" for name, body in scripts.items())
