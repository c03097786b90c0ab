"""Issue 18: the retire decision, case by case (tests/steps/retire/*.json)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.previous import held
from orchestrator.retire import RetireOptions, RetireRefused, backup_capture, retire

from .cases import cases, outcome, server


@pytest.mark.parametrize("case", cases("retire"))
def test_retire_case(case: dict[str, Any]) -> None:
    def decide() -> dict[str, Any]:
        return outcome(retire(server(case["server"]), iter(held(case["certificates"])), case["before"], case["new"],
                              case["presented_now"], RetireOptions(**case["options"]),
                              default_smtp=case["default_smtp"], backed_up=case.get("backed_up", ())))

    expect = case["expect"]
    if "refused" in expect:
        with pytest.raises(RetireRefused) as refused:
            decide()
        assert str(refused.value) == expect["refused"]
        return
    assert decide() == expect


def test_the_backup_is_kept_by_the_executor_between_export_and_removal() -> None:
    [case] = [c.values[0] for c in cases("retire") if c.id == "backed_up_then_removed_2010"]
    decision = retire(server("EX2010"), held(case["certificates"]), case["before"], case["new"], case["presented_now"],
                      RetireOptions(), default_smtp=case["default_smtp"])
    export, remove = decision.pipelines  # type: ignore[union-attr]
    # The removal is a request of its own, after the one whose output the executor writes to disk.
    assert export[0].capture == backup_capture(case["before"]["services"]["IIS"]) and remove[0].capture is None
    assert not export[0].changes and remove[0].changes
