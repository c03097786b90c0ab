"""WinRS fixtures: labs from playbooks/lab-winrs.yml (or lab.yml for the PSRP reference) on ports chosen at
run time, and in-process migration runs (a subprocess per run would cost seconds of start-up)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import journal as journal_mod
from orchestrator.connect import session_factory
from orchestrator.events import JsonEvents
from orchestrator.execute import Executor, RunOptions
from orchestrator.lab.exshell import ExShell
from orchestrator.lab.site import EmulatedServer, LabSite
from orchestrator.playbook import LabIssuer, LoadedPlaybook, Playbook, RetryPolicy, load_playbook
from orchestrator.secrets_store import SecretStore
from tests.conftest import ROOT
from tests.e2e.conftest import write_playbook

WINRS_PLAYBOOK = ROOT / "playbooks" / "lab-winrs.yml"
PSRP_PLAYBOOK = ROOT / "playbooks" / "lab.yml"
# Short timeouts and quick backoff: an injected fault costs a fraction of a second, not minutes.
FAST_RETRY = RetryPolicy(attempts=8, max_seconds=60, initial_backoff=0.05, max_backoff=0.5,
                         operation_timeout=1, read_timeout=3)


@dataclass
class RunResult:
    error: BaseException | None
    events: list[dict[str, Any]]
    secrets: list[str]  # every secret value the run held (PFX password, server passwords)


@dataclass
class InProcessLab:
    site: LabSite
    loaded: LoadedPlaybook
    tmp: Path

    def server(self, name: str) -> EmulatedServer:
        return self.site.servers[name]

    def exshell(self, name: str = "EX2007") -> ExShell:
        spec = self.server(name).winrm.registry.native("powershell.exe")
        assert spec is not None and isinstance(spec.handler, ExShell)
        return spec.handler

    def run(self, options: RunOptions | None = None) -> RunResult:
        """One `exmig run`, as a fresh process would do it: new journal object, secrets and sessions."""
        journal = journal_mod.load(self.tmp / ".exmig" / "lab.journal.json", self.loaded.path)
        secrets = SecretStore(self.loaded.playbook, interactive=False)
        out = io.StringIO()
        events = JsonEvents(out)
        executor = Executor(self.loaded, journal, session_factory(self.loaded, secrets), secrets, events,
                            options or RunOptions())
        error: BaseException | None = None
        try:
            executor.run()
        except Exception as exc:  # noqa: BLE001 - judged by the test
            error = exc
        events.finish()
        parsed = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
        return RunResult(error, parsed, secrets.all_values())


def start_lab(tmp: Path, source: Path = WINRS_PLAYBOOK,
              mutate: Callable[[Playbook], Playbook] | None = None) -> InProcessLab:
    playbook = load_playbook(source).playbook.model_copy(update={"retry": FAST_RETRY})
    if mutate is not None:
        playbook = mutate(playbook)
    site = LabSite(playbook, tmp / "lab-state", use_playbook_ports=False).start()
    try:
        lab_playbook = site.playbook_for_lab().model_copy(
            update={"issuer": LabIssuer(type="lab", ca_dir=str(site.state_dir / "ca"))})
        loaded = load_playbook(write_playbook(lab_playbook, tmp / "lab.yml"))
    except BaseException:
        site.stop()
        raise
    return InProcessLab(site, loaded, tmp)


@pytest.fixture
def winrs_lab(tmp_path: Path) -> Iterator[InProcessLab]:
    lab = start_lab(tmp_path)
    try:
        yield lab
    finally:
        lab.site.stop()


def wait_quiet(lab: InProcessLab, name: str, seconds: float = 15.0) -> None:
    """Let the faulted request finish server-side (a stalled one acts late) before the state is read:
    the request log gets its record when the reply is done."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not lab.server(name).winrm.log.faults():
        time.sleep(0.05)
