"""The coexistence step's decision, as data: each tests/steps/coexistence/<case>.json gives a server (version, source
or target), its virtual directories' facts and the playbook's coexistence section; the test checks the commands sent
(or the no-op and its reason, or the one-line error) and the values recorded before the change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.coexistence import UrlChange, VdirFact, decide, undo
from orchestrator.commands import Command, Null, Text
from orchestrator.decision import Noop, Send
from orchestrator.errors import ExmigError
from orchestrator.playbook import Coexistence

CASES = sorted((Path(__file__).parent / "coexistence").glob("*.json"))


def shown(command: Command) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in command.params:
        assert isinstance(p.value, (Text, Null)), p
        params[str(p.name)] = p.value.value if isinstance(p.value, Text) else None
    return {"cmdlet": command.name, "params": params}


def load(case: dict[str, Any]) -> tuple[dict[str, VdirFact | None], Coexistence]:
    facts = {k: None if v is None else VdirFact(k, v["identity"], v["internal_url"], v["external_url"])
             for k, v in case["facts"].items()}
    return facts, Coexistence.model_validate(case["coexistence"])


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_coexistence_decision(path: Path) -> None:
    case = json.loads(path.read_text())
    facts, spec = load(case)
    if "error" in case:
        with pytest.raises(ExmigError) as err:
            decide(case["server"], case["version"], case["is_source"], facts, spec)
        assert str(err.value) == case["error"]
        return
    plan = decide(case["server"], case["version"], case["is_source"], facts, spec)
    if "noop" in case:
        assert plan.decision == Noop(case["noop"]) and plan.changes == ()
        return
    assert isinstance(plan.decision, Send)
    assert [[shown(c) for c in pipeline] for pipeline in plan.decision.pipelines] == case["send"]
    assert all(c.changes and c.affects == frozenset({"virtual_directories"}) for c in plan.decision.commands)
    assert [{k: v for k, v in vars(c).items() if k != "server"} for c in plan.changes] == case["changes"]
    assert {c.server for c in plan.changes} == {case["server"]}
    # The recorded values undo it: each property back to what it was, last change first.
    restore = undo(plan.changes)
    assert isinstance(restore, Send)
    assert [shown(p[0])["params"]["ExternalUrl"] for p in restore.pipelines] == \
        [c["before"] for c in reversed(case["changes"])]
    # Applying the change makes the next decision a no-op (a second run is 0 changed).
    after = dict(facts)
    for change in plan.changes:
        old = after[change.service]
        assert old is not None
        after[change.service] = VdirFact(old.service, old.identity, old.internal_url, change.after)
    assert isinstance(decide(case["server"], case["version"], case["is_source"], after, spec).decision, Noop)


def test_undo_of_nothing() -> None:
    assert undo([]) == Noop("the coexistence step changed nothing")
    change = UrlChange("EX2007", "owa", "Set-OwaVirtualDirectory", "EX2007\\owa (Default Web Site)", "ExternalUrl",
                       None, "https://legacy.mitserv.net/owa")
    restore = undo([change])
    assert isinstance(restore, Send)
    assert restore.commands[0].param("ExternalUrl") == Null()
