"""Names in use, as data: each tests/steps/names/<case>.json gives a server's version, what its Get- cmdlets answered
(as the client receives it), the certificate's names and services and certificate.uncovered_ok; the test checks the
declared reads and the problem lines of the coverage check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.commands import Text
from orchestrator.names_in_use import coverage, playbook_coverage, playbook_problems, reads, render_table, uncovered
from orchestrator.playbook import UncoveredOk, load_playbook
from orchestrator.transport.base import RemoteObject
from tests.conftest import ROOT

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


def rows_of(case: dict[str, Any]) -> list[Any]:
    return [row for r in reads(case["server"], case["version"])
            for row in r.parse([remote(o) for o in case["outputs"].get(r.command.name, [])])]


def test_playbook_problems_use_each_servers_services_and_the_accepted_names() -> None:
    """The coexistence fixture playbook over a fresh 2007 target and a configured 2010 source: the 2007 FQDN and the
    2010 NetBIOS IMAP name are accepted there, so only EX2010's uncovered ECP URL stops the run; with the 2007
    server serving IIS only its connectors no longer count either way."""
    loaded = load_playbook(ROOT / "tests" / "fixtures" / "playbooks" / "coexistence.yml")
    fresh_2007 = json.loads((Path(__file__).parent / "names" / "2007_fresh_install.json").read_text())
    wildcard_2010 = json.loads((Path(__file__).parent / "names" / "2010_wildcard_and_netbios.json").read_text())
    rows = {"EX2007": rows_of(fresh_2007), "EX2010": rows_of(wildcard_2010)}
    problems = playbook_problems(loaded.playbook, rows)
    assert [p.split(":", 1)[0] for p in problems] == ["EX2010"] * len(problems)
    assert any("ECP ExternalUrl uses owa.ex2010.mitserv.net" in p for p in problems)
    assert not any("IMAP X509CertificateName uses ex2010 " in p for p in problems)
    judged = playbook_coverage(loaded.playbook, rows)
    assert [c.row.server for c in judged] == ["EX2010"] * len(rows["EX2010"]) + ["EX2007"] * len(rows["EX2007"])
    assert {c.status for c in judged if c.row.server == "EX2007"} == {"accepted", "no_tls"}
