"""Names in use, as data: each tests/steps/names/<case>.json gives a server's version, what its Get- cmdlets answered
(as the client receives it), the certificate's names and services and certificate.uncovered_ok; the test checks the
declared reads and the problem lines of the coverage check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.commands import Text
from orchestrator.names_in_use import coverage, reads, render_table, uncovered
from orchestrator.playbook import UncoveredOk
from orchestrator.transport.base import RemoteObject

CASES = sorted((Path(__file__).parent / "names").glob("*.json"))


def remote(obj: dict[str, Any]) -> RemoteObject:
    return RemoteObject(types=obj["types"], props=obj["props"])


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_names_in_use(path: Path) -> None:
    case = json.loads(path.read_text())
    declared = reads(case["server"], case["version"])
    shown = [[r.command.name, {p.name: p.value.value for p in r.command.params if isinstance(p.value, Text)}]
             for r in declared]
    assert shown == case["reads"]
    assert all(not r.command.changes for r in declared)  # reads only: nothing before the request changes a server
    rows = [row for r in declared for row in r.parse([remote(o) for o in case["outputs"].get(r.command.name, [])])]
    accepted = [UncoveredOk(**a) for a in case["uncovered_ok"]]
    assert uncovered(rows, case["domains"], case["services"], accepted) == case["problems"]
    table = render_table(coverage(rows, case["domains"], case["services"], accepted))
    # The table lists every name read, one line each, and marks exactly the reported ones NOT COVERED.
    assert len(table.splitlines()) == len(rows) + 1
    assert table.count("NOT COVERED") == len(case["problems"])
    if "table" in case:
        assert table.splitlines() == case["table"]


def test_cases_cover_both_versions() -> None:
    versions = {json.loads(p.read_text())["version"] for p in CASES}
    assert versions == {2007, 2010}
