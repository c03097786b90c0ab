"""`exmig rehearse`: the README's main job, for the lab playbook and for a production playbook."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.kerberos.conftest import require_kerberos


@pytest.mark.parametrize(("playbook", "extra"), [
    ("playbooks/lab.yml", ()),
    ("playbooks/mitserv.yml", ()),  # auth: kerberos: the lab's MIT realm
    ("playbooks/mitserv.yml", ("--auth", "ntlm")),  # where the KDC programs are missing
])
def test_rehearse_runs_the_whole_migration(playbook: str, extra: tuple[str, ...]) -> None:
    if playbook.endswith("mitserv.yml") and not extra:
        require_kerberos()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXMIG_", "KRB5"))}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "rehearse", playbook, "--json", *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["counts"].get("failed", 0) == 0 and summary["counts"]["changed"] >= 10
    verdicts = [e["verdict"] for e in events if e["event"] == "verify"]
    assert verdicts and set(verdicts) == {"ok"}
