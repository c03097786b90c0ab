"""The lab's KDC: a real MIT realm that starts with the lab and is gone when the lab stops or is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.lab.kdc import LabRealm
from orchestrator.playbook import load_playbook
from tests.e2e.conftest import LAB_PLAYBOOK
from tests.e2e.test_lab_serve import lab_playbook_on_free_ports
from tests.kerberos.conftest import PASSWORD, REALM, USER, process_gone
from tests.kerberos.helpers import to_kerberos


def test_realm_kinit_and_stop(make_realm: Callable[..., LabRealm], tmp_path: Path) -> None:
    realm = make_realm()
    assert realm.running and realm.port
    cache = tmp_path / "ccache"
    realm.kinit(USER, PASSWORD, cache)
    klist = subprocess.run(["klist", "-c", str(cache)], capture_output=True, text=True, env=realm.admin_env(),
                           check=False)
    assert f"Default principal: {USER}" in klist.stdout and f"krbtgt/{REALM}@{REALM}" in klist.stdout
    keytab = realm.services["ex2010.mitserv.net"].keytab
    assert oct(keytab.stat().st_mode & 0o777) == "0o600"
    listed = subprocess.run(["klist", "-k", str(keytab)], capture_output=True, text=True, check=False).stdout
    for service in ("HTTP", "host", "WSMAN"):
        assert f"{service}/ex2010.mitserv.net@{REALM}" in listed
    pid = realm.pid
    assert pid is not None
    realm.stop()
    assert process_gone(pid) and not realm.running


def kerberos_lab_playbook(tmp: Path) -> Path:
    return lab_playbook_on_free_ports(tmp, to_kerberos, "kerberos-lab.yml")


def serve(playbook: Path, state: Path) -> tuple[subprocess.Popen[str], list[dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXMIG_", "KRB5"))}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "lab", "serve", str(playbook), "--state",
                             str(state), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    return proc, [json.loads(proc.stdout.readline()) for _ in range(2)]


def kdc_pid(state: Path) -> int:
    return int((state / "kerberos" / "kdc.pid").read_text().strip())


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_lab_serve_json_describes_the_realm_and_sigterm_stops_the_kdc(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, lines = serve(kerberos_lab_playbook(tmp_path), state)
    try:
        ex2010 = next(d for d in lines if d["name"] == "EX2010")
        ex2007 = next(d for d in lines if d["name"] == "EX2007")
        # The 2010 Exchange endpoint takes Kerberos only; /wsman and 2007 also NTLM.
        assert ex2010["auth"] == {"/PowerShell": ["kerberos"], "/wsman": ["kerberos", "ntlm"]}
        assert ex2007["auth"] == {"/wsman": ["kerberos", "ntlm"]}
        for d in lines:
            assert d["realm"] == REALM and d["username"] == USER
            assert Path(d["krb5_config"]).is_file() and f"default_realm = {REALM}" in Path(d["krb5_config"]).read_text()
        assert ex2010["spn"] == "host/ex2010.mitserv.net"
        pid = kdc_pid(state)
        assert not process_gone(pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert wait_gone(pid)


def test_the_kdc_dies_with_a_killed_lab(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, _ = serve(kerberos_lab_playbook(tmp_path), state)
    pid = kdc_pid(state)
    assert not process_gone(pid)
    proc.kill()  # SIGKILL: no handler, no cleanup in the lab; the kernel's parent-death signal does it
    proc.communicate(timeout=30)
    assert wait_gone(pid)


def test_a_lab_without_a_realm_says_once_that_2010_wants_kerberos(tmp_path: Path) -> None:
    from orchestrator.lab.site import LabSite

    ntlm = LabSite(load_playbook(LAB_PLAYBOOK), tmp_path / "ntlm")
    assert ntlm.notes() == ["note: EX2010: the lab accepts NTLM on /PowerShell; a real Exchange 2010 endpoint "
                            "takes Kerberos only (auth: kerberos, user@REALM)"]
    with LabSite(to_kerberos(load_playbook(LAB_PLAYBOOK).playbook), tmp_path / "kerberos",
                 use_playbook_ports=False) as kerberos:
        assert kerberos.realm is not None and kerberos.notes() == []
        ex2010 = kerberos.servers["EX2010"].winrm.auth
        assert ex2010.offered("/powershell") == ["kerberos"] and "ntlm" in ex2010.offered("/wsman")
