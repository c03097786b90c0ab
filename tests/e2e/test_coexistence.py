"""Names in use and coexistence (issue 17), end to end against the lab with the real clients: a URL the certificate
would serve but does not cover stops the run before the request; the coexistence step moves Exchange 2007's
URLs to the legacy host, once, and verify prints the DNS that is left to change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.lab.exchange import EMS_2007_SNAPIN
from orchestrator.playbook import Coexistence, Playbook
from tests.e2e.conftest import Lab, build_lab, props, raw_invoke, raw_pool

LEGACY = "legacy.mitserv.net"
URLS = {"Get-OwaVirtualDirectory": "/owa", "Get-WebServicesVirtualDirectory": "/EWS/Exchange.asmx",
        "Get-OabVirtualDirectory": "/OAB", "Get-ActiveSyncVirtualDirectory": "/Microsoft-Server-ActiveSync"}
NAMES = {"Get-OwaVirtualDirectory": "owa", "Get-WebServicesVirtualDirectory": "EWS", "Get-OabVirtualDirectory": "OAB",
         "Get-ActiveSyncVirtualDirectory": "Microsoft-Server-ActiveSync"}


def _on_2007(lab: Lab, cmdlet: str, **params: Any) -> list[Any]:
    with raw_pool(lab.server("EX2007"), "Microsoft.PowerShell") as pool:
        raw_invoke(pool, "Add-PSSnapin", Name=EMS_2007_SNAPIN)
        return raw_invoke(pool, cmdlet, **params)


def _external_url(lab: Lab, cmdlet: str) -> str | None:
    objects = _on_2007(lab, cmdlet, Server="EX2007")
    # 2007's Get-OwaVirtualDirectory also lists the legacy /Exchange, /Public ... directories: the one by its name.
    default = next(o for o in objects if str(props(o).get("Name")) == f"{NAMES[cmdlet]} (Default Web Site)")
    value = props(default).get("ExternalUrl")
    return None if value in (None, "") else str(value)


def _with_coexistence(playbook: Playbook) -> Playbook:
    return playbook.model_copy(update={"coexistence": Coexistence(
        legacy_host=LEGACY, services=["owa", "ews", "oab", "activesync"])})


def _modifying(lab: Lab, before: dict[str, int]) -> list[str]:
    ran = {name: list(s.winrm.registry.ran)[before[name]:] for name, s in lab.site.servers.items()}
    return [f"{name}: {c}" for name, cs in ran.items() for c in cs
            if not (c.startswith("Get-") or c in ("Test-Path", "Add-PSSnapin"))]


def test_a_name_in_use_the_certificate_does_not_cover_stops_the_run_before_the_request(lab: Lab) -> None:
    [owa] = [o for o in _on_2007(lab, "Get-OwaVirtualDirectory", Server="EX2007")
             if str(props(o)["Name"]).startswith("owa")]
    _on_2007(lab, "Set-OwaVirtualDirectory", Identity=str(props(owa)["Identity"]),
             ExternalUrl="https://webmail.mitserv.net/owa")
    before = {name: len(s.winrm.registry.ran) for name, s in lab.site.servers.items()}
    proc, events = lab.run_json()
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "webmail.mitserv.net" in line]
    assert len(lines) == 1 and lines[0].strip().startswith("EX2007: webmail.mitserv.net is used by OWA ExternalUrl")
    assert "certificate.uncovered_ok" in lines[0]  # the fix
    assert _modifying(lab, before) == []  # nothing was sent that changes a server
    assert not [e for e in events if e["event"] == "command" and e["command"] == "New-ExchangeCertificate"]

    check = lab.exmig("run", str(lab.playbook_path), "--check", "--format", "json")
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout)
    assert any("webmail.mitserv.net" in p for p in found["stops_before_request"])
    assert {"server": "EX2007", "name": "webmail.mitserv.net", "status": "uncovered"}.items() <= next(
        n for n in found["names_in_use"] if n["name"] == "webmail.mitserv.net").items()


def test_coexistence_moves_2007_to_the_legacy_host_once_and_verify_prints_the_dns(tmp_path: Path) -> None:
    lab = build_lab(tmp_path, mutate=_with_coexistence)
    try:
        proc, events = lab.run_json()
        assert proc.returncode == 0, proc.stderr
        for cmdlet, path in URLS.items():
            assert _external_url(lab, cmdlet) == f"https://{LEGACY}{path}", cmdlet
        # The values before were journaled, for exmig rollback.
        journal = json.loads((lab.tmp / ".exmig" / "lab.journal.json").read_text())
        assert {c["service"] for c in journal["changes"]["EX2007:coexistence"]} == {"owa", "ews", "oab", "activesync"}

        again, events = lab.run_json()
        assert again.returncode == 0, again.stderr
        summary = next(e for e in events if e["event"] == "summary")
        assert summary["counts"].get("changed", 0) == 0, summary
        assert not [e for e in events if e["event"] == "command" and e["command"].startswith("Set-")]

        verify = lab.exmig("verify", str(lab.playbook_path))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        dns = verify.stdout[verify.stdout.index("DNS"):]
        assert "mail.mitserv.net" in dns and "EX2010" in dns.split("mail.mitserv.net", 1)[1].splitlines()[0]
        assert LEGACY in dns and "EX2007" in dns.split(LEGACY, 1)[1].splitlines()[0]

        # exmig rollback restores the URLs as they were before (journaled before the change): none on a fresh lab.
        rolled = lab.exmig("rollback", str(lab.playbook_path), "--yes")
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        for cmdlet in URLS:
            assert _external_url(lab, cmdlet) is None, cmdlet
    finally:
        lab.site.stop()
