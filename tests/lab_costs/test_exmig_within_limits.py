"""exmig against servers that cost what real ones cost and enforce their limits: it stays within WinRM 2.0's and
Exchange's quotas, and a shell the server deleted for idleness is reopened without repeating any change."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from orchestrator.lab.costs import REALISTIC, LabLimits
from tests.e2e.conftest import build_lab
from tests.labstate import site_state

SCALE = 0.02  # the realistic profile fifty times faster: a 3 s Exchange session open takes 60 ms


def _run(lab, *args: str) -> tuple[int, list[dict]]:  # type: ignore[no-untyped-def]
    proc = lab.exmig("run", str(lab.playbook_path), "--yes", "--json", *args)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_a_realistic_migration_stays_within_the_servers_limits(tmp_path: Path) -> None:
    lab = build_lab(tmp_path, site_options={"costs": replace(REALISTIC, scale=SCALE), "limits": LabLimits()})
    try:
        code, events = _run(lab)
        assert code == 0, [e for e in events if e.get("event") in ("failed", "error")]
        for name, emulated in lab.site.servers.items():
            peaks = emulated.winrm.peaks
            limits = emulated.winrm.limits
            assert limits.max_shells_per_user is not None and limits.exchange_max_sessions is not None
            assert limits.max_operations_per_user is not None
            assert 1 <= peaks["shells"] <= 2 < limits.max_shells_per_user, (name, peaks)
            assert peaks["exchange_sessions"] <= 1 and peaks["operations"] <= 2, (name, peaks)
            assert not any(r.wsman_fault == 2150859173 for r in emulated.winrm.log.records()), name
    finally:
        lab.site.stop()


def test_a_shell_deleted_for_idleness_is_reopened_without_repeating_a_change(tmp_path: Path) -> None:
    # EX2007's session is opened with everybody's at the start, then waits while EX2010 does the request,
    # completes, enables and exports (seconds at these costs): longer than the idle timeout.
    reference = build_lab(tmp_path / "reference")
    try:
        assert _run(reference)[0] == 0
        expected = site_state(reference.site)
    finally:
        reference.site.stop()
    # Only EX2007's: the source's own gaps between its two endpoints are shorter but not by much.
    lab = build_lab(tmp_path / "idle", site_options={"costs": replace(REALISTIC, scale=0.25),
                                                     "limits": {"EX2007": LabLimits(idle_timeout=1.0)}})
    try:
        code, events = _run(lab)
        assert code == 0, [e for e in events if e.get("event") in ("failed", "error")]
        ex2007 = lab.server("EX2007").winrm.log.records()
        # The server answered "shell not found" (2150858843) once the shell was gone; exmig opened a new one.
        assert any(r.wsman_fault == 2150858843 for r in ex2007)
        assert any(e["event"] == "retry" and e["server"] == "EX2007" for e in events)
        assert site_state(lab.site) == expected  # one certificate, one import, nothing twice
        imports = [e for e in events if e.get("event") == "command" and e.get("server") == "EX2007"
                   and "Import-ExchangeCertificate" in e.get("command", "").split(" + ")]
        assert len(imports) == 1
    finally:
        lab.site.stop()
