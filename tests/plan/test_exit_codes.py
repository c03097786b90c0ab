"""Several failed targets: the most specific exit code they share, one line per server."""

from __future__ import annotations

from orchestrator.errors import ExitCode, ExmigError
from orchestrator.execute import TargetsFailed
from orchestrator.steps import VerifyFailed
from orchestrator.transport.base import RemoteError


def test_only_verifications_exit_4_anything_else_with_them_exits_1() -> None:
    verifies = [("EX2007-02", VerifyFailed("EX2007-02: certificate AB not found")),
                ("EX2007-01", VerifyFailed("EX2007-01: certificate AB: no private key"))]
    both = TargetsFailed(verifies, 3)
    assert both.exit_code is ExitCode.VERIFY_FAILED
    assert str(both).splitlines() == ["2 of 3 targets failed:", "  EX2007-01: certificate AB: no private key",
                                      "  EX2007-02: certificate AB not found"]
    mixed = TargetsFailed([verifies[0], ("EX2007-03", RemoteError("EX2007-03", "New-Item", "exists"))], 3)
    assert mixed.exit_code is ExitCode.FAILED
    plain = TargetsFailed([("EX2007-03", ExmigError("the PFX bytes are not available yet")), verifies[1]], 3)
    assert str(plain).splitlines()[2] == "  EX2007-03: the PFX bytes are not available yet"
    assert plain.exit_code is ExitCode.FAILED
