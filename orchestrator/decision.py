"""A step's decision as data: send these commands and why, or nothing and why.

Decisions are pure (orchestrator/steps.py makes them from the plan's step, the server's facts and
what the run already did); the executor sends a `Send` exactly as it is, and `exmig plan`,
`run --dry-run` and `run --check` render the same values, so what is printed is what is sent.
Learned from pyinfra, whose operations yield commands or a no-op with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from orchestrator.commands import Command

T = TypeVar("T")


@dataclass(frozen=True)
class Noop:
    """Nothing to send: the state already holds (`reason` says which). `changed_by`: an earlier step of this
    run made the change (Enable in the import's pipeline), so the step counts as changed; `note`: something
    the admin should see (a warning about the certificate)."""

    reason: str
    changed_by: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Send:
    """Commands to send, one tuple per request (a pipeline of statements where the server takes several);
    `reason` is what the step has done once they succeeded."""

    pipelines: tuple[tuple[Command, ...], ...]
    reason: str
    # What it does to the run once it succeeded (orchestrator/steps.py RunState.after), and the step's outcome
    # then: "changed", or "ok" for commands that change nothing (the export).
    effects: frozenset[str] = field(default_factory=frozenset)
    outcome: str = "changed"
    # What the executor journals before sending (each change with its value before), so `exmig rollback` can
    # undo it: dataclass values (orchestrator/coexistence.py UrlChange).
    record: tuple[Any, ...] = ()

    @property
    def commands(self) -> tuple[Command, ...]:
        return tuple(c for pipeline in self.pipelines for c in pipeline)


Decision = Noop | Send


@dataclass(frozen=True)
class Read(Generic[T]):
    """A fact as a declared read: the command that reads it and the parser of its output (pyinfra's facts)."""

    name: str
    command: Command
    parse: Callable[[list[Any]], T] = field(compare=False)
