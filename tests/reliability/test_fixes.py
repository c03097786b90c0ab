"""Focused tests for what the fault sweep found (each failed before its fix)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.commands import Command, Param, Text
from orchestrator.connect import session_spec
from orchestrator.lab.exchange import EXCHANGE_CONFIGURATION
from orchestrator.lab.faults import FaultKind, FaultRule
from orchestrator.lab.registry import CommandCall, Session
from orchestrator.transport.base import TransientError
from orchestrator.transport.psrp import ConnectionSettings, PsrpServerSession
from tests.reliability.harness import (
    STALL_SECONDS,
    LabTemplate,
    Reference,
    data_lost,
    duplicates,
)


def _commands(events: list[dict], server: str, name: str) -> list[str]:
    """Outcomes of the requests that carried `name` (a pipeline's event names its commands "A + B")."""
    return [e["outcome"] for e in events if e["event"] == "command" and e["server"] == server
            and name in e["command"].split(" + ")]


@pytest.mark.parametrize("server", ["EX2010", "EX2007"])
def test_lost_reply_of_certutil_leaves_no_intermediate_file(lab_template: LabTemplate, reference: Reference,
                                                           tmp_path: Path, server: str) -> None:
    # certutil ran (the CA store has the intermediate); its reply was lost before Remove-Item. The retry
    # sees the store done and used to stop there, leaving C:\Certs\intermediate-*.cer behind.
    lab = lab_template.instantiate(tmp_path / "run")
    try:
        lab.set_fault(server, FaultRule(FaultKind.RESET_AFTER, request=1, cmdlet="certutil.exe"))
        outcome = lab.run()
        assert outcome.error is None, outcome.error
        assert lab.fired(server)
        assert lab.state() == reference.state
        assert lab.state()[server]["files"] == []
    finally:
        lab.stop()


def test_a_request_stalled_beyond_the_read_timeout_is_not_made_twice(lab_template: LabTemplate,
                                                                    reference: Reference, tmp_path: Path) -> None:
    # The Command carrying New-ExchangeCertificate arrives late: the client has given up, retried and re-read the server before the stalled request
    # acts. Without deleting the abandoned shell, both requests were made: two pending requests.
    lab = lab_template.instantiate(tmp_path / "run")
    try:
        number = reference.command_number("EX2010", "New-ExchangeCertificate")
        lab.set_fault("EX2010", FaultRule(FaultKind.STALL, request=number, action="Command", seconds=STALL_SECONDS))
        outcome = lab.run()
        assert outcome.error is None, outcome.error
        assert lab.wait_quiet("EX2010")
        assert _commands(outcome.events, "EX2010", "New-ExchangeCertificate") == ["transient-error", "ok"]
        assert duplicates(lab) == 0
        assert not data_lost(lab)
        assert lab.state() == reference.state
    finally:
        lab.stop()


def test_a_command_whose_output_went_to_an_abandoned_receive_is_given_up(lab_template: LabTemplate,
                                                                        tmp_path: Path) -> None:
    # pypsrp re-sends a Receive that hit the read timeout; when the late one took the output, the new
    # one gets OperationTimeout forever and pypsrp polls forever. The transport bounds that.
    lab = lab_template.instantiate(tmp_path / "run")
    try:
        server = lab.loaded.playbook.source
        emulated = lab.site.servers[server.name]
        settings = ConnectionSettings(host="127.0.0.1", auth="ntlm", username=emulated.username,
                                      password=emulated.password, verify_tls=False, operation_timeout=1,
                                      read_timeout=3, idle_polls=3, receive_retry_backoff=2.5)
        session = PsrpServerSession(session_spec(server), settings)
        # Pool opening: Create + Receive; the command's first Receive is the second one.
        emulated.winrm.faults.set_rules([FaultRule(FaultKind.STALL, request=2, action="Receive", seconds=5.0)])
        start = time.monotonic()
        with pytest.raises(TransientError, match="outcome is unknown") as caught:
            session.invoke(Command("Get-ExchangeCertificate", (Param("Server", Text(server.name)),),
                                   changes=False), values=None)  # type: ignore[arg-type]
        assert caught.value.reopen
        assert time.monotonic() - start < 30
        session.reopen()
        session.close()
    finally:
        lab.stop()


def test_the_playbook_timeouts_reach_pypsrp(lab_template: LabTemplate) -> None:
    # A comment once swallowed operation_timeout/read_timeout in the WSMan call: every run then used
    # pypsrp's 20 s/30 s whatever the playbook said (and a stall cost 30 s per retry).
    server = lab_template.playbook.source
    settings = ConnectionSettings(host="127.0.0.1", auth="ntlm", username="u", password="p", verify_tls=True,
                                  operation_timeout=1, read_timeout=3)
    wsman = PsrpServerSession(session_spec(server), settings)._wsman(server.exchange_endpoint)
    assert (wsman.operation_timeout, wsman.transport.read_timeout) == (1, 3)


def test_a_lost_reply_while_the_server_still_makes_the_request_is_not_made_twice(
        lab_template: LabTemplate, reference: Reference, tmp_path: Path) -> None:
    # The reply to New-ExchangeCertificate's Command is lost (reset after the server started it); the
    # server is slow to generate the key. The retry's re-read came before the request existed and made a
    # second one (found by the full sweep, EX2010 request 15 reset_after, now and then).
    lab = lab_template.instantiate(tmp_path / "run")
    try:
        registry = lab.site.servers["EX2010"].winrm.registry
        spec = registry.command("New-ExchangeCertificate", Session(EXCHANGE_CONFIGURATION, "test"))

        def slow(call: CommandCall, inner: Any = spec.handler) -> None:
            time.sleep(1.5)  # a slow key generation
            inner(call)

        registry.register(replace(spec, handler=slow))
        number = reference.command_number("EX2010", "New-ExchangeCertificate")
        lab.set_fault("EX2010", FaultRule(FaultKind.RESET_AFTER, request=number, action="Command"))
        outcome = lab.run()
        assert outcome.error is None, outcome.error
        assert lab.fired("EX2010")
        time.sleep(2.0)  # any late request would have landed by now
        assert _commands(outcome.events, "EX2010", "New-ExchangeCertificate") == ["transient-error"]
        assert duplicates(lab) == 0
        assert lab.state() == reference.state
    finally:
        lab.stop()


def test_a_lost_reply_of_the_pfx_cleanup_is_not_removed_twice(lab_template: LabTemplate, reference: Reference,
                                                               tmp_path: Path) -> None:
    # The cleanup's Remove-Item ran but its reply was lost; the retry skipped the Test-Path (this run
    # wrote the file) and removed again: "Cannot find path", a failed run (found by the sweep after the
    # round-trip savings of 6f05c00: EX2007 http_503 on that Receive).
    lab = lab_template.instantiate(tmp_path / "run")
    try:
        # EX2007's first Remove-Item is install-chain's intermediate file; the second is the PFX.
        lab.set_fault("EX2007", FaultRule(FaultKind.RESET_AFTER, request=2, cmdlet="Remove-Item"))
        outcome = lab.run()
        assert outcome.error is None, outcome.error
        assert lab.fired("EX2007")
        assert _commands(outcome.events, "EX2007", "Remove-Item") == ["ok", "transient-error"]
        assert lab.state() == reference.state
    finally:
        lab.stop()
