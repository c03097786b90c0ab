"""What a run reports as it goes: a live console display, or one JSON object per line.

Events carry names, never values: a command event names the cmdlet or program and its parameters'
names, never their values, so no secret can reach the output through them.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

OUTCOMES = ("changed", "ok", "skipped", "failed")


@dataclass
class Summary:
    counts: Counter[str] = field(default_factory=Counter)
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # server, step, outcome, reason
    servers: set[str] = field(default_factory=set)

    def add(self, server: str, step: str, outcome: str, reason: str) -> None:
        self.counts[outcome] += 1
        self.rows.append((server, step, outcome, reason))
        if server != "workstation":
            self.servers.add(server)

    def line(self) -> str:
        n = len(self.servers)
        return (f"{n} server{'s' if n != 1 else ''}: {self.counts['changed']} changed, {self.counts['ok']} ok, "
                f"{self.counts['skipped']} skipped, {self.counts['failed']} failed")


class Events(Protocol):
    summary: Summary

    def step_started(self, server: str, step: str) -> None: ...

    def step_finished(self, server: str, step: str, outcome: str, reason: str, seconds: float) -> None: ...

    def command(self, server: str, step: str, command: str, seconds: float, outcome: str,
                parameters: list[list[str]] | None = None) -> None:
        """One request: `command` names its statements ("Import-ExchangeCertificate + Enable-..."), `parameters`
        each statement's parameter names in order (what `run --check` printed can be compared with it)."""
        ...

    def retrying(self, server: str, step: str, attempt: int, reason: str, delay: float) -> None: ...

    def warning(self, server: str, step: str, cmdlet: str, text: str) -> None:
        """A warning the server's command wrote (Exchange's WARNING: lines): the server's text."""
        ...

    def note(self, text: str) -> None: ...

    def finish(self) -> None: ...


class JsonEvents:
    """One JSON object per line on stdout: for programs."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.summary = Summary()
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()  # targets report from several threads; one line at a time

    def _emit(self, **data: Any) -> None:
        data["time"] = round(time.time(), 3)
        line = json.dumps(data) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def step_started(self, server: str, step: str) -> None:
        self._emit(event="step", phase="start", server=server, step=step)

    def step_finished(self, server: str, step: str, outcome: str, reason: str, seconds: float) -> None:
        with self._lock:
            self.summary.add(server, step, outcome, reason)
        self._emit(event="step", phase="end", server=server, step=step, outcome=outcome, reason=reason,
                   duration=round(seconds, 3))

    def command(self, server: str, step: str, command: str, seconds: float, outcome: str,
                parameters: list[list[str]] | None = None) -> None:
        self._emit(event="command", server=server, step=step, command=command, duration=round(seconds, 3),
                   outcome=outcome, parameters=parameters)

    def retrying(self, server: str, step: str, attempt: int, reason: str, delay: float) -> None:
        self._emit(event="retry", server=server, step=step, attempt=attempt, reason=reason, delay=round(delay, 2))

    def warning(self, server: str, step: str, cmdlet: str, text: str) -> None:
        self._emit(event="warning", server=server, step=step, cmdlet=cmdlet, text=text)

    def note(self, text: str) -> None:
        self._emit(event="note", text=text)

    def finish(self) -> None:
        self._emit(event="summary", counts=dict(self.summary.counts), servers=sorted(self.summary.servers),
                   line=self.summary.line())


class QuietEvents:
    """Reports nothing (`run --check` prints its own result); keeps the summary."""

    def __init__(self) -> None:
        self.summary = Summary()

    def step_started(self, server: str, step: str) -> None:
        return None

    def step_finished(self, server: str, step: str, outcome: str, reason: str, seconds: float) -> None:
        self.summary.add(server, step, outcome, reason)

    def command(self, server: str, step: str, command: str, seconds: float, outcome: str,
                parameters: list[list[str]] | None = None) -> None:
        return None

    def retrying(self, server: str, step: str, attempt: int, reason: str, delay: float) -> None:
        return None

    def warning(self, server: str, step: str, cmdlet: str, text: str) -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def finish(self) -> None:
        return None


class ConsoleEvents:
    """For people: a line per finished step, and on a terminal a live panel of what each server is doing
    (targets run side by side); a summary table at the end."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console

        self.summary = Summary()
        self._lock = threading.Lock()
        out = stream or sys.stdout
        self._console = Console(file=out, highlight=False, width=None if out.isatty() else 150)
        self._style = {"changed": "yellow", "ok": "green", "skipped": "dim", "failed": "bold red"}
        self._state: dict[str, tuple[str, str]] = {}  # server -> (step, what it is doing)
        self._live: Any = None
        if out.isatty():
            from rich.live import Live

            self._live = Live(self._panel(), console=self._console, refresh_per_second=8, transient=True)
            self._live.start()

    def _panel(self) -> Any:
        from rich.table import Table

        table = Table(show_header=False, show_edge=False, box=None)
        for server, (step, doing) in self._state.items():
            table.add_row(f"[bold]{escape(server)}[/]", escape(step), doing)
        return table

    def _set(self, server: str, step: str, doing: str) -> None:
        with self._lock:
            self._state[server] = (step, doing)
            if self._live is not None:
                self._live.update(self._panel())

    def step_started(self, server: str, step: str) -> None:
        self._set(server, step, "[cyan]running[/]")

    def step_finished(self, server: str, step: str, outcome: str, reason: str, seconds: float) -> None:
        with self._lock:
            self.summary.add(server, step, outcome, reason)
        style = self._style.get(outcome, "")
        self._set(server, step, f"[{style}]{outcome}[/]")
        self._console.print(f"[{style}]{outcome:>8}[/] {escape(server):<12} {escape(step):<14} {escape(reason)} "
                            f"({seconds:.1f}s)", markup=True)

    def command(self, server: str, step: str, command: str, seconds: float, outcome: str,
                parameters: list[list[str]] | None = None) -> None:
        return None

    def retrying(self, server: str, step: str, attempt: int, reason: str, delay: float) -> None:
        self._set(server, step, f"[magenta]retrying in {delay:.1f}s[/]")
        self._console.print(f"[magenta]retrying[/] {escape(server):<12} {escape(step):<14} attempt {attempt + 1} "
                            f"in {delay:.1f}s: {escape(reason)}", markup=True)

    def warning(self, server: str, step: str, cmdlet: str, text: str) -> None:
        self._set(server, step, "[yellow]warning[/]")
        self._console.print(f"[yellow] warning[/] {escape(server):<12} {escape(step):<14} {escape(cmdlet)}: "
                            f"{escape(text)}", markup=True)

    def note(self, text: str) -> None:
        self._console.print(text, markup=False)

    def finish(self) -> None:
        from rich.table import Table

        if self._live is not None:
            self._live.stop()
            self._live = None
        table = Table(title=None, show_edge=False)
        for column in ("server", "step", "outcome", "detail"):
            table.add_column(column)
        for server, step, outcome, reason in self.summary.rows:
            table.add_row(escape(server), escape(step), f"[{self._style.get(outcome, '')}]{outcome}[/]", escape(reason))
        if self.summary.rows:
            self._console.print(table)
        self._console.print(self.summary.line(), markup=False)


def escape(text: str) -> str:
    """Server texts can hold [brackets] that rich would read as markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
