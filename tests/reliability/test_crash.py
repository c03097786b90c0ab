"""Crash-resume in the middle of a step: the real CLI is SIGKILLed while the lab holds one of the step's
requests (a short stall), then run again; the end state is the fault-free one, nothing is duplicated or
lost, and the journal the kill left is whole. (Kills at step boundaries: tests/e2e/test_resume.py.)

Default run: the middle request of every step that changes something. With -m sweep: every request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.exchange import EXCHANGE_CONFIGURATION
from orchestrator.lab.faults import FaultKind, FaultRule
from orchestrator.lab.registry import CommandCall, Session
from tests.conftest import ROOT
from tests.reliability.conftest import FIGURES
from tests.reliability.harness import (
    CaseResult,
    Figures,
    InProcessLab,
    LabTemplate,
    Reference,
    checked_requests,
    data_lost,
    duplicates,
    local_pfx_files,
    record_step_ranges,
    sent_requests,
)

HOLD_SECONDS = 1.0  # the stall that holds the step open while the process is killed
# EX2007's enable sends nothing of its own: its Enable rides in the import's request (on the lab's PowerShell
# 2.0 hosts too, through the dispatcher script, since issue 19), so a kill inside the import covers it.
CHANGING_STEPS = {("EX2010", "request"), ("EX2010", "install-chain"), ("EX2010", "complete"), ("EX2010", "enable"),
                  ("EX2010", "export"), ("EX2007", "install-chain"), ("EX2007", "copy"), ("EX2007", "import"),
                  ("EX2007", "cleanup")}


@pytest.fixture(scope="session")
def step_ranges(lab_template: LabTemplate) -> list[tuple[str, str, int, int]]:
    return record_step_ranges(lab_template)


def kill_at(template: LabTemplate, reference: Reference, server: str, index: int,
            prepare: Callable[[InProcessLab], None] | None = None) -> CaseResult:
    """SIGKILL `exmig run` while `server` holds its request `index`; resume with a second run at once.

    The case's kind names the step the journal shows as interrupted ("not reached": the run ended
    before request `index`, which happens when a run needs a request less than the reference did)."""
    start = time.monotonic()
    lab = template.instantiate()
    try:
        if prepare is not None:
            prepare(lab)
        lab.set_fault(server, FaultRule(FaultKind.STALL, request=index, seconds=HOLD_SECONDS))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")} | {"PYTHONPATH": str(ROOT)} \
            | lab.client_env()
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(lab.loaded.path), "--yes", "--json",
                                 "--no-verify"], cwd=lab.tmp, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        killed = False
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if lab.fired(server):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        lab.wait_quiet(server)  # the held request completes server-side after the client died
        errors: list[str] = []
        interrupted = "not reached"
        if lab.journal_path.exists():
            journal = json.loads(lab.journal_path.read_text())
            assert journal["format"] == 1  # whole: the atomic replace never leaves half a file
            running = [k for k, v in journal["steps"].items() if v["outcome"] == "running"]
            if killed:
                interrupted = ", ".join(running) or "between steps"
        # What `run --check` says now is exactly what the resuming run sends (issue 15).
        planned = checked_requests(lab.check())
        resumed = lab.run()
        if resumed.error is not None:
            errors.append(f"resume failed: {resumed.error}")
        elif sent_requests(resumed.events) != planned:
            errors.append(f"--check said {planned}, the resuming run sent {sent_requests(resumed.events)}")
        state = lab.state()
        result = CaseResult(server=server, index=index, kind=f"sigkill in {interrupted}", fired=killed,
                            action=lab.faulted_request(server), restarts=1,
                            converged=resumed.error is None and state == reference.state and not errors,
                            duplicates=duplicates(lab), data_lost=data_lost(lab), errors=errors)
        if local_pfx_files(lab.tmp):
            result.data_lost.append("a PFX was left on the workstation's disk")
        leftovers = list((lab.tmp / ".exmig").glob(".*.tmp"))
        if leftovers:
            result.errors.append(f"temp journal files left: {leftovers}")
            result.converged = False
        result.seconds = time.monotonic() - start
        return result
    finally:
        lab.stop()


def _check(results: list[CaseResult]) -> None:
    figures = FIGURES.setdefault("crash", Figures())
    for result in results:
        figures.add(result)
    failures = [r.describe() for r in results if not r.ok]
    assert not failures, "\n".join(failures)


def test_killed_in_the_middle_of_each_changing_step(lab_template: LabTemplate, reference: Reference,
                                                    step_ranges: list[tuple[str, str, int, int]]) -> None:
    cases = [(server, (first + last) // 2) for server, step, first, last in step_ranges
             if (server, step) in CHANGING_STEPS]
    assert len(cases) == len(CHANGING_STEPS)
    results = [kill_at(lab_template, reference, server, index) for server, index in cases]
    _check(results)
    # The kills landed inside steps (the journal names the interrupted one), most of them different.
    hit = {r.kind for r in results}
    assert all(r.fired and ":" in r.kind for r in results), [r.kind for r in results]
    assert len(hit) >= 8, hit


@pytest.mark.sweep
@pytest.mark.parametrize("server", ["EX2010", "EX2007"])
def test_killed_at_every_request(lab_template: LabTemplate, reference: Reference,
                                 step_ranges: list[tuple[str, str, int, int]], server: str) -> None:
    _check([kill_at(lab_template, reference, server, index) for index in range(1, reference.requests[server] + 1)])


def test_killed_while_the_server_makes_the_request(lab_template: LabTemplate, reference: Reference) -> None:
    # Killed while New-ExchangeCertificate runs on a slow server; restarted at once. The restart's re-read
    # came before the request existed and made a second one (found by the crash sweep at EX2010's
    # New-ExchangeCertificate Command); now a step an earlier run was killed in re-reads for a while.
    number = sum(1 for e in reference.events if e.get("event") == "command" and e.get("server") == "EX2010"
                 and e["command"] == "New-ExchangeCertificate")
    assert number == 1

    def slow_key_generation(lab: InProcessLab) -> None:
        registry = lab.site.servers["EX2010"].winrm.registry
        spec = registry.command("New-ExchangeCertificate", Session(EXCHANGE_CONFIGURATION, "test"))

        def slow(call: CommandCall, inner: Any = spec.handler) -> None:
            time.sleep(1.5)
            inner(call)

        registry.register(replace(spec, handler=slow))

    command = reference.command_number("EX2010", "New-ExchangeCertificate")
    index = _request_index(reference, "EX2010", "Command", command)
    result = kill_at(lab_template, reference, "EX2010", index, prepare=slow_key_generation)
    assert result.fired and result.action == "Command", result.describe()
    assert result.ok, result.describe()


def _request_index(reference: Reference, server: str, action: str, occurrence: int) -> int:
    """The HTTP request number of the `occurrence`-th request with this WSMan action in the reference run."""
    seen = 0
    for number, name in enumerate(reference.actions[server], start=1):
        if name == action:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{server} has no {action} #{occurrence}")


def test_the_journal_survives_a_kill_during_its_own_write(tmp_path: Path) -> None:
    # Kill a process that rewrites the journal in a tight loop: whatever instant the kill lands on,
    # the file is the old or the new journal, never a mix.
    from orchestrator.journal import load

    path = tmp_path / "j.json"
    code = ("import sys; from pathlib import Path; from orchestrator.journal import Journal\n"
            "j = Journal(path=Path(sys.argv[1]), playbook='p.yml', csr_pem='x' * 200000)\n"
            "i = 0\n"
            "while True:\n"
            "    i += 1; j.runs = [{'n': i}]; j.save()\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for delay in (0.3, 0.35, 0.4, 0.45, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if path.exists():
            journal = load(path, Path("p.yml"))
            assert journal.csr_pem == "x" * 200000
