"""Issuers, per-server execution and a second Exchange 2010 target, through the real CLI against the lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.lab.exchange import MY
from orchestrator.playbook import LAB_DEFAULT_PASSWORD, ManualIssuer, Playbook, Role, SecretRef
from tests.e2e.conftest import Lab, build_lab, write_playbook


def commands_sent(events: list[dict[str, Any]], server: str) -> list[str]:
    return [e["command"] for e in events if e["event"] == "command" and e["server"] == server]


def our_certificate(lab: Lab, server: str, thumb: str) -> Any:
    return lab.server(server).inspector.certificate(thumb, MY)


def test_manual_issuer_round_trip(lab: Lab, tmp_path: Path) -> None:
    # A real-server style playbook: manual issuer, password from an environment variable.
    password = SecretRef(env="EX_LAB_PASSWORD")
    servers = [s.model_copy(update={"credentials": s.credentials.model_copy(update={"password": password})})
               for s in lab.playbook.servers]
    manual_playbook = lab.playbook.model_copy(update={
        "issuer": ManualIssuer(type="manual", csr_file="mitserv.csr"), "servers": servers})
    write_playbook(manual_playbook, lab.playbook_path)
    env = {"EX_LAB_PASSWORD": LAB_DEFAULT_PASSWORD}
    first = lab.exmig("run", str(lab.playbook_path), "--yes", env_extra=env)
    assert first.returncode == 3, first.stderr  # waiting for the CA
    assert "waiting for the CA" in first.stderr
    csr = tmp_path / "mitserv.csr"
    assert b"CERTIFICATE REQUEST" in csr.read_bytes()

    signed = lab.exmig("lab", "sign", str(csr), "--out", str(tmp_path / "ca-answer"),
                       "--ca", str(lab.site.state_dir / "ca"))
    assert signed.returncode == 0, signed.stderr
    thumb = signed.stdout.split()[1]
    zip_file = next((tmp_path / "ca-answer").glob("*.zip"))

    second = lab.exmig("run", str(lab.playbook_path), "--yes", "--no-verify", "--certificate", str(zip_file),
                       env_extra=env)
    assert second.returncode == 0, second.stderr + second.stdout
    # Clients trust the lab CA only when told to: verify with its root passes, with the system's it cannot.
    checked = lab.exmig("verify", str(lab.playbook_path), "--ca-file", str(lab.site.ca_file), env_extra=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Warning" not in checked.stderr
    for name in ("EX2010", "EX2007"):
        view = our_certificate(lab, name, thumb)
        assert view is not None and view.has_private_key and view.status == "Valid", (name, view)




def test_per_server_steps_wait_for_their_dependencies(lab: Lab) -> None:
    early, events = lab.run_json("--server", "EX2007", "--step", "import")
    assert early.returncode == 2
    assert "import on EX2007 needs the CA's certificate" in early.stderr
    assert len(early.stderr.strip().splitlines()) == 1
    assert commands_sent(events, "EX2007") == []

    source, _ = lab.run_json("--server", "EX2010", "--server", "workstation")
    assert source.returncode == 0, source.stderr
    staged, _ = lab.run_json("--server", "EX2007", "--step", "install-chain", "--step", "copy")
    assert staged.returncode == 0, staged.stderr

    proc, events = lab.run_json("--server", "EX2007", "--step", "import")
    assert proc.returncode == 0, proc.stderr
    steps = [(e["server"], e["step"], e["outcome"]) for e in events if e["event"] == "step" and e["phase"] == "end"]
    # The PFX comes from the source's export, run as a step of its own before the target's (issue 15).
    assert steps == [("EX2010", "export", "ok"), ("EX2007", "import", "changed")]
    # \\Root is read before the first change (the CA's root must be trusted there); the PFX file of the earlier
    # run carries that run's generated password: this run writes its own.
    # (the lab's 2007 session is PowerShell 2.0 FullLanguage: the copy's folder and write go in one request)
    assert [c for c in commands_sent(events, "EX2007") if c != "Get-ExchangeCertificate"] == [
        "Get-ChildItem", "New-Item + Set-Content", "Import-ExchangeCertificate"]
    # Nothing else changed on the 2007 server: not enabled yet, the PFX still waits for cleanup.
    thumb = lab.server("EX2010").inspector.serving()["https"]
    view = our_certificate(lab, "EX2007", thumb)
    assert view is not None and view.services == "None"


def _with_second_2010(playbook: Playbook) -> Playbook:
    source = playbook.source
    second = source.model_copy(update={"name": "EX2010B", "role": Role.TARGET, "client_names": None})
    return playbook.model_copy(update={"servers": [*playbook.servers, second]})


def test_a_second_2010_target_imports_with_filedata(tmp_path: Path) -> None:
    lab = build_lab(tmp_path, mutate=_with_second_2010)
    try:
        proc, events = lab.run_json()
        assert proc.returncode == 0, proc.stderr
        sent = commands_sent(events, "EX2010B")
        assert "Import-ExchangeCertificate" in sent
        files = lab.server("EX2010B").inspector.model.fs
        assert not any(name.lower().endswith(".pfx") for name, _ in files.children("C:\\Certs")), "no PFX on 2010"
        thumb = lab.server("EX2010").inspector.serving()["https"]
        view = our_certificate(lab, "EX2010B", thumb)
        assert view is not None and view.has_private_key and set(view.services.split(", ")) >= {"IIS", "SMTP"}
    finally:
        lab.site.stop()


def test_status_shows_the_journal(lab: Lab) -> None:
    before = lab.exmig("status", str(lab.playbook_path))
    assert before.returncode == 0 and "no run yet" in before.stdout
    proc, _ = lab.run_json("--server", "EX2010", "--server", "workstation", "--no-verify")
    assert proc.returncode == 0, proc.stderr
    status = lab.exmig("status", str(lab.playbook_path))
    assert status.returncode == 0
    assert "CSR: kept" in status.stdout
    rows = [line.split() for line in status.stdout.splitlines() if line.startswith("  EX2010")]
    assert [r[1] for r in rows] == ["request", "install-chain", "complete", "enable", "export", "verify"]
    assert all(r[2] in ("changed", "ok") for r in rows)
