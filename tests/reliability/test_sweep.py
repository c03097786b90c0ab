"""The fault sweep: one fault at one request of a fault-free 2010 -> 2007 migration, for every request of
both servers and every fault kind; each run must converge to the fault-free end state (the servers'
stores, services and files) with retries alone or after one restart, with no duplicate and nothing lost.

Default run: a deterministic sample (every kind at a spread of indices on both servers).
`pytest -m sweep tests/reliability` (or EXMIG_SWEEP=1): every index.
"""

from __future__ import annotations

import pytest

from orchestrator.lab.faults import FaultKind
from tests.reliability.harness import KINDS, Figures, LabTemplate, Reference, run_case

SERVERS = ("EX2010", "EX2007")
SAMPLE_PER_KIND = {kind: 4 for kind in KINDS} | {FaultKind.STALL: 2}  # a stall run costs ~5 s


def sample_indices(count: int, kind: FaultKind) -> list[int]:
    """A spread of request numbers, shifted per kind so that together the kinds hit different requests."""
    per = SAMPLE_PER_KIND[kind]
    offset = 1 + 3 * KINDS.index(kind)
    step = max(1, count // per)
    return sorted({(offset + m * step - 1) % count + 1 for m in range(per)})


def _check(results: list, figures: Figures) -> None:
    for result in results:
        figures.add(result)
    failures = [r.describe() for r in results if not r.ok]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
@pytest.mark.parametrize("server", SERVERS)
def test_sample(lab_template: LabTemplate, reference: Reference, figures: Figures, server: str,
                kind: FaultKind) -> None:
    indices = sample_indices(reference.requests[server], kind)
    results = [run_case(lab_template, reference.state, server, k, kind) for k in indices]
    _check(results, figures)
    assert any(r.fired for r in results)


@pytest.mark.sweep
@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
@pytest.mark.parametrize("server", SERVERS)
def test_every_request(lab_template: LabTemplate, reference: Reference, figures: Figures, server: str,
                       kind: FaultKind) -> None:
    results = [run_case(lab_template, reference.state, server, k, kind)
               for k in range(1, reference.requests[server] + 1)]
    _check(results, figures)


def test_sample_covers_both_servers_and_every_kind() -> None:
    for kind in KINDS:
        picked = sample_indices(44, kind)
        assert len(picked) == SAMPLE_PER_KIND[kind] and all(1 <= k <= 44 for k in picked)
    assert sample_indices(44, FaultKind.RESET_BEFORE) != sample_indices(44, FaultKind.RESET_AFTER)
