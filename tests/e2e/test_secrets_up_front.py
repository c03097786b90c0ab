"""Every prompt comes once, on the main thread, before the first request and the live display; and the
run's closing verify uses the run's own sessions (no second set of shells, no second prompt)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import pytest

from orchestrator.playbook import LAB_DEFAULT_PASSWORD, SecretRef
from tests.conftest import CliResult
from tests.e2e.conftest import Lab, write_playbook


class _Terminal:
    """stdin as a terminal: SecretStore then asks at the prompt (getpass)."""

    def isatty(self) -> bool:
        return True


def test_prompts_once_each_on_the_main_thread_before_anything_is_sent(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, exmig: Callable[..., CliResult]) -> None:
    prompt = SecretRef(prompt=True)
    servers = [s.model_copy(update={"credentials": s.credentials.model_copy(update={"password": prompt})})
               for s in lab.playbook.servers]
    write_playbook(lab.playbook.model_copy(update={"servers": servers, "pfx_password": prompt}), lab.playbook_path)
    winrm = [lab.server(name).winrm for name in ("EX2010", "EX2007")]
    asked: list[tuple[str, bool, int]] = []

    def getpass(text: str) -> str:
        asked.append((text, threading.current_thread() is threading.main_thread(),
                      sum(w.faults.http_count for w in winrm)))
        return "Pfx-Prompted-1234" if "PFX" in text else LAB_DEFAULT_PASSWORD

    monkeypatch.setattr("getpass.getpass", getpass)
    monkeypatch.setattr(sys, "stdin", _Terminal())
    result = exmig("run", lab.playbook_path, "--yes", "--json")
    assert result.code == 0, result.err
    assert sorted(text for text, _, _ in asked) == ["the PFX password: ", "the password for EX2007: ",
                                                     "the password for EX2010: "]
    assert all(main for _, main, _ in asked)
    assert all(sent == 0 for _, _, sent in asked)  # nothing had reached any server yet
    assert '"event": "verify"' in result.out  # ...and the closing verify asked nothing again


def test_the_closing_verify_uses_the_runs_own_sessions(lab: Lab) -> None:
    proc, events = lab.run_json()
    assert proc.returncode == 0, proc.stderr
    assert any(e["event"] == "verify" for e in events)
    # One shell per server and endpoint for the whole run, verify included (not a second set afterwards).
    assert lab.server("EX2010").winrm.faults.action_count("Create") == 2  # /PowerShell and /wsman
    assert lab.server("EX2007").winrm.faults.action_count("Create") == 1
