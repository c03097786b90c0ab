"""Issue 9's acceptance: the fault sweep's sample on a 2007 target reached over WinRS (pywinrm), not PSRP."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.lab.faults import FaultKind
from orchestrator.playbook import Playbook
from tests.reliability.harness import KINDS, Figures, LabTemplate, Reference, record_reference, run_case
from tests.reliability.test_sweep import _check

PER_KIND = 2  # each WinRS run costs more requests (one shell command per cmdlet); keep the default run short


def on_winrs(playbook: Playbook) -> Playbook:
    servers = [s.model_copy(update={"connection": s.connection.model_copy(update={"transport": "winrs"})})
               if s.version == 2007 else s for s in playbook.servers]
    return playbook.model_copy(update={"servers": servers})


@pytest.fixture(scope="module")
def winrs_template(tmp_path_factory: pytest.TempPathFactory) -> LabTemplate:
    return LabTemplate(Path(tmp_path_factory.mktemp("reliability-winrs")), mutate=on_winrs)


@pytest.fixture(scope="module")
def winrs_reference(winrs_template: LabTemplate) -> Reference:
    return record_reference(winrs_template)


@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
def test_sample_on_the_winrs_target(winrs_template: LabTemplate, winrs_reference: Reference, figures: Figures,
                                    kind: FaultKind) -> None:
    count = winrs_reference.requests["EX2007"]
    per = 1 if kind is FaultKind.STALL else PER_KIND
    offset = 2 + 5 * KINDS.index(kind)
    indices = sorted({(offset + m * (count // per) - 1) % count + 1 for m in range(per)})
    results = [run_case(winrs_template, winrs_reference.state, "EX2007", k, kind) for k in indices]
    _check(results, figures)
    assert any(r.fired for r in results)
