"""exmig's own bounds: however many sessions it opens to one server (as one user), it holds no more shells and
runs no more operations at once than the server allows, so the lab's quota faults never fire; and with the
server's idle timeout known, a shell is replaced before the server deletes it (no fault, no retry)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.commands import Command
from orchestrator.connect import session_spec
from orchestrator.lab.costs import REALISTIC, LabLimits
from orchestrator.lab.site import EmulatedServer, LabSite
from orchestrator.playbook import Server, load_playbook
from orchestrator.transport.base import TransientError
from orchestrator.transport.limits import Limits
from orchestrator.transport.psrp import ConnectionSettings, PsrpServerSession
from tests.e2e.conftest import LAB_PLAYBOOK, build_lab
from tests.labstate import site_state

QUOTA_FAULT = 2150859173  # WSMan QuotaLimit
SHELL_GONE = 2150858843
LIST = Command("Get-ExchangeCertificate", (), changes=False)


@contextmanager
def _ex2007(tmp: Path, limits: LabLimits) -> Iterator[tuple[Server, EmulatedServer]]:
    playbook = load_playbook(LAB_PLAYBOOK).playbook
    site = LabSite(playbook, tmp / "lab", use_playbook_ports=False, costs=replace(REALISTIC, scale=0.02),
                   limits={"EX2007": limits})
    site.start()
    try:
        yield site.playbook_for_lab().server("EX2007"), site.servers["EX2007"]
    finally:
        site.stop()


def _session(server: Server, emulated: EmulatedServer, limits: Limits, wait: float = 30.0) -> PsrpServerSession:
    settings = ConnectionSettings(host="127.0.0.1", auth="ntlm", username=emulated.username,
                                  password=emulated.password, verify_tls=False, operation_timeout=5,
                                  read_timeout=15, limits=limits, limit_wait=wait)
    return PsrpServerSession(session_spec(server), settings)


def test_no_more_shells_than_the_server_allows(tmp_path: Path) -> None:
    with _ex2007(tmp_path, LabLimits(max_shells_per_user=1)) as (server, emulated):
        first, second = (_session(server, emulated, Limits(shells=1), wait=0.5) for _ in range(2))
        try:
            assert first.invoke(LIST, values=None).output  # type: ignore[arg-type]
            with pytest.raises(TransientError, match="all 1 shells"):
                second.invoke(LIST, values=None)  # type: ignore[arg-type]
            first.close()
            assert second.invoke(LIST, values=None).output  # type: ignore[arg-type]  # room again
        finally:
            first.close()
            second.close()
        assert emulated.winrm.peaks["shells"] == 1
        assert not any(r.wsman_fault == QUOTA_FAULT for r in emulated.winrm.log.records())
        # Without exmig's bound the same two sessions meet the server's refusal.
        loose = [_session(server, emulated, Limits(shells=10)) for _ in range(2)]
        try:
            loose[0].invoke(LIST, values=None)  # type: ignore[arg-type]
            with pytest.raises(Exception, match="(?i)quota|shells"):
                loose[1].invoke(LIST, values=None)  # type: ignore[arg-type]
        finally:
            for s in loose:
                s.close()


def test_no_more_concurrent_operations_than_the_server_allows(tmp_path: Path) -> None:
    with _ex2007(tmp_path, LabLimits(max_operations_per_user=2)) as (server, emulated):
        sessions = [_session(server, emulated, Limits(operations=2)) for _ in range(4)]
        failures: list[BaseException] = []

        def work(session: PsrpServerSession) -> None:
            try:
                for _ in range(3):
                    session.invoke(LIST, values=None)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        finally:
            for s in sessions:
                s.close()
        assert failures == []
        assert 1 <= emulated.winrm.peaks["operations"] <= 2, emulated.winrm.peaks
        assert not any(r.wsman_fault == QUOTA_FAULT for r in emulated.winrm.log.records())


def test_a_shell_is_replaced_before_the_server_deletes_it_for_idleness(tmp_path: Path) -> None:
    """The playbook says the servers' idle timeout (limits.idle_timeout, as the lab's): EX2007's session, idle
    while EX2010 requests, completes, enables and exports, is replaced before it is deleted."""

    def idle(playbook):  # type: ignore[no-untyped-def]
        return playbook.model_copy(update={"limits": playbook.limits.model_copy(update={"idle_timeout": 1.0})})

    lab = build_lab(tmp_path, mutate=idle, site_options={"costs": replace(REALISTIC, scale=0.25),
                                                         "limits": {"EX2007": LabLimits(idle_timeout=1.0)}})
    try:
        proc = lab.exmig("run", str(lab.playbook_path), "--yes", "--json")
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert proc.returncode == 0, proc.stderr
        ex2007 = lab.server("EX2007").winrm.log.records()
        assert not any(r.wsman_fault == SHELL_GONE for r in ex2007)
        assert not any(e["event"] == "retry" for e in events)
        assert lab.server("EX2007").winrm.log.count("Create") >= 2  # a new shell, opened by exmig itself
        imports = [e for e in events if e.get("event") == "command" and e.get("server") == "EX2007"
                   and "Import-ExchangeCertificate" in e["command"].split(" + ")]
        assert len(imports) == 1
        assert "EX2007" in site_state(lab.site)
    finally:
        lab.site.stop()
