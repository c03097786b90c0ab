"""`exmig run --check`: what it prints is what the next run sends, and it changes nothing (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab, build_lab


def _reads(command: str) -> bool:
    """A request of reads only (the facts a run gathers: every Get- cmdlet, Test-Path)."""
    return all(n.startswith("Get-") or n == "Test-Path" for n in command.split(" + "))
# What a server can be asked that changes nothing (the lab's cmdlet log holds every name it ran): the Get- cmdlets,
# Test-Path, the 2007 snap-in and the export, which only reads.
HARMLESS = {"Test-Path", "Add-PSSnapin", "Export-ExchangeCertificate"}


def harmless(names: list[str]) -> bool:
    return all(n.startswith("Get-") or n in HARMLESS for n in names)


def check(lab: Lab) -> list[dict[str, Any]]:
    proc = lab.exmig("run", str(lab.playbook_path), "--check", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout)["steps"])


def checked_requests(steps: list[dict[str, Any]]) -> dict[str, list[tuple[tuple[str, tuple[str, ...]], ...]]]:
    """Per server, each request a decision would send: its commands with their parameter names, in order."""
    out: dict[str, list[tuple[tuple[str, tuple[str, ...]], ...]]] = {}
    for step in steps:
        for request in step["requests"]:
            out.setdefault(step["server"], []).append(tuple(
                (c["command"], tuple(p["name"] or "" for p in c["parameters"])) for c in request))
    return out


def sent_requests(events: list[dict[str, Any]]) -> dict[str, list[tuple[tuple[str, tuple[str, ...]], ...]]]:
    """Per server, each request the run sent beyond the reads, as the --json command events name it."""
    out: dict[str, list[tuple[tuple[str, tuple[str, ...]], ...]]] = {}
    for e in events:
        if e["event"] != "command" or _reads(e["command"]):
            continue
        names = e["command"].split(" + ")
        out.setdefault(e["server"], []).append(tuple(zip(names, (tuple(p) for p in e["parameters"]), strict=True)))
    return out


def ran_on(lab: Lab) -> dict[str, list[str]]:
    return {name: list(server.winrm.registry.ran) for name, server in lab.site.servers.items()}


@pytest.mark.parametrize("powershell", ["2.0", "5.1"])
def test_check_lists_what_the_run_sends_then_nothing(tmp_path: Path, powershell: str) -> None:
    lab = build_lab(tmp_path, windows_powershell=powershell)
    try:
        before = ran_on(lab)
        planned = check(lab)
        # The check sent reads only: no modifying cmdlet reached any server.
        for name, ran in ran_on(lab).items():
            assert harmless(ran[len(before[name]):]), (name, ran[len(before[name]):])
        assert any(s["action"] == "send" and s["changes"] for s in planned)

        proc, events = lab.run_json()
        assert proc.returncode == 0, proc.stderr
        # Same cmdlets, same servers, same order, same parameter names; requests grouped as the check said.
        assert sent_requests(events) == checked_requests(planned)

        again = check(lab)
        assert all(s["action"] in ("nothing", "reads-only", "workstation") for s in again), [
            (s["server"], s["step"], s["reason"]) for s in again if s["action"] == "send"]
        text = lab.exmig("run", str(lab.playbook_path), "--check")
        assert text.returncode == 0 and "nothing to do on any server" in text.stdout
    finally:
        lab.site.stop()


def test_check_after_a_partial_run_equals_what_the_resuming_run_sends(lab: Lab) -> None:
    first, _ = lab.run_json("--server", "EX2010", "--server", "workstation")
    assert first.returncode == 0, first.stderr
    planned = check(lab)
    # Only the target changes; the source sends its export again (the PFX is held in memory only).
    assert {s["server"] for s in planned if s["changes"]} == {"EX2007"}
    assert [s["step"] for s in planned if s["server"] == "EX2010" and s["action"] == "send"] == ["export"]
    proc, events = lab.run_json()
    assert proc.returncode == 0, proc.stderr
    assert sent_requests(events) == checked_requests(planned)
