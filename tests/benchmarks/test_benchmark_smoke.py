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
    # take several statements per pipeline (PSRP 2.2+). Stock PowerShell 2.0 hosts now batch too, through the
    # dispatcher script on their FullLanguage endpoints (issue 19): as few requests as WMF 5.1 hosts (only
    # 2010's no-language Exchange endpoint keeps one command per pipeline), 3x below the naive script.
    assert by["exmig"]["requests"] <= 1.25 * minimum, (by["exmig"]["requests"], minimum)
    assert by["naive"]["requests"] >= 3 * by[EXMIG_WMF5]["requests"], (by["naive"]["requests"],
                                                                        by[EXMIG_WMF5]["requests"])
    # Issue 19: stock PowerShell 2.0 hosts at least 3x fewer than naive too (a Receive either way is timing).
    assert by["naive"]["requests"] >= 3 * by["exmig"]["requests"], (by["naive"]["requests"], by["exmig"]["requests"])
    assert abs(by[EXMIG_WMF5]["requests"] - by["exmig"]["requests"]) <= 2
    assert by["exmig"]["requests"] < minimum < by["naive"]["requests"]
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


def test_realistic_costs_show_where_the_time_goes(tmp_path: Path) -> None:
    """Part 4 at 1/100 of the realistic costs and no added latency: the breakdown comes from the lab's counters,
    and a 2007 target over WinRS starts fewer processes than one per command."""
    from benchmarks import realistic

    ca = LabCA.load_or_create(tmp_path / "ca")
    rows = realistic.migration(ca, tmp_path, [0], 0.01,
                               clients=(realistic.MINIMUM, realistic.WINRS, realistic.WINRS_PER_COMMAND))
    by = {r["client"]: r for r in rows}
    winrs = by[realistic.WINRS]["servers"][by[realistic.WINRS]["target"]]
    per_command = by[realistic.WINRS_PER_COMMAND]["servers"][by[realistic.WINRS_PER_COMMAND]["target"]]
    assert 0 < winrs["processes"] < per_command["processes"], (winrs, per_command)
    assert winrs["process_starts"] < per_command["process_starts"]
    source = by[realistic.MINIMUM]["servers"]["EX2010"]
    assert source["pools"] == 2 and source["session_opens"] > 0 and source["cmdlet_work"] > 0
    assert all(s["quota_faults"] == 0 for r in rows for s in r["servers"].values())
    assert "| 0 ms | minimum |" in realistic.migration_table(rows, 0.01)
