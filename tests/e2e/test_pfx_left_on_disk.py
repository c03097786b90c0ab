"""A PFX that cannot be removed from a 2007 disk after a failed import is the cleanup step's failure:
reported, journaled, and removed by the next run."""

from __future__ import annotations

import json
from dataclasses import replace

from orchestrator.lab.registry import CommandCall, ErrorCategory, LabError, Session
from tests.e2e.conftest import Lab, file_exists

PFX = "C:\\Certs\\mail.mitserv.net.pfx"
SNAPIN = "Microsoft.Exchange.Management.PowerShell.Admin"


def _failing(lab: Lab, cmdlet: str, message: str, only_pfx: bool = False) -> object:
    """EX2007's cmdlet fails (terminating error; with only_pfx: on the PFX file only) until the returned
    original is registered again."""
    registry = lab.server("EX2007").winrm.registry
    spec = registry.command(cmdlet, Session(configuration="Microsoft.PowerShell", username="lab", snapins={SNAPIN}))

    def handler(call: CommandCall) -> None:
        paths = call.params.get("Path") or []
        if only_pfx and not any(str(p).lower().endswith(".pfx") for p in ([paths] if isinstance(paths, str) else paths)):
            return spec.handler(call)
        raise LabError(message, f"LabInjected,{cmdlet}", ErrorCategory.PermissionDenied)

    registry.register(replace(spec, handler=handler))
    return spec


def test_a_pfx_left_after_a_failed_import_fails_cleanup_and_the_next_run_removes_it(lab: Lab) -> None:
    registry = lab.server("EX2007").winrm.registry
    import_spec = _failing(lab, "Import-ExchangeCertificate", "The PFX is not what it should be.")
    remove_spec = _failing(lab, "Remove-Item", "Access to the path is denied.", only_pfx=True)
    proc, events = lab.run_json()
    assert proc.returncode == 1
    assert "The PFX is not what it should be." in proc.stderr  # the import's error ends the run
    ends = {(e["server"], e["step"]): e for e in events if e["event"] == "step" and e.get("phase") == "end"}
    assert ("EX2007", "cleanup") in ends, [(e["server"], e["step"]) for e in ends.values()]
    cleanup = ends[("EX2007", "cleanup")]
    assert cleanup["outcome"] == "failed" and PFX in cleanup["reason"] and "Access to the path is denied" in \
        cleanup["reason"]
    journal = json.loads((lab.tmp / ".exmig" / "lab.journal.json").read_text())
    assert journal["steps"]["EX2007:cleanup"]["outcome"] == "failed"
    assert file_exists(lab, "EX2007", PFX)  # really left there

    registry.register(import_spec)  # type: ignore[arg-type]
    registry.register(remove_spec)  # type: ignore[arg-type]
    proc, events = lab.run_json()
    assert proc.returncode == 0, proc.stderr
    assert not file_exists(lab, "EX2007", PFX)
    journal = json.loads((lab.tmp / ".exmig" / "lab.journal.json").read_text())
    assert journal["steps"]["EX2007:cleanup"]["outcome"] == "changed"
