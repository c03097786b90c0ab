"""A tiny pipeline runner over a Registry: what the lab's shells do, minus the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.lab.registry import CommandCall, LabError, Registry, Session, bind

Args = list[tuple[str | None, Any]]


@dataclass
class Result:
    output: list[Any] = field(default_factory=list)
    errors: list[LabError] = field(default_factory=list)


class Shell:
    def __init__(self, registry: Registry, configuration: str, username: str = "CONTOSO\\Administrator",
                 can_prompt: bool = False) -> None:
        self.registry = registry
        self.session = Session(configuration=configuration, username=username, can_prompt=can_prompt)

    def run(self, *stages: tuple[str, Args]) -> Result:
        """Run `cmd1 args | cmd2 args | ...`; a terminating error propagates as LabError."""
        result = Result()
        piped: list[Any] | None = None
        for name, args in stages:
            spec = self.registry.command(name, self.session)
            produced: list[Any] = []
            inputs = [None] if piped is None else piped
            for obj in inputs:
                params = bind(spec, args, input_object=obj, has_input=piped is not None)
                call = CommandCall(name=spec.name, params=params, session=self.session)
                try:
                    spec.handler(call)
                finally:
                    result.errors.extend(call.errors)
                    produced.extend(call.output)
            piped = produced
        result.output = piped or []
        return result

    def one(self, name: str, *args: tuple[str | None, Any]) -> Any:
        """Run one command; return its single output value (or None), failing on non-terminating errors."""
        result = self.run((name, list(args)))
        assert not result.errors, [e.message for e in result.errors]
        assert len(result.output) <= 1, result.output
        return result.output[0] if result.output else None
