"""Issue 18 end to end: `exmig run` with the previous certificate present retires it (backed up first) and keeps
Exchange's self-signed one; `rollback_on_failure` puts the previous certificate back where verify failed; and
`exmig rollback` after a good run puts it back everywhere. What the servers hold is read with raw pypsrp and what
they present with a TLS handshake, not through exmig."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from orchestrator.certs import thumbprint
from orchestrator.lab.faults import FaultKind, FaultRule
from orchestrator.playbook import Playbook, SecretRef
from orchestrator.verify.tls_probe import SERVICE_KINDS, probe
from tests.e2e.conftest import Lab, build_lab, write_playbook
from tests.e2e.test_migration import exchange_certificates

BACKUP_ENV = "RETIRE_TEST_BACKUP_PASSWORD"
BACKUP_PW = "Backup-Passw0rd!"  # noqa: S105 - a test's password
SERVERS = ("EX2010", "EX2007")


def _options(**flags: bool) -> Any:
    def mutate(playbook: Playbook) -> Playbook:
        return playbook.model_copy(update={**flags, "backup_password": SecretRef(env=BACKUP_ENV)})
    return mutate


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Any]:
    started: list[Lab] = []

    def start(faulty: frozenset[str] = frozenset(), **flags: bool) -> Lab:
        lab = build_lab(tmp_path, mutate=_options(**flags), previous_certificate=True,
                        enable_keeps_iis_binding=faulty)
        started.append(lab)
        return lab

    yield start
    for lab in started:
        lab.site.stop()


def _run(lab: Lab, *args: str) -> tuple[Any, list[dict[str, Any]]]:
    proc = lab.exmig("run", str(lab.playbook_path), "--yes", "--json", *args, env_extra={BACKUP_ENV: BACKUP_PW})
    return proc, [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _presented(lab: Lab, name: str) -> dict[str, str | None]:
    ports = lab.server(name).tls.ports
    out: dict[str, str | None] = {}
    for kind in SERVICE_KINDS:
        seen = probe("127.0.0.1", ports[kind], kind, "mail.mitserv.net", timeout=10)
        out[kind] = thumbprint(seen.leaf) if seen.leaf is not None else None
    return out


def _held(lab: Lab, name: str) -> dict[str, dict[str, Any]]:
    return {str(c["Thumbprint"]).upper(): c for c in exchange_certificates(lab, name)}


def _journal(lab: Lab) -> dict[str, Any]:
    return json.loads((lab.tmp / ".exmig" / "lab.journal.json").read_text())


def _before(lab: Lab) -> dict[str, tuple[str, set[str]]]:
    """Per server: the previous certificate (what HTTPS presents) and the self-signed ones, before any run."""
    out = {}
    for name in SERVERS:
        previous = _presented(lab, name)["https"]
        assert previous is not None and set(_presented(lab, name).values()) == {previous}
        own = {t for t, c in _held(lab, name).items() if c.get("IsSelfSigned") is True}
        assert own and previous not in own
        out[name] = (previous, own)
    return out


def _changed(events: list[dict[str, Any]]) -> int:
    summary = next(e for e in events if e["event"] == "summary")
    return int(summary["counts"].get("changed", 0))


def test_retire_previous_removes_the_old_certificate_after_its_backup(make_lab: Any) -> None:
    lab = make_lab(retire_previous=True)
    before = _before(lab)
    proc, events = _run(lab)
    assert proc.returncode == 0, proc.stderr
    journal = _journal(lab)
    new = journal["issued_thumbprint"]
    assert {journal["previous"][n]["services"]["IIS"] for n in SERVERS} == {before[n][0] for n in SERVERS}
    for name in SERVERS:
        previous, own = before[name]
        assert _presented(lab, name) == dict.fromkeys(SERVICE_KINDS, new), name
        held = _held(lab, name)
        assert previous not in held and new in held and own <= set(held), (name, sorted(held))
        backup = lab.tmp / ".exmig" / "lab.journal.backups" / f"{name}-{previous}.pfx"
        assert backup.stat().st_mode & 0o777 == 0o600
        key, cert, _ = pkcs12.load_key_and_certificates(backup.read_bytes(), BACKUP_PW.encode())
        assert key is not None and cert is not None and thumbprint(cert) == previous
        retired = [e for e in events if e["event"] == "step" and e.get("phase") == "end" and e["server"] == name
                   and e["step"] == "retire"]
        assert [e["outcome"] for e in retired] == ["changed"] and f"retired {previous} (backed up)" in \
            retired[0]["reason"]
    # The backup was on disk before the removal was sent (the events are in order).
    commands = [e["command"] for e in events if e["event"] == "command" and e["server"] == "EX2010"]
    assert commands.index("Export-ExchangeCertificate", commands.index("Remove-ExchangeCertificate") - 1) \
        < commands.index("Remove-ExchangeCertificate")

    again, events2 = _run(lab)
    assert again.returncode == 0, again.stderr
    assert _changed(events2) == 0
    assert [e["command"] for e in events2 if e["event"] == "command" and "Remove" in e["command"]] == []
    assert _journal(lab)["previous"] == journal["previous"]  # the first run's record is kept

    # Rolled back after the retirement: the previous certificate comes back from its backup.
    back = lab.exmig("rollback", str(lab.playbook_path), "--yes", "--json", env_extra={BACKUP_ENV: BACKUP_PW})
    assert back.returncode == 0, back.stderr
    for name in SERVERS:
        assert _presented(lab, name) == dict.fromkeys(SERVICE_KINDS, before[name][0]), name
        assert before[name][0] in _held(lab, name)
    reasons = [json.loads(x)["reason"] for x in back.stdout.splitlines() if '"phase": "end"' in x]
    assert all("from its backup" in r for r in reasons) and len(reasons) == 2, reasons


def test_rollback_on_failure_puts_the_previous_certificate_back_on_the_failing_server(make_lab: Any) -> None:
    lab = make_lab(frozenset({"EX2007"}), rollback_on_failure=True)
    before = _before(lab)
    proc, events = _run(lab)
    assert proc.returncode == 4, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("exmig: error:")]
    assert errors and errors[0].startswith("exmig: error: EX2007: certificate ") and errors[0].endswith(
        ": not enabled for IIS"), proc.stderr
    assert _presented(lab, "EX2007") == dict.fromkeys(SERVICE_KINDS, before["EX2007"][0])
    ends = {(e["server"], e["step"]): e for e in events if e["event"] == "step" and e.get("phase") == "end"}
    assert ends[("EX2007", "verify")]["outcome"] == "failed"
    assert ends[("EX2007", "rollback")]["outcome"] == "changed", ends[("EX2007", "rollback")]
    assert "presented again on IIS, SMTP, POP, IMAP" in ends[("EX2007", "rollback")]["reason"]
    assert _journal(lab)["steps"]["EX2007:rollback"]["outcome"] == "changed"
    assert ("EX2010", "rollback") not in ends  # EX2010 verified: it keeps the new certificate


def test_exmig_rollback_after_a_good_run_restores_the_previous_certificate_everywhere(make_lab: Any) -> None:
    lab = make_lab()
    before = _before(lab)
    proc, _ = _run(lab)
    assert proc.returncode == 0, proc.stderr
    new = _journal(lab)["issued_thumbprint"]
    assert all(_presented(lab, n)["https"] == new for n in SERVERS)
    back = lab.exmig("rollback", str(lab.playbook_path), "--yes", "--json")
    assert back.returncode == 0, back.stderr
    for name in SERVERS:
        assert _presented(lab, name) == dict.fromkeys(SERVICE_KINDS, before[name][0]), name
    again = lab.exmig("rollback", str(lab.playbook_path), "--yes", "--json")
    assert again.returncode == 0, again.stderr
    ends = [json.loads(x) for x in again.stdout.splitlines() if x.startswith("{")]
    assert {e["outcome"] for e in ends if e["event"] == "step" and e.get("phase") == "end"} == {"ok"}


def test_check_shows_the_retirement_a_run_then_makes(make_lab: Any) -> None:
    """Migrated without retire_previous, then turned on: `run --check` shows the backup and the removal and sends
    neither; the run then sends exactly those."""
    lab = make_lab()
    before = _before(lab)
    proc, _ = _run(lab)
    assert proc.returncode == 0, proc.stderr
    write_playbook(lab.playbook.model_copy(update={"retire_previous": True}), lab.playbook_path)
    check = lab.exmig("run", str(lab.playbook_path), "--check", "--format", "json",
                      env_extra={BACKUP_ENV: BACKUP_PW})
    assert check.returncode == 0, check.stderr
    planned = {(s["server"], s["step"]): s for s in json.loads(check.stdout)["steps"]}
    for name in SERVERS:
        assert before[name][0] in _held(lab, name)  # --check removed nothing
        sent = [c["command"] for r in planned[(name, "retire")]["requests"] for c in r]
        assert sent[-1] == "Remove-ExchangeCertificate" and "Export-ExchangeCertificate" in sent, planned[(name,
                                                                                                           "retire")]
    proc, events = _run(lab)
    assert proc.returncode == 0, proc.stderr
    for name in SERVERS:
        assert before[name][0] not in _held(lab, name)
        sent = [e["command"] for e in events if e["event"] == "command" and e["step"] == "retire"
                and e["server"] == name and e["command"] != "Get-ExchangeCertificate"]
        assert sent == [c["command"] for r in planned[(name, "retire")]["requests"] for c in r], name


# The backup's export is EX2010's second Export (the first is the PFX's, the export step).
@pytest.mark.parametrize(("cmdlet", "nth"), [("Export-ExchangeCertificate", 2), ("Remove-ExchangeCertificate", 1)])
def test_a_lost_reply_in_the_retire_step_is_read_again_not_repeated(make_lab: Any, cmdlet: str, nth: int) -> None:
    """The server acted and the reply was lost: the step reads again and finishes without a second removal; the
    backup is on disk either way."""
    lab = make_lab(retire_previous=True)
    before = _before(lab)
    lab.server("EX2010").winrm.faults.add(FaultRule(FaultKind.RESET_AFTER, request=nth, cmdlet=cmdlet))
    proc, events = _run(lab)
    assert proc.returncode == 0, proc.stderr
    assert not lab.server("EX2010").winrm.faults.rules  # the fault fired
    previous = before["EX2010"][0]
    assert previous not in _held(lab, "EX2010")
    assert (lab.tmp / ".exmig" / "lab.journal.backups" / f"EX2010-{previous}.pfx").exists()
    sent = [(e["command"], e["outcome"]) for e in events if e["event"] == "command" and e["server"] == "EX2010"
            and e["step"] == "retire" and e["command"] != "Get-ExchangeCertificate"]
    if cmdlet.startswith("Export"):  # exported again, then removed once
        assert sent == [(cmdlet, "transient-error"), (cmdlet, "ok"), ("Remove-ExchangeCertificate", "ok")], sent
    else:  # removed by the attempt whose reply was lost: not sent again
        assert sent == [("Export-ExchangeCertificate", "ok"), (cmdlet, "transient-error")], sent
    [retired] = [e for e in events if e["event"] == "step" and e.get("phase") == "end" and e["server"] == "EX2010"
                 and e["step"] == "retire"]
    assert retired["outcome"] == "changed", retired
