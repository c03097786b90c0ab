"""`exmig rehearse --previous-certificate` (issue 18): the migration over servers that still hold the certificate
that served before, and the IIS binding fault that a verify after enable must catch."""

from __future__ import annotations

from pathlib import Path

from orchestrator.lab.exchange import ExchangeServerModel, ServerInspector
from orchestrator.lab.exchange.previous import PREVIOUS_FRIENDLY_NAME

from .test_real_server_behaviour import rehearse


def _view(keep: Path, name: str, version: str) -> ServerInspector:
    return ServerInspector(ExchangeServerModel.load_or_create(keep / name, name=name, version=version, fqdn="x"))


def _previous(view: ServerInspector) -> str:
    [thumb] = [e.thumbprint for e in view.model.entries("My") if e.friendly_name == PREVIOUS_FRIENDLY_NAME]
    return thumb


def test_the_migration_takes_over_every_service_from_the_previous_certificate(tmp_path: Path) -> None:
    keep = tmp_path / "lab"
    code, events, stderr = rehearse("playbooks/lab.yml", "--previous-certificate", keep=keep)
    assert code == 0, stderr
    served = set()
    for name, version in (("EX2010", "2010"), ("EX2007", "2007")):
        view = _view(keep, name, version)
        serving = set(view.serving().values())
        assert len(serving) == 1 and _previous(view) not in serving, (name, view.serving())
        served |= serving
        assert len(view.thumbprints("My")) == 3  # new, previous (not retired: retire_previous is off), own
    assert len(served) == 1  # the same new certificate on both servers


def test_the_binding_fault_fails_verify_on_that_server(tmp_path: Path) -> None:
    keep = tmp_path / "lab"
    code, events, stderr = rehearse("playbooks/lab.yml", "--previous-certificate", "--enable-keeps-iis-binding",
                                    "EX2007", keep=keep)
    assert code != 0
    errors = [x for x in stderr.splitlines() if x.startswith("exmig: error:")]
    assert errors and errors[0].startswith("exmig: error: EX2007: certificate ") and errors[0].endswith(
        ": not enabled for IIS"), errors
    view = _view(keep, "EX2007", "2007")
    previous = _previous(view)
    assert view.serving()["https"] == previous and view.serving()["smtp"] != previous
    assert _previous(_view(keep, "EX2010", "2010")) not in _view(keep, "EX2010", "2010").serving().values()
