"""The benchmark itself, small: its migration part (no added latency) and a 3-target fan-out, with the lab
in this process. Request counts do not depend on load, so the issue's request targets are checked here;
wall-time targets stay in `python -m benchmarks.run` (BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.labfarm import LabFarm
from benchmarks.run import EXMIG_WMF5, fanout, migration, migration_table
from orchestrator.lab.ca import LabCA


def test_migration_requests_against_the_minimum_and_the_naive_script(tmp_path: Path) -> None:
    rows = migration(LabCA.load_or_create(tmp_path / "ca"), tmp_path, [0], LabFarm)
    by = {r["client"]: r for r in rows}
    assert set(by) == {"exmig", EXMIG_WMF5, "naive", "minimum"}
    minimum = sum(s["minimum"] for s in by["minimum"]["servers"].values())
    # Issue 8: at most 1.25x the protocol minimum; at least 3x fewer than the naive script where the hosts
    # take several statements per pipeline (PSRP 2.2+). Stock PowerShell 2.0 hosts cannot reach 3x: the
    # one-command-per-pipeline minimum itself is only about 2.6x below the naive script.
    assert by["exmig"]["requests"] <= 1.25 * minimum, (by["exmig"]["requests"], minimum)
    assert by["naive"]["requests"] >= 3 * by[EXMIG_WMF5]["requests"], (by["naive"]["requests"],
                                                                        by[EXMIG_WMF5]["requests"])
    assert by[EXMIG_WMF5]["requests"] < by["exmig"]["requests"] < by["naive"]["requests"]
    assert "| 0 ms | naive |" in migration_table(rows)


def test_fanout_keeps_per_target_counts(tmp_path: Path) -> None:
    rows = fanout(LabCA.load_or_create(tmp_path / "ca"), tmp_path, [3], 0, ["default"], LabFarm)
    assert {r["client"] for r in rows} == {"exmig", EXMIG_WMF5}
    for row in rows:
        assert row["parallel"] == 3 and row["default_parallel"]
        # Every target got its own whole deployment (22 requests at the least, batched): the same count on
        # each, give or take a Receive that timing decides.
        assert row["per_target_min"] >= 22, row
        assert row["per_target_max"] - row["per_target_min"] <= 1, row
