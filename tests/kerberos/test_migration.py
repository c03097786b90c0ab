"""Issue 14's acceptance: the seed's migration (playbooks/mitserv.yml) rehearsed with Kerberos on every
server against the lab's real MIT KDC, through the real CLI, as production would run it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.lab.rehearsal import rehearsal_playbook
from orchestrator.lab.site import LabSite
from orchestrator.playbook import load_playbook
from tests.conftest import ROOT
from tests.e2e.conftest import Lab, write_playbook
from tests.kerberos.conftest import process_gone

MITSERV = ROOT / "playbooks" / "mitserv.yml"


def kerberos_env(lab: Lab) -> dict[str, str]:
    assert lab.site.realm is not None
    return {"KRB5_CONFIG": str(lab.site.realm.krb5_config), "KRB5CCNAME": f"FILE:{lab.tmp / 'ccache'}"}


@pytest.fixture
def mitserv_lab(tmp_path: Path) -> Iterator[Lab]:
    state = tmp_path / "lab-state"
    rehearsal = rehearsal_playbook(load_playbook(MITSERV), state)
    site = LabSite(rehearsal.playbook, state, use_playbook_ports=False).start()
    assert site.realm is not None and site.realm.pid is not None
    kdc = site.realm.pid
    try:
        playbook = site.playbook_for_lab()
        yield Lab(site, write_playbook(playbook, tmp_path / "mitserv-lab.yml"), playbook, tmp_path)
    finally:
        site.stop()
    assert process_gone(kdc), "the lab's KDC outlived the lab"


def run(lab: Lab, *args: str) -> tuple[int, list[dict], str]:
    proc = lab.exmig("run", str(lab.playbook_path), "--yes", "--json", *args, env_extra=kerberos_env(lab))
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def test_mitserv_migrates_over_kerberos_then_converges_and_verifies(mitserv_lab: Lab) -> None:
    lab = mitserv_lab
    assert all(s.connection.auth == "kerberos" for s in lab.playbook.servers)
    assert {s.spn_hostname for s in lab.playbook.servers} == {"ex2010.mitserv.net", "ex2007.mitserv.net"}
    code, events, err = run(lab, "--no-verify")
    assert code == 0, err
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["counts"].get("failed", 0) == 0 and summary["counts"]["changed"] >= 10

    # Every WinRM request on the 2010 Exchange endpoint was Kerberos-authenticated and encrypted; no NTLM
    # token was accepted there (and none was even tried: exmig asked for Kerberos).
    ex2010 = lab.server("EX2010").winrm.log.records()
    exchange = [r for r in ex2010 if r.path.lower() == "/powershell" and r.action]
    assert exchange and all(r.auth == "negotiate" and r.mechanism == "kerberos" and r.encrypted for r in exchange)
    assert not any(r.mechanism == "ntlm" or r.ntlm_refused for r in ex2010)
    for name in ("EX2010", "EX2007"):
        executed = [r for r in lab.server(name).winrm.log.records() if r.action]
        assert executed and all(r.mechanism == "kerberos" and r.encrypted for r in executed), name

    code, events, err = run(lab, "--no-verify")
    assert code == 0, err
    again = next(e for e in events if e["event"] == "summary")
    assert again["counts"].get("changed", 0) == 0

    verify = lab.exmig("verify", str(lab.playbook_path), "--json", env_extra=kerberos_env(lab))
    assert verify.returncode == 0, verify.stderr
    verdicts = [json.loads(line)["verdict"] for line in verify.stdout.splitlines() if line.startswith("{")]
    assert verdicts and set(verdicts) == {"ok"}


def test_a_run_with_the_admins_ticket_and_no_password(mitserv_lab: Lab) -> None:
    lab = mitserv_lab
    servers = [s.model_copy(update={"credentials": s.credentials.model_copy(update={"password": None})})
               for s in lab.playbook.servers]
    path = write_playbook(lab.playbook.model_copy(update={"servers": servers}), lab.tmp / "ticket.yml")
    assert "credentials:\n    username: administrator@mitserv.net\n" in path.read_text()
    realm = lab.site.realm
    assert realm is not None
    realm.kinit("administrator@mitserv.net", lab.server("EX2010").password, lab.tmp / "ccache")
    proc = lab.exmig("run", str(path), "--yes", "--no-verify", env_extra=kerberos_env(lab))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "EX2010: Kerberos as administrator@MITSERV.NET, with the ticket from the credential cache" in out
    assert "EX2007: Kerberos as administrator@MITSERV.NET, with the ticket from the credential cache" in out


def test_an_unreachable_kdc_is_retried_within_bounds_then_named(mitserv_lab: Lab) -> None:
    lab = mitserv_lab
    retry = {"attempts": 3, "max_seconds": 20, "initial_backoff": 0.05, "max_backoff": 0.2}
    path = write_playbook(lab.playbook.model_copy(update={"retry": lab.playbook.retry.model_copy(update=retry)}),
                          lab.tmp / "retry.yml")
    assert lab.site.realm is not None
    lab.site.realm.stop()
    proc = lab.exmig("run", str(path), "--yes", "--json", "--no-verify", env_extra=kerberos_env(lab))
    assert proc.returncode == 1
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    retries = [e for e in events if e["event"] == "retry"]
    assert retries and all("cannot contact any KDC" in e["reason"] for e in retries)
    assert max(e["attempt"] for e in retries) <= 3
    assert "cannot contact any KDC for the realm of administrator@MITSERV.NET" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2


def test_ntlm_against_the_2010_exchange_endpoint_is_one_line(mitserv_lab: Lab) -> None:
    lab = mitserv_lab
    servers = [s.model_copy(update={"connection": s.connection.model_copy(update={"auth": "ntlm", "spn_hostname": None})})
               if s.name == "EX2010" else s for s in lab.playbook.servers]
    path = write_playbook(lab.playbook.model_copy(update={"servers": servers}), lab.tmp / "ntlm.yml")
    proc = lab.exmig("run", str(path), "--yes", "--no-verify", env_extra=kerberos_env(lab))
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if "EX2010" in line]
    assert lines == ["exmig: error: EX2010: Exchange refused the ntlm session without details (Received a WSManFault "
                     "message. (No details returned by the server)); Exchange 2010's remote PowerShell takes Kerberos "
                     "only: set connection.auth: kerberos and credentials.username: user@REALM"], proc.stderr
    assert any(r.ntlm_refused for r in lab.server("EX2010").winrm.log.records())
