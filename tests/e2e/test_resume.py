"""A run killed after any step (SIGKILL) and started again ends in the same state as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab, build_lab
from tests.labstate import site_state

STEPS_IN_LAB_PLAN = 13


def lab_state(lab: Lab) -> dict[str, Any]:
    """The emulated servers' own state (shared normalizer: tests/labstate.py)."""
    return site_state(lab.site)


def run_until_step_end(lab: Lab, k: int) -> None:
    """Start `exmig run --json` and SIGKILL it right after the k-th step has ended."""
    env = {key: v for key, v in os.environ.items() if not key.startswith("EXMIG_")}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(lab.playbook_path), "--yes", "--json"],
                            cwd=lab.tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    ended = 0
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            if time.monotonic() > deadline:
                break
            event = json.loads(line)
            if event.get("event") == "step" and event.get("phase") == "end":
                ended += 1
                if ended == k:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def reference_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    lab = build_lab(tmp_path_factory.mktemp("reference"))
    try:
        proc, _ = lab.run_json()
        assert proc.returncode == 0, proc.stderr
        return lab_state(lab)
    finally:
        lab.site.stop()


@pytest.mark.parametrize("k", range(1, STEPS_IN_LAB_PLAN))
def test_killed_after_step_k_then_resumed(tmp_path: Path, reference_state: dict[str, Any], k: int) -> None:
    lab = build_lab(tmp_path)
    try:
        run_until_step_end(lab, k)
        journal = json.loads((tmp_path / ".exmig" / "lab.journal.json").read_text())
        assert journal["format"] == 1  # never corrupt: the atomic replace leaves a whole file
        proc, events = lab.run_json()
        assert proc.returncode == 0, proc.stderr
        assert lab_state(lab) == reference_state
    finally:
        lab.site.stop()
