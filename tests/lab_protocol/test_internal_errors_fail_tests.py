"""A lab bug cannot pass the suite: a handler exception (which the lab answers as an error record, or a 500
that exmig would retry) fails the test that met it, even after the shell was closed (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

pytest_plugins = ["pytester"]

INNER_CONFTEST = "from tests.conftest import _no_lab_internal_error, _watch_lab_servers  # noqa: F401\n"

INNER_TESTS = '''
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from orchestrator.lab.registry import CommandSpec, Registry
from orchestrator.lab.server import LabServer


def _buggy(call):
    raise KeyError("a lab bug")


def _serve(registry):
    registry.register(CommandSpec("Invoke-LabBug", _buggy))
    registry.register(CommandSpec("Get-LabFine", lambda call: call.write("fine")))
    return LabServer("EX1", registry, {"admin": "Pw-1234567"}, configurations=["Microsoft.PowerShell"],
                     allow_unencrypted=True).start()


def _call(srv, cmdlet):
    wsman = WSMan("127.0.0.1", port=srv.port, path="wsman", ssl=False, auth="basic", username="admin",
                  password="Pw-1234567", encryption="never")
    with RunspacePool(wsman) as pool:  # the shell is deleted when the pool closes
        ps = PowerShell(pool)
        ps.add_cmdlet(cmdlet)
        ps.invoke()
        return ps


def test_meets_a_lab_bug():
    srv = _serve(Registry())
    try:
        ps = _call(srv, "Invoke-LabBug")
        assert ps.had_errors  # the client saw an ordinary error record; only the lab knows it was a bug
    finally:
        srv.stop()


def test_meets_no_lab_bug():
    srv = _serve(Registry())
    try:
        assert not _call(srv, "Get-LabFine").had_errors
    finally:
        srv.stop()
'''


def test_a_lab_internal_error_fails_the_test_that_met_it(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_meets_a_lab_bug*", "the lab recorded 1 internal error(s)*",
                                 "*KeyError: 'a lab bug'"])
