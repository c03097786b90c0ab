"""LabSite(tls_services=False): the emulated servers answer PSRP as usual and open no TLS listener."""

from __future__ import annotations

import threading
from pathlib import Path

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from orchestrator.lab.site import EmulatedServer, LabSite
from orchestrator.playbook import load_playbook
from tests.e2e.conftest import LAB_PLAYBOOK

TLS_THREAD_PREFIX = "exmig-tls-"  # tls_services.py names each listener thread so


def tls_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(TLS_THREAD_PREFIX)]


def open_pool(emulated: EmulatedServer, site: LabSite) -> RunspacePool:
    d = emulated.describe(site.ca_file)
    path = d["exchange_url"].split("/", 3)[3]
    wsman = WSMan("127.0.0.1", port=emulated.winrm.port, path=path, ssl=False, auth="ntlm",
                  username=d["username"], password=d["password"], encryption="always",
                  operation_timeout=5, read_timeout=10)
    return RunspacePool(wsman, configuration_name=d["configuration_name"])


def test_without_tls_services_no_tls_port_and_psrp_still_works(tmp_path: Path) -> None:
    playbook = load_playbook(LAB_PLAYBOOK).playbook
    before = tls_threads()
    with LabSite(playbook, tmp_path / "lab", use_playbook_ports=False, tls_services=False) as site:
        assert site.servers and all(e.tls.ports == {} for e in site.servers.values())
        assert tls_threads() == before
        assert all(d["tls_ports"] == {} for d in site.describe())
        # The lab playbook keeps its own TLS ports: nothing of this lab listens there.
        lab_playbook = site.playbook_for_lab()
        assert [s.tls_ports for s in lab_playbook.servers] == [s.tls_ports for s in playbook.servers]
        ex2010 = next(e for e in site.servers.values() if e.server.version == 2010)
        with open_pool(ex2010, site) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-ExchangeCertificate").add_parameter("Server", ex2010.server.name)
            certificates = ps.invoke()
            assert not ps.had_errors, ps.streams.error
            assert certificates  # the emulated server's own self-signed certificate at least
    assert tls_threads() == before


def test_tls_services_stay_on_by_default(tmp_path: Path) -> None:
    playbook = load_playbook(LAB_PLAYBOOK).playbook
    before = len(tls_threads())
    with LabSite(playbook, tmp_path / "lab", use_playbook_ports=False) as site:
        for emulated in site.servers.values():
            assert set(emulated.tls.ports) == {"https", "smtp", "imaps", "pop3s"}
        assert len(tls_threads()) == before + 4 * len(site.servers)
