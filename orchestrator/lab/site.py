"""A lab built from a playbook: one emulated Exchange server per playbook server, on 127.0.0.1.

Each emulated server gets the playbook's name and version, a WinRM listener offering the
endpoints that version has (2010: Microsoft.Exchange at /PowerShell and Microsoft.PowerShell at
/wsman on the same port; 2007: Microsoft.PowerShell at /wsman), the user and password the
playbook's credentials name, and TLS services (HTTPS, SMTP STARTTLS, IMAPS, POP3S) presenting
whatever certificate is enabled for each service. State persists under the state folder.

Servers whose playbook entry says `auth: kerberos` (or `negotiate` with a `user@REALM` name) bring a
real MIT realm with them (kdc.py): the site starts a KDC for the realm of the user names, registers
the users and every server's service principals, gives each emulated server its keytab, and stops
the KDC with the lab. Exchange 2010's /PowerShell then refuses NTLM as the real endpoint does
(LabSettings.exchange_kerberos_only). A lab without a realm accepts NTLM everywhere and says once
that a real 2010 endpoint wants Kerberos (`notes()`).

`tls_services=False` leaves the TLS services out (four listener threads per server): for runs that
only migrate, such as the 50-target benchmark. Nothing then answers on the TLS ports, so live
verification (`exmig verify`) has nothing to probe.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

from orchestrator.errors import UsageError
from orchestrator.kerberos import principal_name, realm_of
from orchestrator.lab.acme_services import LabAcme, new_eab_hmac
from orchestrator.lab.auth import KerberosKeys
from orchestrator.lab.ca import LabCA
from orchestrator.lab.costs import NO_COSTS, LabCosts, LabLimits, apply_costs
from orchestrator.lab.exchange import ExchangeServerModel, LabSettings, ServerInspector, build_registry, store
from orchestrator.lab.exchange.previous import install_previous
from orchestrator.lab.faults import FaultPlan
from orchestrator.lab.iis_http import IisHttp
from orchestrator.lab.kdc import LabRealm
from orchestrator.lab.server import EXCHANGE, POWERSHELL, Endpoint, LabServer
from orchestrator.lab.tls_services import ServedCert, TlsServices
from orchestrator.playbook import LAB_DEFAULT_PASSWORD, AcmeIssuer, Issuer, LoadedPlaybook, Playbook, SecretRef, Server

LAB_DOMAIN = "lab.exmig.test"

# Where a rehearsal's client finds the lab ACME's TSIG secret and EAB key (generated per lab; set by rehearse).
ACME_LAB_TSIG_ENV = "EXMIG_LAB_ACME_TSIG_SECRET"
ACME_LAB_EAB_ENV = "EXMIG_LAB_ACME_EAB_HMAC"


@dataclass
class EmulatedServer:
    server: Server
    model: ExchangeServerModel
    winrm: LabServer
    tls: TlsServices
    username: str
    password: str
    realm: LabRealm | None = None
    # The Default Web Site over plain HTTP, where an ACME CA fetches http-01 tokens (acme issuer only).
    iis: IisHttp | None = None

    @property
    def inspector(self) -> ServerInspector:
        return ServerInspector(self.model)

    def describe(self, ca_file: Path) -> dict[str, Any]:
        ep = self.server.exchange_endpoint
        scheme = self.winrm.scheme
        paths = dict.fromkeys([ep.path, "/wsman"])
        return {
            "name": self.server.name,
            "version": self.server.version,
            "exchange_url": f"{scheme}://127.0.0.1:{self.winrm.port}{ep.path}",
            "configuration_name": ep.configuration,
            "wsman_url": f"{scheme}://127.0.0.1:{self.winrm.port}/wsman",
            # What a client can authenticate with, per endpoint path.
            "auth": {path: self.winrm.auth.offered(path.lower()) for path in paths},
            "realm": self.realm.realm if self.realm else None,
            "krb5_config": str(self.realm.krb5_config) if self.realm else None,
            "spn": f"{self.server.spn_service}/{self.server.spn_hostname}" if self.realm else None,
            "username": principal_name(self.username) if self.realm and "@" in self.username else self.username,
            "password": self.password,  # lab credentials are not secrets
            "tls_ports": dict(self.tls.ports),
            "ca_file": str(ca_file),
        }


def lab_password(server: Server) -> str:
    ref = server.credentials.password
    if ref is not None and ref.env is not None and os.environ.get(ref.env):
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
    if auth == "kerberos":
        # A WinRM listener with Kerberos enabled offers both headers (Negotiate carries Kerberos too).
        return ("negotiate", "kerberos")
    if auth == "basic":
        return ("basic",)
    raise UsageError(
        f"servers[{server.name}].connection.auth: the lab speaks Kerberos, NTLM/Negotiate and Basic, not {auth}; "
        "use `auth: kerberos` or `auth: ntlm` in a lab playbook"
    )


def lab_fqdn(name: str, host: str) -> str:
    """A lab server's FQDN: the playbook's host where it is a DNS name (the twin of production), else
    <name>.lab.exmig.test."""
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if "." in host and host.lower() != "localhost":
            return host.lower()
    return f"{name.lower()}.{LAB_DOMAIN}"


def playbook_realm(playbook: Playbook) -> str | None:
    """The Kerberos realm a lab for this playbook runs: that of the user names of its Kerberos servers."""
    realms: dict[str, str] = {}
    for server in playbook.servers:
        user = server.credentials.username
        if server.auth not in ("kerberos", "negotiate") or not isinstance(user, str):
            continue
        realm = realm_of(user)
        if realm is not None:
            realms.setdefault(realm, server.name)
        elif server.auth == "kerberos":  # the playbook rules make this unreachable; kept as a clear error
            raise UsageError(f"servers[{server.name}].credentials.username: Kerberos needs user@REALM")
    if len(realms) > 1:
        (a, sa), (b, sb) = list(realms.items())[:2]
        raise UsageError(f"the lab runs one Kerberos realm; {sa} is in {a} and {sb} in {b}: use one realm's users")
    return next(iter(realms), None)


def lab_endpoints(version: int, settings: LabSettings) -> tuple[Endpoint, ...]:
    """The session configurations an emulated server offers, with the PowerShell behind each."""
    system = replace(POWERSHELL, powershell=settings.windows_powershell)
    if version == 2010:
        return replace(EXCHANGE, powershell=settings.exchange_powershell), system
    return (system,)


class LabSite:
    """All emulated servers of one playbook; start() listens, stop() shuts down (state stays on disk)."""

    def __init__(self, loaded: LoadedPlaybook | Playbook, state_dir: Path, settings: LabSettings | None = None,
                 latency: float = 0.0, use_playbook_ports: bool = True, tls_services: bool = True,
                 costs: LabCosts = NO_COSTS, limits: LabLimits | dict[str, LabLimits] | None = None,
                 fqdns: dict[str, str] | None = None, acme_blocked: tuple[str, ...] = ()) -> None:
        self.playbook = loaded.playbook if isinstance(loaded, LoadedPlaybook) else loaded
        self.state_dir = Path(state_dir)
        self.ca = LabCA.load_or_create(self.state_dir / "ca")
        self.ca_file = self.ca.write_ca_file(self.state_dir / "lab-ca.pem")
        self.settings = settings or LabSettings(third_party_roots=(self.ca.root_pem,))
        self.latency = latency
        self.use_playbook_ports = use_playbook_ports
        self.tls_services = tls_services
        # What real servers cost and allow (costs.py): no costs by default (tests, quick rehearsals), the
        # documented WinRM 2.0 / Exchange 2010 limits always (exmig must live within them); limits may be
        # given per server name.
        self.costs = costs
        self.limits = limits if limits is not None else LabLimits()
        self.servers: dict[str, EmulatedServer] = {}
        # Each server's FQDN, which a fresh install's URLs and connectors use (rehearse: the production host).
        self.fqdns = dict(fqdns or {})
        # Names the lab's ACME CA refuses to issue for (pebble's domainBlocklist): to rehearse a CA's refusal.
        self.acme_blocked = acme_blocked
        self.realm: LabRealm | None = None
        # pebble and named for a playbook whose issuer is acme (acme_services.py), started with the lab.
        self.acme: LabAcme | None = None
        self.kept_state: list[str] = []  # servers whose saved state kept them from getting a previous certificate

    def _start_realm(self) -> None:
        realm = playbook_realm(self.playbook)
        if realm is None:
            return
        kerberos = [(lab_username(s), lab_password(s)) for s in self.playbook.servers
                    if s.auth in ("kerberos", "negotiate")]
        users = {user: password for user, password in kerberos if "@" in user}
        folder = self.state_dir / "kerberos"
        shutil.rmtree(folder, ignore_errors=True)  # a new database and new keys for every start
        self.realm = LabRealm(realm, folder, users, hosts=[s.spn_hostname for s in self.playbook.servers])
        self.realm.start()

    def _start_acme(self) -> None:
        issuer = self.playbook.issuer
        if not isinstance(issuer, AcmeIssuer):
            return
        names = {name: issuer.servers_for(name, self.playbook.servers, self.playbook.certificate)
                 for name in self.playbook.certificate.domains}
        eab = {issuer.eab.kid: new_eab_hmac()} if issuer.eab is not None else {}
        self.acme = LabAcme(self.state_dir / "acme", names, [s.name for s in self.playbook.servers],
                            eab_keys=eab, blocked=self.acme_blocked).start()

    @property
    def issuing_roots(self) -> Path:
        """The root(s) what the servers present must verify to: pebble's for an acme issuer, else the lab CA's."""
        return self.acme.root_file if self.acme is not None else self.ca_file

    def acme_secrets(self) -> dict[str, str]:
        """The environment a rehearsal's client reads the lab ACME's secrets from (playbook_for_lab names them)."""
        if self.acme is None or self.acme.dns is None:
            return {}
        values = {ACME_LAB_TSIG_ENV: self.acme.dns.tsig_secret}
        for hmac in self.acme.eab_keys.values():
            values[ACME_LAB_EAB_ENV] = hmac
        return values

    def limits_for(self, name: str) -> LabLimits:
        if isinstance(self.limits, dict):
            return self.limits.get(name, LabLimits())
        return self.limits

    def notes(self) -> list[str]:
        """What the lab says once: where it is kinder than production, and switches its saved state overrides."""
        kept = [f"note: {name}: its saved state in {self.state_dir / name} is kept, so --previous-certificate does not "
                "apply to it; remove that folder for a server that starts with one" for name in self.kept_state]
        if self.realm is not None:
            return kept
        return kept + [f"note: {s.name}: the lab accepts NTLM on /PowerShell; a real Exchange 2010 endpoint takes "
                       "Kerberos only (auth: kerberos, user@REALM)" for s in self.playbook.servers
                       if s.version == 2010 and s.auth in ("ntlm", "negotiate")]

    def _build(self, server: Server) -> EmulatedServer:
        ep = server.exchange_endpoint
        if self.use_playbook_ports and server.version == 2010 and ep.port != server.system_endpoint.port:
            raise UsageError(
                f"servers[{server.name}].connection: the lab serves both endpoints on one port; set system_port "
                f"to {ep.port} (the same as port)"
            )
        # A Kerberos lab keeps each server's SPN host name (production's), whatever address it listens on.
        fqdn = self.fqdns.get(server.name) or lab_fqdn(server.name, server.connection.spn_hostname
                                                       or server.connection.host)
        fresh = store.read_state(self.state_dir / server.name) is None
        model = ExchangeServerModel.load_or_create(self.state_dir / server.name, name=server.name,
                                                   version=str(server.version), fqdn=fqdn)
        if self.settings.previous_certificate and fresh:
            certificate = self.playbook.certificate
            install_previous(model, self.ca, certificate.subject.x500(), list(certificate.domains))
        elif self.settings.previous_certificate:
            # Only on a new server: a restarted lab keeps what the run did (a retired certificate stays gone).
            self.kept_state.append(server.name)
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
        apply_costs(registry, self.costs)
        limits = self.limits_for(server.name)
        keys, kerberos_only = None, ()
        if self.realm is not None:
            service = self.realm.services[server.spn_hostname.lower()]
            keys = KerberosKeys(service.keytab, self.realm.rcache_dir)
            if server.version == 2010 and self.settings.exchange_kerberos_only:
                kerberos_only = (ep.path,)
        winrm = LabServer(server.name, registry, {username: password}, configurations=configurations,
                          auth=_auth_schemes(server), tls=tls, port=ep.port if self.use_playbook_ports else 0,
                          latency=self.latency, faults=FaultPlan(), kerberos=keys, kerberos_only=kerberos_only,
                          costs=self.costs, limits=limits)
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
        iis = None
        if self.acme is not None and self.acme.pebble is not None:
            iis = IisHttp(server.name, model.fs, host=self.acme.addresses[server.name],
                          port=self.acme.pebble.http_port, require_ssl=lambda: model.iis_require_ssl)
        return EmulatedServer(server, model, winrm, TlsServices(server.name, source, ports=ports), username, password,
                              self.realm, iis)

    def start(self) -> Self:
        try:
            self._start_realm()
            self._start_acme()
            for server in self.playbook.servers:
                emulated = self._build(server)
                self.servers[server.name] = emulated
                emulated.winrm.start()
                emulated.tls.start()
                if emulated.iis is not None:
                    emulated.iis.start()
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
            if emulated.iis is not None:
                emulated.iis.stop()
        if self.realm is not None:
            self.realm.stop()
        if self.acme is not None:
            self.acme.stop()

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
            # Kerberos keeps asking for the SPN of the name the playbook gave, now that the host is 127.0.0.1.
            spn_hostname = server.spn_hostname if self.realm is not None else server.connection.spn_hostname
            connection = server.connection.model_copy(update={
                "host": "127.0.0.1", **ports, "spn_hostname": spn_hostname,
                "ca_file": str(self.ca_file) if emulated.winrm.scheme == "https" else server.connection.ca_file,
            })
            # Without TLS services `.ports` is empty and the playbook's own TLS ports stay.
            tls_ports = server.tls_ports.model_copy(update=dict(emulated.tls.ports))
            servers.append(server.model_copy(update={"connection": connection, "tls_ports": tls_ports}))
        return self.playbook.model_copy(update={"servers": servers, "issuer": self._lab_issuer()})

    def _lab_issuer(self) -> Issuer:
        """An acme issuer pointed at the lab's pebble and named; the servers must trust pebble's root, which
        exmig installs from its file (install_root). Other issuers stay as they are."""
        issuer = self.playbook.issuer
        if self.acme is None or not isinstance(issuer, AcmeIssuer):
            return issuer
        found = self.acme.issuer_overrides()
        update: dict[str, Any] = {"directory": found["directory"], "ca_bundle": found["ca_bundle"],
                                  "root": found["root"], "install_root": True}
        if issuer.dns is not None:
            dns = found["dns"]
            assert isinstance(dns, dict)
            update["dns"] = issuer.dns.model_copy(update={**dns, "tsig_secret": SecretRef(env=ACME_LAB_TSIG_ENV)})
        if issuer.eab is not None:
            update["eab"] = issuer.eab.model_copy(update={"hmac": SecretRef(env=ACME_LAB_EAB_ENV)})
        return issuer.model_copy(update=update)
