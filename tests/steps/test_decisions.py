"""Step decisions as data (as pyinfra tests its operations): one JSON file per branch of a step's decision.

tests/steps/<step>/<case>.json holds
  server:    EX2010 (the 2010 source), EX2007 (a 2007 target) or EX2010B (a 2010 target)
  facts:     what the server's reads returned (certificates, stores, paths, batches); absent: not read
  run:       what the run knows and did (thumbprint, csr, requested_now, imported_now, ...)
  attempt:   {maybe_changed, settled} for a retried step
  expect:    {"send": [[command or [command, [parameter names]]...] per request], "effects": [...]}
             | {"noop": "words of the reason", "changed_by": ...} | {"need": [read names], "settle": bool}
             | {"error": "words of the message"}
and one parametrized test runs them all through orchestrator.steps.decide.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.checks import CertInfo
from orchestrator.commands import Shell
from orchestrator.decision import Noop, Send
from orchestrator.errors import ExmigError
from orchestrator.plan import Facts, IntermediateFact, StepName, build_plan
from orchestrator.playbook import Playbook, Role, load_playbook
from orchestrator.reads import ServerFacts, Stores
from orchestrator.steps import Attempt, Need, RunState, decide

HERE = Path(__file__).parent
PLAYBOOK = HERE.parents[1] / "playbooks" / "lab.yml"
# A step's folder whose cases have their own format and test module (tests/steps/test_retire.py) is theirs.
STEP_DIRS = {s.value for s in StepName} - {p.stem.removeprefix("test_") for p in HERE.glob("test_*.py")}
CASES = sorted(p for p in HERE.glob("*/*.json") if p.parent.name in STEP_DIRS)
INTERMEDIATE = "1111111111111111111111111111111111111111"


def _playbook() -> Playbook:
    playbook = load_playbook(PLAYBOOK).playbook
    source = playbook.source
    second = source.model_copy(update={"name": "EX2010B", "role": Role.TARGET, "client_names": None})
    return playbook.model_copy(update={"servers": [*playbook.servers, second]})


def _certificate(data: dict[str, Any]) -> CertInfo:
    services = data.get("services")
    return CertInfo(
        thumbprint=data["thumbprint"], status=data.get("status", "Valid"), has_private_key=data.get("key", True),
        services=None if services is None else frozenset(services), subject=data.get("subject"),
        public_key_der=None, domains=tuple(data.get("domains", ())), common_name=data.get("cn"),
    )


def _facts(data: dict[str, Any]) -> ServerFacts:
    certs = data.get("certificates")
    stores = data.get("stores")
    return ServerFacts(
        certificates=None if certs is None else tuple(_certificate(c) for c in certs),
        stores=None if stores is None else Stores(tuple(stores.get("ca", ())), ()),
        paths=dict(data.get("paths", {})),
        batches=frozenset(Shell(b) for b in data.get("batches", ())),
        fresh=frozenset(data.get("fresh", ())),
    )


def _run(playbook: Playbook, data: dict[str, Any]) -> RunState:
    def names(key: str) -> frozenset[str]:
        return frozenset(data.get(key, ()))

    return RunState(
        playbook, csr_pem=data.get("csr"), thumbprint=data.get("thumbprint"),
        intermediates=(INTERMEDIATE,) if data.get("thumbprint") else (),
        requested_now=names("requested_now"), imported_now=names("imported_now"), enabled_now=names("enabled_now"),
        pfx_written=names("pfx_written"), previously_done=names("previously_done"), interrupted=names("interrupted"),
        pfx_held=data.get("pfx_held", False), pfx_wanted=data.get("pfx_wanted", True),
        enable_pending=names("enable_pending"),
    )


def _sent(send: Send, with_parameters: bool) -> list[list[Any]]:
    return [[[c.name, [p.name or "" for p in c.params]] if with_parameters else c.name for c in pipeline]
            for pipeline in send.pipelines]


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_decision(case: Path) -> None:
    data = json.loads(case.read_text())
    playbook = _playbook()
    run = _run(playbook, data.get("run", {}))
    facts_for_plan = Facts(issued_thumbprint=run.thumbprint, issued_file="ca.cer", intermediates=(
        IntermediateFact(INTERMEDIATE, "CN=Lab Intermediate", "ca.cer", None, b"0"),) if run.thumbprint else ())
    plan = build_plan(playbook, facts_for_plan)
    step = next(s for s in plan.steps if s.server == data["server"] and s.name.value == case.parent.name)
    attempt = Attempt(**data.get("attempt", {}))
    expect = data["expect"]
    if "error" in expect:
        with pytest.raises(ExmigError, match=expect["error"]):
            decide(step, _facts(data.get("facts", {})), run, attempt)
        return
    decision = decide(step, _facts(data.get("facts", {})), run, attempt)
    if "send" in expect:
        assert isinstance(decision, Send), decision
        with_parameters = any(isinstance(c, list) for p in expect["send"] for c in p)
        assert _sent(decision, with_parameters) == expect["send"]
        assert sorted(decision.effects) == sorted(expect.get("effects", [])), decision.effects
        assert decision.outcome == expect.get("outcome", "changed")
    elif "noop" in expect:
        assert isinstance(decision, Noop), decision
        assert expect["noop"] in decision.reason
        assert decision.changed_by == expect.get("changed_by")
    else:
        assert isinstance(decision, Need), decision
        assert [r.name for r in decision.reads] == expect["need"]
        assert decision.settle == expect.get("settle", False)


def test_every_step_has_cases() -> None:
    covered = {p.parent.name for p in CASES}
    assert covered >= STEP_DIRS - {StepName.ISSUE.value}, STEP_DIRS - covered
