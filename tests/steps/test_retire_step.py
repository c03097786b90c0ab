"""The retire step as the executor asks it (orchestrator/steps.py decide) and verify's rollback: the reads it needs,
what it knows from the run (the journal's record, this run's Enable -Force making the new certificate the default
SMTP one), and that what it sends is what the plan shows (issue 18)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator import reads
from orchestrator.decision import Noop, Send
from orchestrator.journal import Journal, load
from orchestrator.plan import BranchName, Facts, StepName, build_plan
from orchestrator.playbook import Playbook, SecretRef, load_playbook
from orchestrator.previous import held
from orchestrator.reads import ServerFacts
from orchestrator.rollback import RollbackImpossible
from orchestrator.steps import Need, RunState, decide, rollback_decision

HERE = Path(__file__).parent
PLAYBOOK = HERE.parents[1] / "playbooks" / "lab.yml"


def _case(name: str) -> dict[str, Any]:
    return json.loads((HERE / "retire" / f"{name}.json").read_text())


def _playbook(**flags: Any) -> Playbook:
    return load_playbook(PLAYBOOK).playbook.model_copy(
        update={"retire_previous": True, "backup_password": SecretRef(env="X"), **flags})


def _step(playbook: Playbook, server: str, name: StepName = StepName.RETIRE) -> Any:
    return next(s for s in build_plan(playbook, Facts()).steps if s.server == server and s.name is name)


def _facts(case: dict[str, Any]) -> ServerFacts:
    return ServerFacts(held=tuple(held(case["certificates"])), presented=case["presented_now"],
                       fresh=frozenset({reads.HELD, reads.PRESENTED}))


def _run(playbook: Playbook, case: dict[str, Any], enabled: bool = True) -> RunState:
    server = case["server"]
    return RunState(playbook, thumbprint=case["new"], previous={server: case["before"]},
                    finished=frozenset({f"{server}:enable"}) if enabled else frozenset())


@pytest.mark.parametrize("name", ["backed_up_then_removed_2010", "backed_up_then_removed_2007"])
def test_the_step_sends_the_plans_commands_after_fresh_reads(name: str) -> None:
    case = _case(name)
    playbook = _playbook()
    step = _step(playbook, case["server"])
    asked = decide(step, ServerFacts(), _run(playbook, case))
    assert isinstance(asked, Need) and asked.fresh
    assert {r.name for r in asked.reads} == {reads.HELD, reads.PRESENTED}
    decision = decide(step, _facts(case), _run(playbook, case))
    assert isinstance(decision, Send), decision
    planned = {c.name for c in (*step.reads, *step.commands, *(c for b in step.branches for c in b.commands))}
    assert {c.name for c in decision.commands} <= planned
    assert [c.name for c in decision.commands][-1] == "Remove-ExchangeCertificate"
    assert all(len(p) == 1 for p in decision.pipelines)  # the backup is written between two requests


def test_without_this_runs_enable_the_default_smtp_certificate_is_unknown_and_nothing_goes() -> None:
    case = _case("backed_up_then_removed_2010")
    playbook = _playbook()
    decision = decide(_step(playbook, "EX2010"), _facts(case), _run(playbook, case, enabled=False))
    assert isinstance(decision, Noop) and "default SMTP certificate is not known" in decision.reason


def test_nothing_recorded_nothing_retired() -> None:
    case = _case("backed_up_then_removed_2010")
    playbook = _playbook()
    run = RunState(playbook, thumbprint=case["new"], finished=frozenset({"EX2010:enable"}))
    decision = decide(_step(playbook, "EX2010"), _facts(case), run)
    assert isinstance(decision, Noop) and "nothing is recorded as serving before" in decision.reason


def test_the_step_is_planned_only_with_retire_previous_and_rollback_only_with_rollback_on_failure() -> None:
    plain = load_playbook(PLAYBOOK).playbook
    assert StepName.RETIRE not in {s.name for s in build_plan(plain).steps}
    assert all(not s.branches for s in build_plan(plain).steps if s.name is StepName.VERIFY)
    names = [(s.server, s.name) for s in build_plan(_playbook(rollback_on_failure=True)).steps]
    for server in ("EX2010", "EX2007"):
        assert names.index((server, StepName.RETIRE)) == names.index((server, StepName.VERIFY)) + 1
    verify = _step(_playbook(rollback_on_failure=True), "EX2007", StepName.VERIFY)
    [branch] = verify.branches
    assert branch.name is BranchName.ROLLBACK
    assert [c.name for c in branch.commands][-1] == "Enable-ExchangeCertificate"
    assert "Import-ExchangeCertificate" in [c.name for c in branch.commands]


def test_rollback_without_a_record_says_so() -> None:
    playbook = _playbook()
    server = playbook.server("EX2007")
    with pytest.raises(RollbackImpossible, match="EX2007: the journal holds no record of what served before"):
        rollback_decision(server, ServerFacts(), RunState(playbook), {})


def test_rollback_enables_the_recorded_certificate_for_the_playbooks_services() -> None:
    case = _case("backed_up_then_removed_2010")
    playbook = _playbook()
    server = playbook.server("EX2010")
    before = case["before"]["services"]["IIS"]
    decision = rollback_decision(server, _facts(case), _run(playbook, case), {})
    assert isinstance(decision, Send)
    [enable] = decision.commands
    assert enable.name == "Enable-ExchangeCertificate" and enable.param("Thumbprint").value == before


def test_old_journals_load_and_the_first_record_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "j.json"
    path.write_text(json.dumps({"format": 1, "playbook": "p.yml", "steps": {}, "runs": []}))  # before issue 18
    journal = load(path, Path("p.yml"))
    assert journal.previous == {}
    assert journal.record_previous("EX2010", {"services": {"IIS": "AA"}})
    assert not journal.record_previous("EX2010", {"services": {"IIS": "BB"}})
    again: Journal = load(path, Path("p.yml"))
    assert again.previous == {"EX2010": {"services": {"IIS": "AA"}}}


def test_nothing_is_retired_until_every_endpoint_presents_the_new_certificate() -> None:
    case = _case("backed_up_then_removed_2010")
    playbook = _playbook()
    facts = _facts(case)
    for down in ({"smtp": None}, {"https": case["before"]["services"]["IIS"]}):
        decision = decide(_step(playbook, "EX2010"), replace(facts, presented={**case["presented_now"], **down}),
                          _run(playbook, case))
        assert isinstance(decision, Noop) and "is not verified over TLS" in decision.reason, decision
