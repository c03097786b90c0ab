"""The CLI with playbooks/lab-winrs.yml: the README's main job (rehearse) and the dry-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_rehearse_with_the_2007_target_on_winrs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "rehearse", "playbooks/lab-winrs.yml", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["counts"].get("failed", 0) == 0 and summary["counts"]["changed"] >= 10
    verdicts = [e["verdict"] for e in events if e["event"] == "verify"]
    assert verdicts and set(verdicts) == {"ok"}


def test_the_dry_run_plans_the_winrs_server_like_a_psrp_one(exmig) -> None:  # type: ignore[no-untyped-def]
    winrs = exmig("plan", ROOT / "playbooks" / "lab-winrs.yml", "--server", "EX2007")
    psrp = exmig("plan", ROOT / "playbooks" / "lab.yml", "--server", "EX2007")
    assert winrs.code == 0 and psrp.code == 0
    assert "winrs]" in winrs.out.splitlines()[0]
    # The dry-run shows what is sent: the password is read from stdin, never on a command line...
    assert "(Get-Credential).Password" in psrp.out and "(Get-Credential).Password" not in winrs.out
    assert "[Console]::In.ReadLine()" in winrs.out and "-Password $exmigSecret1" in winrs.out
    assert "written in base64 chunks" in winrs.out
    # ...and otherwise the same commands: the WinRS scripts are rendered from them.
    sent = [line for line in winrs.out.splitlines()[1:] if "exmigSecret" not in line and "over WinRS" not in line]
    same = [line for line in psrp.out.splitlines()[1:] if "-Password" not in line]
    assert sent == same
