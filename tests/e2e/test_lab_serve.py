"""`exmig lab serve` as a user runs it: JSON endpoints, real clients, SIGTERM, state kept across restarts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from orchestrator.playbook import Playbook, load_playbook
from tests.e2e.conftest import LAB_PLAYBOOK, write_playbook


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def lab_playbook_on_free_ports(tmp: Path, mutate: Callable[[Playbook], Playbook] | None = None,
                               name: str = "lab.yml") -> Path:
    playbook = load_playbook(LAB_PLAYBOOK).playbook
    if mutate is not None:
        playbook = mutate(playbook)
    ports = iter(free_ports(10))
    servers = []
    for server in playbook.servers:
        port = next(ports)
        same = {"port": port, "system_port": port} if server.version == 2010 else {"port": port}
        connection = server.connection.model_copy(update=same)
        tls = server.tls_ports.model_copy(update={k: next(ports) for k in ("https", "smtp", "imaps", "pop3s")})
        servers.append(server.model_copy(update={"connection": connection, "tls_ports": tls}))
    return write_playbook(playbook.model_copy(update={"servers": servers}), tmp / name)


def serve(playbook: Path, state: Path) -> tuple[subprocess.Popen[str], list[dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "lab", "serve", str(playbook), "--state",
                             str(state), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    return proc, lines


def pool_for(endpoint: dict[str, Any]) -> RunspacePool:
    url = endpoint["exchange_url"]
    port = int(url.split(":")[2].split("/")[0])
    path = url.split("/", 3)[3]
    wsman = WSMan("127.0.0.1", port=port, path=path, ssl=False, auth="ntlm", username=endpoint["username"],
                  password=endpoint["password"], encryption="always")
    return RunspacePool(wsman, configuration_name=endpoint["configuration_name"])


def test_lab_serve_json_and_restart(tmp_path: Path) -> None:
    playbook = lab_playbook_on_free_ports(tmp_path)
    state = tmp_path / "state"
    proc, endpoints = serve(playbook, state)
    try:
        ex2010 = next(e for e in endpoints if e["name"] == "EX2010")
        assert ex2010["version"] == 2010 and ex2010["configuration_name"] == "Microsoft.Exchange"
        assert set(ex2010["tls_ports"]) == {"https", "smtp", "imaps", "pop3s"}
        assert Path(ex2010["ca_file"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        with pool_for(ex2010) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("New-ExchangeCertificate").add_parameter("GenerateRequest", None) \
                .add_parameter("SubjectName", "CN=mail.mitserv.net").add_parameter("DomainName", ["mail.mitserv.net"]) \
                .add_parameter("PrivateKeyExportable", True).add_parameter("Server", "EX2010")
            out = ps.invoke()
            assert not ps.had_errors and "CERTIFICATE REQUEST" in str(out[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0

    proc, endpoints = serve(playbook, state)
    try:
        ex2010 = next(e for e in endpoints if e["name"] == "EX2010")
        with pool_for(ex2010) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-ExchangeCertificate").add_parameter("Server", "EX2010")
            statuses = [str(o.adapted_properties["Status"]) for o in ps.invoke()]
            assert "PendingRequest" in statuses  # the request made before the restart is still there
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
