"""The whole migration with its certificate from a real ACME CA (pebble), against the lab: dns-01 through a real
bind9, http-01 through the servers' own (emulated) IIS; then `exmig renew`; a run killed in the ACME step; and
the mistakes that must stop a run before any server is changed (issue 20)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from orchestrator.acme_issue.client import _Session
from orchestrator.acme_issue.setup import acme_settings, state_dir_for
from orchestrator.lab.site import ACME_LAB_EAB_ENV, ACME_LAB_TSIG_ENV, LabSite
from orchestrator.playbook import AcmeDns, AcmeEab, AcmeIssuer, LoadedPlaybook, Playbook, SecretRef, load_playbook
from orchestrator.secrets_store import SecretStore
from tests.acme.conftest import require_acme_lab
from tests.conftest import ROOT
from tests.e2e.conftest import write_playbook

LAB_PLAYBOOK = ROOT / "playbooks" / "lab.yml"
NAMES = ("mail.mitserv.net", "autodiscover.mitserv.net", "legacy.mitserv.net")
PASSWORD_ENV = "ACME_TEST_LAB_PASSWORD"
BACKUP_ENV = "ACME_TEST_BACKUP_PASSWORD"


@dataclass
class AcmeRehearsal:
    site: LabSite
    path: Path
    tmp: Path

    def exmig(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240
              ) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")} \
            | self.site.acme_secrets() | {PASSWORD_ENV: next(iter(self.site.servers.values())).password,
                                         BACKUP_ENV: "backup-Passw0rd!"} | (env or {})
        return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=self.tmp, env=environment,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.exmig("run", str(self.path), "--yes", *args)

    def serving(self) -> dict[str, set[str | None]]:
        return {name: set(s.inspector.serving().values()) for name, s in self.site.servers.items()}

    def records_left(self) -> dict[str, list[str]]:
        assert self.site.acme is not None and self.site.acme.dns is not None
        return {n: self.site.acme.dns.txt(f"_acme-challenge.{n}") for n in NAMES}

    def challenge_files(self) -> dict[str, list[str]]:
        out = {}
        for name, server in self.site.servers.items():
            listing = server.model.to_state()["files"] if hasattr(server.model, "to_state") else {}
            out[name] = [p for p in listing if "acme-challenge" in p.lower()]
        return out

    def loaded(self) -> LoadedPlaybook:
        return load_playbook(self.path)


def _acme(challenge: str, eab: bool = False) -> Any:
    def mutate(playbook: Playbook) -> Playbook:
        dns = AcmeDns(server="ns1.mitserv.net", zone="mitserv.net", tsig_name="exmig", tsig_secret=SecretRef(
            env="UNUSED")) if challenge == "dns-01" else None
        binding = AcmeEab(kid="exmig-kid", hmac=SecretRef(env="UNUSED")) if eab else None
        issuer = AcmeIssuer(type="acme", directory="https://acme.mitserv.net/dir", challenge=challenge, dns=dns,
                            contact="hostmaster@mitserv.net", eab=binding)
        # A renewal retires what served before (issue 18), backed up with a password the admin knows.
        return playbook.model_copy(update={"issuer": issuer, "retire_previous": True,
                                           "backup_password": SecretRef(env=BACKUP_ENV)})
    return mutate


def build(tmp: Path, challenge: str, eab: bool = False, blocked: tuple[str, ...] = ()) -> AcmeRehearsal:
    require_acme_lab()
    playbook = _acme(challenge, eab)(load_playbook(LAB_PLAYBOOK).playbook)
    site = LabSite(playbook, tmp / "lab-state", use_playbook_ports=False, acme_blocked=blocked)
    site.start()
    # The lab's password from the environment, as a real playbook gives it (lab_default is for lab issuers only).
    final = site.playbook_for_lab()
    servers = [s.model_copy(update={"credentials": s.credentials.model_copy(update={
        "password": SecretRef(env=PASSWORD_ENV)})}) for s in final.servers]
    path = write_playbook(final.model_copy(update={"servers": servers}), tmp / "lab.yml")
    return AcmeRehearsal(site, path, tmp)


@pytest.fixture(params=["dns-01", "http-01"])
def rehearsal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AcmeRehearsal]:
    lab = build(tmp_path, request.param)
    try:
        yield lab
    finally:
        lab.site.stop()


def _journal(lab: AcmeRehearsal) -> dict[str, Any]:
    return dict(json.loads((lab.tmp / ".exmig" / "lab.journal.json").read_text()))


def test_the_certificate_from_the_acme_ca_on_every_server_then_renew(rehearsal: AcmeRehearsal) -> None:
    proc = rehearsal.run()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    issued = x509.load_pem_x509_certificate(_journal(rehearsal)["issued_pem"].encode())
    assert "Pebble" in issued.issuer.rfc4514_string()  # pebble's, not the lab CA's
    thumb = _journal(rehearsal)["issued_thumbprint"]
    assert rehearsal.serving() == {"EX2010": {thumb}, "EX2007": {thumb}}
    # Nothing of the challenge is left: no TXT record, no token or web.config on any server.
    assert all(not v for v in rehearsal.records_left().values())
    for name, server in rehearsal.site.servers.items():
        assert not [p for p in server.model.fs.files if "acme-challenge" in p], name

    nothing = rehearsal.exmig("renew", str(rehearsal.path))
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.startswith("nothing to renew")
    assert rehearsal.serving() == {"EX2010": {thumb}, "EX2007": {thumb}}

    renewed = rehearsal.exmig("renew", str(rehearsal.path), "--days", "400")
    assert renewed.returncode == 0, renewed.stdout[-3000:] + renewed.stderr
    again = _journal(rehearsal)["issued_thumbprint"]
    assert again != thumb
    assert rehearsal.serving() == {"EX2010": {again}, "EX2007": {again}}
    # The previous (first) certificate is retired everywhere, and its backup kept.
    for name, server in rehearsal.site.servers.items():
        held = {t.upper() for t in server.inspector.thumbprints("My")}
        assert thumb not in held and again in held, name
    assert list((rehearsal.tmp / ".exmig").glob("*.backups/*.pfx"))
    assert list((rehearsal.tmp / ".exmig").glob("lab.journal.*.json"))  # the first run's journal is kept


def _changing(lab: AcmeRehearsal) -> list[str]:
    """What the servers ran that changes something (the lab logs every command name it ran)."""
    return [f"{name}: {c}" for name, s in lab.site.servers.items() for c in s.winrm.registry.ran
            if not (c.startswith("Get-") or c in ("Test-Path", "Add-PSSnapin"))]


@pytest.mark.parametrize("mistake", ["wrong-eab", "wrong-tsig", "refused-name"])
def test_a_mistake_stops_the_run_in_one_line_before_any_server_changes(tmp_path: Path, mistake: str) -> None:
    lab = build(tmp_path, "dns-01", eab=mistake == "wrong-eab",
                blocked=("legacy.mitserv.net",) if mistake == "refused-name" else ())
    try:
        wrong = {"wrong-eab": {ACME_LAB_EAB_ENV: base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")},
                 "wrong-tsig": {ACME_LAB_TSIG_ENV: base64.b64encode(b"s" * 32).decode()},
                 "refused-name": {}}[mistake]
        proc = rehearsal_run(lab, wrong)
        assert proc.returncode != 0
        errors = [line for line in proc.stderr.splitlines() if line.startswith("exmig: error:")]
        assert len(errors) == 1, proc.stderr
        expected = {"wrong-eab": "eab", "wrong-tsig": "tsig", "refused-name": "legacy.mitserv.net"}[mistake]
        assert expected in errors[0].lower(), errors[0]
        assert _changing(lab) == []  # no request, no file, no certificate: nothing changed on any server
    finally:
        lab.site.stop()


def rehearsal_run(lab: AcmeRehearsal, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return lab.exmig("run", str(lab.path), "--yes", env=env)


def test_a_run_killed_in_the_acme_step_resumes_the_same_order(tmp_path: Path) -> None:
    lab = build(tmp_path, "dns-01")
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")} \
            | lab.site.acme_secrets() | {PASSWORD_ENV: next(iter(lab.site.servers.values())).password,
                                        BACKUP_ENV: "backup-Passw0rd!"}
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(lab.path), "--yes", "--json"],
                                cwd=lab.tmp, env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        killed = False
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 120
            for line in proc.stdout:
                if time.monotonic() > deadline:
                    break
                event = json.loads(line) if line.startswith("{") else {}
                if event.get("event") == "step" and event.get("step") == "issue" and event.get("phase") == "start":
                    time.sleep(0.3)  # inside the ACME step: the order exists, its challenges being answered
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        assert killed
        resumed = lab.run()
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr
        # One order and one certificate for the account, as pebble lists them.
        loaded = lab.loaded()
        store = SecretStore(loaded.playbook, interactive=False)
        os.environ.update(lab.site.acme_secrets())
        session = _Session(acme_settings(loaded, store), state_dir_for(lab.tmp / ".exmig" / "lab.journal.json"))
        orders = session.post_as_get(session.post_as_get(session.account()).json()["orders"]).json()["orders"]
        assert len(orders) == 1, orders
        thumb = _journal(lab)["issued_thumbprint"]
        assert lab.serving() == {"EX2010": {thumb}, "EX2007": {thumb}}
        assert all(not v for v in lab.records_left().values())
    finally:
        lab.site.stop()


def test_playbooks_mitserv_acme_rehearsed(tmp_path: Path) -> None:
    """The shipped ACME playbook, rehearsed as an admin would: pebble and bind9 started for it, verify green."""
    require_acme_lab()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "rehearse", str(ROOT / "playbooks" / "mitserv-acme.yml"),
                           "--auth", "ntlm", "--json"], cwd=tmp_path, env=environment, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    issued = next(e for e in events if e["event"] == "step" and e.get("step") == "issue" and e.get("phase") == "end")
    assert issued["outcome"] == "changed" and "over ACME" in issued["reason"]
    verdicts = {e["verdict"] for e in events if e["event"] == "verify"}
    assert verdicts == {"ok"}
