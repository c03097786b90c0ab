"""pebble and named as the lab runs them: private folders, loopback ports, gone with the lab even after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.lab.acme_services import AcmeLabUnavailable, LabDns, LabPebble
from tests.acme.conftest import AcmeLab, process_gone

REPO = Path(__file__).resolve().parents[2]

_LAB_THEN_KILLED = """
import json, sys, time
from pathlib import Path
from orchestrator.lab.acme_services import LabDns, LabPebble
root = Path(sys.argv[1])
dns = LabDns(root / "dns").start()
pebble = LabPebble(root / "pebble", dns=dns).start()
print(json.dumps([dns.pid, pebble.pid]), flush=True)
time.sleep(60)
"""


def test_pebble_and_named_die_with_a_lab_killed_with_sigkill(tmp_path: Path) -> None:
    lab = subprocess.Popen([sys.executable, "-c", _LAB_THEN_KILLED, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                           text=True)
    try:
        assert lab.stdout is not None
        pids = json.loads(lab.stdout.readline())
        assert all(not process_gone(pid) for pid in pids)
    finally:
        lab.send_signal(signal.SIGKILL)
        lab.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(process_gone(pid) for pid in pids):
        time.sleep(0.05)
    assert all(process_gone(pid) for pid in pids), "a child outlived the lab"


def test_named_takes_updates_only_with_the_tsig_key(acme_lab: AcmeLab) -> None:
    import dns.update

    unsigned = dns.update.UpdateMessage("mitserv.net")
    unsigned.add("_acme-challenge.mail", 60, "TXT", '"forged"')
    response = dns.query.tcp(unsigned, "127.0.0.1", port=acme_lab.dns.port, timeout=5)
    assert response.rcode() == dns.rcode.REFUSED
    assert acme_lab.dns.txt("_acme-challenge.mail.mitserv.net") == []
    # Recursion is off: the lab's DNS answers for its zone only.
    answer = dns.query.udp(dns.message.make_query("example.org.", "A"), "127.0.0.1", port=acme_lab.dns.port, timeout=5)
    assert answer.rcode() == dns.rcode.REFUSED and not answer.answer


def test_private_configs_and_loopback(acme_lab: AcmeLab) -> None:
    for folder in (acme_lab.dns.directory, acme_lab.pebble.directory):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(acme_lab.dns.conf.stat().st_mode) == 0o600  # it holds the TSIG secret
    config = json.loads(acme_lab.pebble.config.read_text())["pebble"]
    assert config["listenAddress"].startswith("127.0.0.1:") and config["managementListenAddress"].startswith("127.0.0.1:")
    assert config["certificateValidityPeriod"] == 90 * 86400
    assert acme_lab.pebble.directory_url.startswith("https://127.0.0.1:")
    with pytest.raises(ValueError):
        LabDns(Path("/nonexistent"), host="0.0.0.0")
    with pytest.raises(ValueError):
        LabPebble(Path("/nonexistent"), host="192.168.1.1")


def test_a_missing_program_is_one_line_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("orchestrator.lab.children._SBIN", ())
    with pytest.raises(AcmeLabUnavailable, match=r"^the lab's ACME rehearsal needs pebble, which is not installed: "
                                                 r"apt-get install pebble$"):
        LabPebble(tmp_path / "p").start()
    with pytest.raises(AcmeLabUnavailable, match=r"needs named, which is not installed: apt-get install bind9$"):
        LabDns(tmp_path / "d").start()
    assert not os.path.exists(tmp_path / "p")
