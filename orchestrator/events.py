"""What a run reports as it goes: a live console display, or one JSON object per line.

Events carry names, never values: a command event names the cmdlet or program, not its
parameters, so no secret can reach the output through them.
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
                detail: str | None = None) -> None: ...

    def retrying(self, server: str, step: str, attempt: int, reason: str, delay: float) -> None: ...

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
                detail: str | None = None) -> None:
        self._emit(event="command", server=server, step=step, command=command, duration=round(seconds, 3),
                   outcome=outcome, detail=detail)

    def retrying(self, server: str, step: str, attempt: int, reason: str, delay: float) -> None:
        self._emit(event="retry", server=server, step=step, attempt=attempt, reason=reason, delay=round(delay, 2))

    def note(self, text: str) -> None:
        self._emit(event="note", text=text)

    def finish(self) -> None:
        self._emit(event="summary", counts=dict(self.summary.counts), servers=sorted(self.summary.servers),
                   line=self.summary.line())


class ConsoleEvents:
    """Per-step lines as they happen (rich when stdout is a terminal), then a summary table."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console

        self.summary = Summary()
        self._lock = threading.Lock()
        out = stream or sys.stdout
        self._console = Console(file=out, highlight=False, width=None if out.isatty() else 150)
        self._style = {"changed": "yellow", "ok": "green", "skipped": "dim", "failed": "bold red"}

    def step_started(self, server: str, step: str) -> None:
        return None

    def step_finished(self, server: str, step: str, outcome: str, reason: str, seconds: float) -> None:
        with self._lock:
            self.summary.add(server, step, outcome, reason)
        style = self._style.get(outcome, "")
        self._console.print(f"[{style}]{outcome:>8}[/] {server:<12} {step:<14} {reason} ({seconds:.1f}s)",
                            markup=True)

    def command(self, server: str, step: str, command: str, seconds: float, outcome: str,
                detail: str | None = None) -> None:
        return None

    def retrying(self, server: str, step: str, attempt: int, reason: str, delay: float) -> None:
        self._console.print(f"[magenta]retrying[/] {server:<12} {step:<14} attempt {attempt + 1} in {delay:.1f}s: "
                            f"{reason}", markup=True)

    def note(self, text: str) -> None:
        self._console.print(text, markup=False)

    def finish(self) -> None:
        from rich.table import Table

        table = Table(title=None, show_edge=False)
        for column in ("server", "step", "outcome", "detail"):
            table.add_column(column)
        for server, step, outcome, reason in self.summary.rows:
            table.add_row(server, step, f"[{self._style.get(outcome, '')}]{outcome}[/]", reason)
        if self.summary.rows:
            self._console.print(table)
        self._console.print(self.summary.line(), markup=False)
