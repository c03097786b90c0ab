"""`exmig rollback`'s refusals: one line naming the journal and the servers, before any connection (issue 18)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT

LAB = ROOT / "playbooks" / "lab.yml"


def test_without_a_record_nothing_is_rolled_back(exmig: Callable, tmp_path: Path) -> None:
    state = tmp_path / "journal.json"
    result = exmig("rollback", LAB, "--state", state, "--yes")
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        f"exmig: error: {state}: no record of what served EX2010, EX2007 before (a run records it before its first "
        "change); nothing to roll back to there"]


def test_a_record_for_one_server_is_not_enough_for_another(exmig: Callable, tmp_path: Path) -> None:
    state = tmp_path / "journal.json"
    state.write_text(json.dumps({"format": 1, "playbook": str(LAB), "previous": {"EX2010": {"services": {}}}}))
    result = exmig("rollback", LAB, "--state", state, "--server", "EX2007", "--yes")
    assert result.code == 2 and "no record of what served EX2007 before" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_without_a_terminal_it_asks_for_yes(exmig: Callable, tmp_path: Path) -> None:
    state = tmp_path / "journal.json"
    state.write_text(json.dumps({"format": 1, "playbook": str(LAB), "previous": {"EX2010": {}, "EX2007": {}}}))
    result = exmig("rollback", LAB, "--state", state)
    assert result.code == 2 and "add --yes" in result.err


def test_an_unknown_server_is_named(exmig: Callable) -> None:
    result = exmig("rollback", LAB, "--server", "EX2013", "--yes")
    assert result.code == 2 and "EX2013" in result.err and len(result.err.strip().splitlines()) == 1
