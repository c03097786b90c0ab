"""A lab built from a playbook: one emulated Exchange server per playbook server, on 127.0.0.1.

Each emulated server gets the playbook's name and version, a WinRM listener offering the
endpoints that version has (2010: Microsoft.Exchange at /PowerShell and Microsoft.PowerShell at
/wsman on the same port; 2007: Microsoft.PowerShell at /wsman), the user and password the
playbook's credentials name, and TLS services (HTTPS, SMTP STARTTLS, IMAPS, POP3S) presenting
whatever certificate is enabled for each service. State persists under the state folder.

`tls_services=False` leaves the TLS services out (four listener threads per server): for runs that
only migrate, such as the 50-target benchmark. Nothing then answers on the TLS ports, so live
verification (`exmig verify`) has nothing to probe.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

from orchestrator.errors import UsageError
from orchestrator.lab.ca import LabCA
from orchestrator.lab.exchange import ExchangeServerModel, LabSettings, ServerInspector, build_registry
from orchestrator.lab.faults import FaultPlan
from orchestrator.lab.server import EXCHANGE, POWERSHELL, Endpoint, LabServer
from orchestrator.lab.tls_services import ServedCert, TlsServices
from orchestrator.playbook import LAB_DEFAULT_PASSWORD, LoadedPlaybook, Playbook, Server

LAB_DOMAIN = "lab.exmig.test"


@dataclass
class EmulatedServer:
    server: Server
    model: ExchangeServerModel
    winrm: LabServer
    tls: TlsServices
    username: str
    password: str

    @property
    def inspector(self) -> ServerInspector:
        return ServerInspector(self.model)

    def describe(self, ca_file: Path) -> dict[str, Any]:
        ep = self.server.exchange_endpoint
        scheme = self.winrm.scheme
        return {
            "name": self.server.name,
            "version": self.server.version,
            "exchange_url": f"{scheme}://127.0.0.1:{self.winrm.port}{ep.path}",
            "configuration_name": ep.configuration,
            "wsman_url": f"{scheme}://127.0.0.1:{self.winrm.port}/wsman",
            "auth": list(self.winrm.auth.schemes),
            "username": self.username,
            "password": self.password,  # lab credentials are not secrets
            "tls_ports": dict(self.tls.ports),
            "ca_file": str(ca_file),
        }


def lab_password(server: Server) -> str:
    ref = server.credentials.password
    if ref.env is not None and os.environ.get(ref.env):
        return os.environ[ref.env]
    return LAB_DEFAULT_PASSWORD


def lab_username(server: Server) -> str:
    user = server.credentials.username
    if isinstance(user, str):
        return user
    if user.env is not None and os.environ.get(user.env):
        return os.environ[user.env]
    raise UsageError(f"servers[{server.name}].credentials.username: the lab needs a user name; "
                     "write it in the playbook or set the variable")


def _auth_schemes(server: Server) -> tuple[str, ...]:
    auth = server.auth
    if auth in ("ntlm", "negotiate"):
        return ("negotiate",)
    if auth == "basic":
        return ("basic",)
    raise UsageError(
        f"servers[{server.name}].connection.auth: the lab speaks NTLM/Negotiate and Basic, not {auth}; "
        "use `auth: ntlm` in a lab playbook"
    )


def lab_endpoints(version: int, settings: LabSettings) -> tuple[Endpoint, ...]:
    """The session configurations an emulated server offers, with the PowerShell behind each."""
    system = replace(POWERSHELL, powershell=settings.windows_powershell)
    if version == 2010:
        return replace(EXCHANGE, powershell=settings.exchange_powershell), system
    return (system,)


class LabSite:
    """All emulated servers of one playbook; start() listens, stop() shuts down (state stays on disk)."""

    def __init__(self, loaded: LoadedPlaybook | Playbook, state_dir: Path, settings: LabSettings | None = None,
                 latency: float = 0.0, use_playbook_ports: bool = True, tls_services: bool = True) -> None:
        self.playbook = loaded.playbook if isinstance(loaded, LoadedPlaybook) else loaded
        self.state_dir = Path(state_dir)
        self.ca = LabCA.load_or_create(self.state_dir / "ca")
        self.ca_file = self.ca.write_ca_file(self.state_dir / "lab-ca.pem")
        self.settings = settings or LabSettings(third_party_roots=(self.ca.root_pem,))
        self.latency = latency
        self.use_playbook_ports = use_playbook_ports
        self.tls_services = tls_services
        self.servers: dict[str, EmulatedServer] = {}

    def _build(self, server: Server) -> EmulatedServer:
        ep = server.exchange_endpoint
        if self.use_playbook_ports and server.version == 2010 and ep.port != server.system_endpoint.port:
            raise UsageError(
                f"servers[{server.name}].connection: the lab serves both endpoints on one port; set system_port "
                f"to {ep.port} (the same as port)"
            )
        fqdn = f"{server.name.lower()}.{LAB_DOMAIN}"
        model = ExchangeServerModel.load_or_create(self.state_dir / server.name, name=server.name,
                                                   version=str(server.version), fqdn=fqdn)
        registry = build_registry(model, self.settings)
        configurations = lab_endpoints(server.version, self.settings)
        tls = None
        if ep.scheme == "https":
            tls = self.ca.issue_server_cert(["localhost", fqdn, "127.0.0.1"])
        username, password = lab_username(server), lab_password(server)
        if server.version == 2007 and server.connection.transport == "winrs":
            # WinRS: the Exchange shell is powershell.exe -PSConsoleFile exshell.psc1 in a cmd shell.
            from orchestrator.lab.exshell import register_exshell

            register_exshell(registry, model)
        winrm = LabServer(server.name, registry, {username: password}, configurations=configurations,
                          auth=_auth_schemes(server), tls=tls, port=ep.port if self.use_playbook_ports else 0,
                          latency=self.latency, faults=FaultPlan())
        inspector = ServerInspector(model)

        def source(service: str, sni: str | None) -> ServedCert | None:
            served = inspector.served_cert(service)
            if served is None:
                return None
            leaf, key, chain = served
            return ServedCert(leaf=leaf, key_pem=key, chain=tuple(chain))

        ports = dict(server.tls_ports.items()) if self.use_playbook_ports else {k: 0 for k, _ in
                                                                                server.tls_ports.items()}
        if not self.tls_services:
            ports = {}  # a TlsServices with no services: start() and stop() open and close nothing
        return EmulatedServer(server, model, winrm, TlsServices(server.name, source, ports=ports), username, password)

    def start(self) -> Self:
        try:
            for server in self.playbook.servers:
                emulated = self._build(server)
                self.servers[server.name] = emulated
                emulated.winrm.start()
                emulated.tls.start()
        except OSError as exc:
            self.stop()
            raise UsageError(f"the lab cannot listen: {exc}; is another lab running on the playbook's ports?") from None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for emulated in self.servers.values():
            emulated.tls.stop()
            emulated.winrm.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe(self.ca_file) for s in self.servers.values()]

    def describe_json_lines(self) -> str:
        return "".join(json.dumps(d) + "\n" for d in self.describe())

    def playbook_for_lab(self) -> Playbook:
        """The playbook pointed at this lab's actual ports (for rehearse, where ports are chosen at run time)."""
        servers = []
        for server in self.playbook.servers:
            emulated = self.servers[server.name]
            port = emulated.winrm.port
            ports = {"port": port, "system_port": port} if server.version == 2010 else {"port": port}
            connection = server.connection.model_copy(update={
                "host": "127.0.0.1", **ports,
                "ca_file": str(self.ca_file) if emulated.winrm.scheme == "https" else server.connection.ca_file,
            })
            # Without TLS services `.ports` is empty and the playbook's own TLS ports stay.
            tls_ports = server.tls_ports.model_copy(update=dict(emulated.tls.ports))
            servers.append(server.model_copy(update={"connection": connection, "tls_ports": tls_ports}))
        return self.playbook.model_copy(update={"servers": servers})
