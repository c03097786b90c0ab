"""Decision cases as data: JSON files beside the tests, and the plain form their expected commands take."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.commands import (
    Blob,
    Command,
    Flag,
    LocalFile,
    Number,
    Secret,
    Switch,
    Text,
    TextList,
    Thumbprint,
    Value,
)
from orchestrator.decision import Decision, Noop, Send
from orchestrator.playbook import Server, load_playbook

HERE = Path(__file__).resolve().parent
LAB_PLAYBOOK = HERE.parents[1] / "playbooks" / "lab.yml"


def cases(folder: str) -> list[Any]:
    import pytest

    return [pytest.param(json.loads(p.read_text()), id=p.stem) for p in sorted((HERE / folder).glob("*.json"))]


def server(name: str) -> Server:
    return load_playbook(LAB_PLAYBOOK).playbook.server(name)


def plain_value(value: Value) -> Any:
    if isinstance(value, Text):
        return value.value
    if isinstance(value, TextList):
        return list(value.values)
    if isinstance(value, Switch):
        return value.present
    if isinstance(value, Flag):
        return value.value
    if isinstance(value, Number):
        return value.value
    if isinstance(value, Secret):
        return f"<secret {value.key}>"
    if isinstance(value, Thumbprint):
        return value.value
    if isinstance(value, Blob) and isinstance(value.origin, LocalFile):
        return f"<file {value.origin.path}>"
    raise AssertionError(f"no plain form for {value!r}")


def plain(command: Command) -> list[Any]:
    return [command.name, {p.name: plain_value(p.value) for p in command.params}]


def outcome(decision: Decision) -> dict[str, Any]:
    if isinstance(decision, Noop):
        return {"noop": decision.reason}
    assert isinstance(decision, Send)
    return {"send": [[plain(c) for c in pipeline] for pipeline in decision.pipelines], "reason": decision.reason}
