"""The PSRP transport's batches against the lab's 2007 server: the snap-in as the first statement of the
session's first pipeline, and a fresh session after a batch whose snap-in state is unknown."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.commands import Command, Param, Shell, Switch, Text
from orchestrator.connect import session_spec
from orchestrator.lab.site import EmulatedServer, LabSite
from orchestrator.playbook import Server, load_playbook
from orchestrator.transport.base import RemoteError
from orchestrator.transport.psrp import ConnectionSettings, PsrpServerSession
from tests.e2e.conftest import LAB_PLAYBOOK

LIST = Command("Get-ExchangeCertificate", (), changes=False)
FOLDER = Command("New-Item", (Param("Path", Text("C:\\Batch")), Param("ItemType", Text("Directory")),
                              Param("Force", Switch())), shell=Shell.SYSTEM)
PROBE = Command("Test-Path", (Param("Path", Text("C:\\Batch")),), shell=Shell.SYSTEM, changes=False)


@contextmanager
def _lab_2007(tmp: Path, powershell: str) -> Iterator[tuple[str, Server, EmulatedServer]]:
    playbook = load_playbook(LAB_PLAYBOOK).playbook
    site = LabSite(playbook, tmp / "lab", use_playbook_ports=False)
    site.settings = replace(site.settings, windows_powershell=powershell)
    site.start()
    try:
        yield powershell, site.playbook_for_lab().server("EX2007"), site.servers["EX2007"]
    finally:
        site.stop()


@pytest.fixture(params=["2.0", "5.1"])
def ex2007(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Server, EmulatedServer]]:
    with _lab_2007(tmp_path, request.param) as lab:
        yield lab


def _session(server: Server, emulated: EmulatedServer) -> PsrpServerSession:
    settings = ConnectionSettings(host="127.0.0.1", auth="ntlm", username=emulated.username,
                                  password=emulated.password, verify_tls=False, operation_timeout=5,
                                  read_timeout=15)
    return PsrpServerSession(session_spec(server), settings)


def test_the_snapin_rides_on_the_first_pipeline(ex2007: tuple[str, Server, EmulatedServer]) -> None:
    powershell, server, emulated = ex2007
    session = _session(server, emulated)
    try:
        emulated.winrm.log.clear()
        assert session.can_batch(Shell.EXCHANGE)  # opens the session; 2.0 through the dispatcher script
        certs = session.invoke(LIST, values=None)  # type: ignore[arg-type]  # no blobs or secrets here
        assert certs.output  # the lab's 2007 server has its self-signed certificate
        # One pipeline for Add-PSSnapin and the cmdlet (2.0: both in the dispatcher's -Commands).
        assert emulated.winrm.log.count("Command") == 1
        out = session.invoke_batch((FOLDER, PROBE), values=None)  # type: ignore[arg-type]
        assert out.output[-1] is True  # Test-Path ran after New-Item, in the same pipeline
        assert emulated.winrm.log.count("Command") == 2
    finally:
        session.close()


def test_a_failed_first_pipeline_starts_a_new_session(tmp_path: Path) -> None:
    """Whether the snap-in got in with a failed first pipeline is unknown: the next command gets a new
    session (and the snap-in again) instead of a second Add-PSSnapin's 'already added' error."""
    for powershell in ("2.0", "5.1"):
        with _lab_2007(tmp_path / powershell, powershell) as (_, server, emulated):
            _fresh_session_after_failure(server, emulated)


def _fresh_session_after_failure(server: Server, emulated: EmulatedServer) -> None:
    session = _session(server, emulated)
    try:
        emulated.winrm.log.clear()
        bad = Command("Get-ExchangeCertificate", (Param("Thumbprint", Text("00" * 20)),), changes=False)
        with pytest.raises(RemoteError):
            session.invoke(bad, values=None)  # type: ignore[arg-type]
        assert session.invoke(LIST, values=None).output  # type: ignore[arg-type]
        assert emulated.winrm.log.count("Create") == 2
    finally:
        session.close()


def test_one_exchange_key_pair_per_process(tmp_path: Path) -> None:
    """Every pool's SecureString key exchange uses the process's one RSA pair (no 2048-bit generation per
    target); the migration tests show the SecureStrings still reach the servers intact."""
    import pypsrp.powershell

    from orchestrator.transport import psrp

    with _lab_2007(tmp_path, "2.0") as (_, server, emulated):
        sessions = [_session(server, emulated), _session(server, emulated)]
        try:
            pools = [s._pool(server.exchange_endpoint)[1] for s in sessions]
            for pool in pools:
                pool.exchange_keys()
            shared = pypsrp.powershell.rsa
            assert isinstance(shared, psrp._RunKeyPair)
            assert len(shared._keys) == 1
            assert all(p._key_exchanged for p in pools)
        finally:
            for s in sessions:
                s.close()
