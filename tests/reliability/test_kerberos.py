"""The fault sample and crash-resume over Kerberos: every server `auth: kerberos` against the lab's MIT realm,
so every reconnect after a fault is a new Kerberos handshake (a new service ticket and authenticator) that
the server must accept, and NTLM never gets in on Exchange 2010's /PowerShell."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.lab.faults import FaultKind, FaultRule
from tests.kerberos.conftest import require_kerberos
from tests.kerberos.helpers import to_kerberos
from tests.reliability.harness import (
    KINDS,
    Figures,
    LabTemplate,
    Reference,
    data_lost,
    duplicates,
    record_reference,
    record_step_ranges,
    run_case,
)
from tests.reliability.test_crash import _check as check_crash
from tests.reliability.test_crash import kill_at
from tests.reliability.test_sweep import _check

PER_KIND = 2


@pytest.fixture(scope="module")
def kerberos_template(tmp_path_factory: pytest.TempPathFactory) -> LabTemplate:
    require_kerberos()
    return LabTemplate(Path(tmp_path_factory.mktemp("reliability-kerberos")), mutate=to_kerberos)


@pytest.fixture(scope="module")
def kerberos_reference(kerberos_template: LabTemplate) -> Reference:
    return record_reference(kerberos_template)


@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
def test_sample_over_kerberos(kerberos_template: LabTemplate, kerberos_reference: Reference, figures: Figures,
                              kind: FaultKind) -> None:
    count = kerberos_reference.requests["EX2010"]
    per = 1 if kind is FaultKind.STALL else PER_KIND
    offset = 3 + 4 * KINDS.index(kind)
    indices = sorted({(offset + m * (count // per) - 1) % count + 1 for m in range(per)})
    results = [run_case(kerberos_template, kerberos_reference.state, "EX2010", k, kind) for k in indices]
    _check(results, figures)
    assert any(r.fired for r in results)


def test_a_reconnect_authenticates_again_with_kerberos(kerberos_template: LabTemplate,
                                                       kerberos_reference: Reference) -> None:
    """A reset in the middle of the run: the client reopens its pools on new connections, each with a new
    Kerberos exchange; the server accepts them (no replay), and nothing on /PowerShell is NTLM."""
    lab = kerberos_template.instantiate()
    try:
        middle = kerberos_reference.requests["EX2010"] // 2
        lab.set_fault("EX2010", FaultRule(kind=FaultKind.RESET_AFTER, request=middle))
        outcome = lab.run()
        assert outcome.error is None, outcome.error
        assert lab.fired("EX2010") and outcome.retries >= 1
        assert lab.state() == kerberos_reference.state and duplicates(lab) == 0 and not data_lost(lab)
        records = lab.site.servers["EX2010"].winrm.log.records()
        handshakes = {r.connection for r in records if r.mechanism == "kerberos"}
        assert len(handshakes) >= 2, "the reconnect did not authenticate a new connection"
        exchange = [r for r in records if r.path.lower() == "/powershell" and r.action]
        assert exchange and all(r.mechanism == "kerberos" and r.encrypted for r in exchange)
        assert not any(r.mechanism == "ntlm" for r in records if r.path.lower() == "/powershell")
    finally:
        lab.stop()
        shutil.rmtree(lab.tmp, ignore_errors=True)


def test_killed_in_the_middle_of_steps_over_kerberos(kerberos_template: LabTemplate,
                                                     kerberos_reference: Reference) -> None:
    ranges = record_step_ranges(kerberos_template)
    wanted = {("EX2010", "request"), ("EX2010", "complete"), ("EX2007", "import")}
    cases = [(server, (first + last) // 2) for server, step, first, last in ranges if (server, step) in wanted]
    assert len(cases) == len(wanted)
    results = [kill_at(kerberos_template, kerberos_reference, server, index) for server, index in cases]
    check_crash(results)
    assert all(r.fired for r in results)
