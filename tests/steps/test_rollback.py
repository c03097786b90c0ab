"""Issue 18: the rollback decision, case by case (tests/steps/rollback/*.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.previous import held
from orchestrator.rollback import RollbackImpossible, rollback

from .cases import cases, outcome, server


@pytest.mark.parametrize("case", cases("rollback"))
def test_rollback_case(case: dict[str, Any]) -> None:
    backups = {t: Path(p) for t, p in case.get("backups", {}).items()}

    def decide() -> dict[str, Any]:
        return outcome(rollback(server(case["server"]), iter(held(case["certificates"])), case["before"], case["presented_now"],
                                backups=backups))

    expect = case["expect"]
    if "refused" in expect:
        with pytest.raises(RollbackImpossible) as refused:
            decide()
        assert str(refused.value) == expect["refused"]
        return
    assert decide() == expect
