"""A real ACME CA and a real DNS server for the lab: Let's Encrypt's `pebble` and ISC `named` on 127.0.0.1.

Instead of imitating RFC 8555 or RFC 2136, the lab runs Debian's programs (packages pebble, bind9), each
from a private folder with its own configuration, on ports chosen at run time, as our child (it dies with
the lab even after SIGKILL: children.die_with_parent):

- `LabDns`: `named -g` (foreground) serving one test zone (mitserv.net by default) with the A records the
  lab's names point at, a TSIG key and `allow-update { key ...; }` for that key only (RFC 2136 updates
  with TSIG, RFC 8945, as a real zone set up for dns-01 has); no recursion, no rndc channel.
- `LabPebble`: `pebble` with its own TLS certificate (an EC certificate made here; `tls_ca_file` is what
  a client verifies the directory with), its DNS resolver pointed at a `LabDns` (`-dnsserver`), http-01
  validation on `http_port` (the port the lab's emulated IIS answers plain HTTP on, iis_http.py),
  PEBBLE_VA_NOSLEEP=1 (no random validation delays), no nonce rejection and no authorization reuse (so a
  test sees every challenge it caused), external account binding keys when a test wants EAB, and names
  it refuses (`blocked`, pebble's domainBlocklist). Its root is made at start and served on the
  management API (`/roots/0`, `root_pem()`): that root is what the servers must trust
  (issuer.install_root; roots.py).

Pebble's documented settings: https://github.com/letsencrypt/pebble (README: "Testing at full speed",
"Invalid Anti-Replay Nonce Errors", "Authorization Reuse", "External Account Binding", "Default DNS
resolver"); named.conf(5) for bind9.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.errors import UsageError
from orchestrator.lab.children import die_with_parent, find_program, free_port, stop_child
from orchestrator.lab.tls_services import check_loopback

PEBBLE_HINT = "apt-get install pebble"
BIND_HINT = "apt-get install bind9"
START_TIMEOUT = 15.0
LAB_ZONE = "mitserv.net"
TSIG_NAME = "exmig-acme."
TSIG_ALGORITHM = "hmac-sha256"
# Let's Encrypt's lifetime (pebble's default is five years, which no renewal test could reach).
VALIDITY_DAYS = 90


class AcmeLabUnavailable(UsageError):
    """pebble or named is not installed (or not runnable) on this machine."""


def missing_programs(dns: bool = True) -> list[str]:
    """The programs an ACME lab needs that are not installed (named only when dns-01 is rehearsed)."""
    wanted = ["pebble"] + (["named"] if dns else [])
    return [p for p in wanted if find_program(p) is None]


def _require(program: str, hint: str) -> str:
    path = find_program(program)
    if path is None:
        raise AcmeLabUnavailable(f"the lab's ACME rehearsal needs {program}, which is not installed: {hint}")
    return path


class _Child:
    """One program run in the foreground as our child, its output in `log`."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str], env: Mapping[str, str]) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it from here
        try:
            self.process = subprocess.Popen(
                argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        finally:
            out.close()

    def wait_listening(self, host: str, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start ({self.process.returncode}): {self.last_line()}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {host}:{port} within {START_TIMEOUT:.0f} s: "
                           f"{self.last_line()}")

    def last_line(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"see {self.log}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_child(process)


class _ChildService:
    """What pebble and named share as lab services: one child process, its pid, stopping, `with`."""

    _child: _Child | None

    def start(self) -> Self:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _private_folder(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


# --- bind9 ---------------------------------------------------------------------------------------


@dataclass
class LabDns(_ChildService):
    """`named` serving `zone` from `directory` on `host`:`port` (TCP and UDP), updatable with the TSIG key.

    `records` are {name: IPv4 address} A records in the zone (names the lab's servers answer for).
    `name_servers` are the zone's NS as {label: address} (default ns1 at `host`): a second one on another
    loopback address (same port) rehearses a secondary. `tsig_secret` (base64) is generated unless given."""

    directory: Path
    zone: str = LAB_ZONE
    records: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    name_servers: dict[str, str] = field(default_factory=dict)
    tsig_name: str = TSIG_NAME
    tsig_algorithm: str = TSIG_ALGORITHM
    tsig_secret: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
                             repr=False)
    host: str = "127.0.0.1"
    port: int = 0
    _child: _Child | None = None

    def __post_init__(self) -> None:
        check_loopback(self.host)
        self.directory = Path(self.directory)
        self.zone = self.zone.rstrip(".").lower()
        if not self.tsig_name.endswith("."):
            self.tsig_name += "."

    @property
    def server(self) -> str:
        """host:port, as a playbook's `issuer.dns.server` names it."""
        return f"{self.host}:{self.port}"

    @property
    def conf(self) -> Path:
        return self.directory / "named.conf"

    @property
    def zone_file(self) -> Path:
        return self.directory / f"{self.zone}.zone"

    def _write_configs(self) -> None:
        d = self.directory
        key = self.tsig_name.rstrip(".")
        # Every path named.conf mentions is inside the private folder; the TSIG secret is a lab secret.
        self.conf.write_text(
            "options {\n"
            f'  directory "{d}";\n'
            f'  pid-file "{d / "named.pid"}";\n'
            f'  session-keyfile "{d / "session.key"}";\n'
            f'  managed-keys-directory "{d}";\n'
            f"  listen-on port {self.port} {{ {self.host}; }};\n"
            "  listen-on-v6 { none; };\n"
            "  recursion no;\n  dnssec-validation no;\n  allow-transfer { none; };\n  notify no;\n"
            "};\n"
            "controls { };\n"
            f'key "{key}" {{ algorithm {self.tsig_algorithm}; secret "{self.tsig_secret}"; }};\n'
            f'zone "{self.zone}" {{\n  type primary;\n  file "{self.zone_file}";\n'
            f'  allow-update {{ key "{key}"; }};\n}};\n',
            encoding="utf-8",
        )
        os.chmod(self.conf, 0o600)
        name_servers = self.name_servers or {"ns1": self.host}
        first = next(iter(name_servers))
        lines = ["$TTL 60", f"@ IN SOA {first}.{self.zone}. hostmaster.{self.zone}. 1 60 60 600 60"]
        lines += [f"@ IN NS {label}.{self.zone}." for label in name_servers]
        lines += [f"{label} IN A {address}" for label, address in name_servers.items()]
        for name, addresses in sorted(self.records.items()):
            relative = self._relative(name)
            for address in (addresses,) if isinstance(addresses, str) else addresses:
                lines.append(f"{relative} IN A {address}")
        self.zone_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _relative(self, name: str) -> str:
        name = name.rstrip(".").lower()
        if name == self.zone:
            return "@"
        if not name.endswith("." + self.zone):
            raise ValueError(f"{name} is not in the lab's zone {self.zone}")
        return name[: -len(self.zone) - 1]

    def start(self) -> Self:
        path = _require("named", BIND_HINT)
        _private_folder(self.directory)
        if not self.port:
            self.port = free_port(self.host)
        self._write_configs()
        self._child = _Child("named", self.directory / "named.out")
        # -g: foreground, log to stderr; -4: IPv4 only (the lab is 127.0.0.1).
        self._child.start([path, "-g", "-4", "-c", str(self.conf)], os.environ)
        try:
            self._wait_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_serving(self) -> None:
        assert self._child is not None
        self._child.wait_listening(self.host, self.port)
        # named listens before the zone is loaded; the SOA answer says it is.
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, dns.exception.DNSException):
                answer = dns.query.udp(dns.message.make_query(self.zone, "SOA"), self.host, port=self.port,
                                       timeout=0.5)
                if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"named did not serve {self.zone} within {START_TIMEOUT:.0f} s: {self._child.last_line()}")

    def txt(self, name: str) -> list[str]:
        """The TXT values at `name` now (what a test checks is gone afterwards)."""
        import dns.message
        import dns.query
        import dns.rdatatype

        answer = dns.query.udp(dns.message.make_query(name.rstrip(".") + ".", "TXT"), self.host, port=self.port,
                               timeout=2)
        return [b"".join(r.strings).decode() for rrset in answer.answer if rrset.rdtype == dns.rdatatype.TXT
                for r in rrset]


# --- pebble --------------------------------------------------------------------------------------


def _tls_certificate(host: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for pebble's HTTPS: self-signed, a CA of itself, for `host` and localhost."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exmig lab pebble")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def new_eab_hmac() -> str:
    """A fresh EAB MAC key, base64url without padding, as CAs hand them out (and pebble's config takes them)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


@dataclass
class LabPebble(_ChildService):
    """`pebble` from `directory` on `host` (ACME on `port`, management on `management_port`).

    `dns` is the resolver pebble validates with (a LabDns: its A records for http-01, its TXT records for
    dns-01); `http_port` the port http-01 validation connects to (0: chosen now). `eab_keys` ({kid: hmac,
    base64url}) make external account binding required; `blocked` names pebble refuses to issue for."""

    directory: Path
    dns: LabDns | None = None
    http_port: int = 0
    eab_keys: dict[str, str] = field(default_factory=dict, repr=False)
    blocked: tuple[str, ...] = ()
    validity_days: int = VALIDITY_DAYS
    host: str = "127.0.0.1"
    port: int = 0
    management_port: int = 0
    _child: _Child | None = None

    def __post_init__(self) -> None:
        check_loopback(self.host)
        self.directory = Path(self.directory)

    @property
    def directory_url(self) -> str:
        """The ACME directory URL (issuer.directory)."""
        return f"https://{self.host}:{self.port}/dir"

    @property
    def tls_ca_file(self) -> Path:
        """What a client verifies pebble's HTTPS with (not the ACME root: that is root_pem())."""
        return self.directory / "pebble-tls.pem"

    @property
    def config(self) -> Path:
        return self.directory / "pebble-config.json"

    def _write_configs(self) -> None:
        cert_pem, key_pem = _tls_certificate(self.host)
        self.tls_ca_file.write_bytes(cert_pem)
        key_file = self.directory / "pebble-tls.key"
        key_file.write_bytes(key_pem)
        os.chmod(key_file, 0o600)
        settings: dict[str, object] = {
            "listenAddress": f"{self.host}:{self.port}",
            "managementListenAddress": f"{self.host}:{self.management_port}",
            "certificate": str(self.tls_ca_file),
            "privateKey": str(key_file),
            "httpPort": self.http_port,
            "tlsPort": free_port(self.host, udp=False),  # tls-alpn-01 is not used; the port must be given
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(self.eab_keys),
            "externalAccountMACKeys": dict(self.eab_keys),
            "domainBlocklist": list(self.blocked),
            "certificateValidityPeriod": self.validity_days * 86400,
        }
        self.config.write_text(json.dumps({"pebble": settings}, indent=1), encoding="utf-8")
        os.chmod(self.config, 0o600)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0",
                   PEBBLE_ALTERNATE_ROOTS="0")
        return env

    def start(self) -> Self:
        path = _require("pebble", PEBBLE_HINT)
        _private_folder(self.directory)
        self.port = self.port or free_port(self.host, udp=False)
        self.management_port = self.management_port or free_port(self.host, udp=False)
        self.http_port = self.http_port or free_port(self.host, udp=False)
        self._write_configs()
        argv = [path, "-config", str(self.config)]
        if self.dns is not None:
            argv += ["-dnsserver", self.dns.server]
        self._child = _Child("pebble", self.directory / "pebble.out")
        self._child.start(argv, self.environment())
        try:
            self._child.wait_listening(self.host, self.port)
            self._child.wait_listening(self.host, self.management_port)
        except BaseException:
            self.stop()
            raise
        return self

    def _management(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.tls_ca_file))
        url = f"https://{self.host}:{self.management_port}{path}"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:  # noqa: S310 - loopback https
            return bytes(response.read())

    def root_pem(self) -> bytes:
        """The root pebble issues under (made at its start): what the servers must trust."""
        return self._management("/roots/0")

    def intermediate_pem(self) -> bytes:
        return self._management("/intermediates/0")

    def write_root(self, path: Path) -> Path:
        """The root as a PEM file, e.g. for a playbook's issuer.root."""
        path = Path(path)
        path.write_bytes(self.root_pem())
        return path


# --- both, for one playbook ----------------------------------------------------------------------


def http_addresses(server_names: list[str]) -> dict[str, str]:
    """A loopback address per server for its IIS's plain HTTP: 127.0.0.1, 127.0.0.2, ... in playbook order.

    http-01 connects to one port (pebble's httpPort, port 80 for a real CA) at the address the name's A record
    gives, so servers are told apart by address, as on a real network. named cannot listen on them (it binds
    only addresses configured on an interface), but the lab's Python listeners can: Linux routes all of
    127.0.0.0/8 to the loopback interface."""
    if len(server_names) > 254:
        raise ValueError("the lab gives at most 254 servers a loopback address")
    return {name: f"127.0.0.{index + 1}" for index, name in enumerate(server_names)}


@dataclass
class LabAcme:
    """pebble and named for one rehearsal: `names` are {name: [server names]} (where each name points, e.g.
    setup.http01_targets), `servers` the playbook's server names; each name's A record holds the addresses
    of its servers (http_addresses), so pebble's http-01 reaches the server the name points at."""

    directory: Path
    names: dict[str, list[str]]
    servers: list[str]
    zone: str = LAB_ZONE
    eab_keys: dict[str, str] = field(default_factory=dict, repr=False)
    blocked: tuple[str, ...] = ()
    dns: LabDns | None = None
    pebble: LabPebble | None = None

    @property
    def addresses(self) -> dict[str, str]:
        return http_addresses(self.servers)

    def start(self) -> Self:
        self.directory = Path(self.directory)
        _private_folder(self.directory)
        addresses = self.addresses
        records: dict[str, str | tuple[str, ...]] = {name: tuple(addresses[s] for s in servers)
                                                     for name, servers in self.names.items()}
        self.dns = LabDns(self.directory / "dns", zone=self.zone, records=records)
        self.pebble = LabPebble(self.directory / "pebble", dns=self.dns, eab_keys=self.eab_keys, blocked=self.blocked)
        self.dns.start()
        try:
            self.pebble.start()
            self.pebble.write_root(self.directory / "pebble-root.pem")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def root_file(self) -> Path:
        """The root the servers must trust (issuer.root with install_root: true)."""
        return self.directory / "pebble-root.pem"

    def issuer_overrides(self) -> dict[str, object]:
        """What a lab playbook's acme issuer becomes for this run: directory, ca_bundle, root, and for dns-01
        the server, zone and TSIG key name (the TSIG secret is `dns.tsig_secret`, a lab secret)."""
        assert self.dns is not None and self.pebble is not None, "start() first"
        return {"directory": self.pebble.directory_url, "ca_bundle": str(self.pebble.tls_ca_file),
                "root": str(self.root_file), "dns": {"server": self.dns.server, "zone": self.dns.zone,
                                                     "tsig_name": self.dns.tsig_name,
                                                     "tsig_algorithm": self.dns.tsig_algorithm}}

    def stop(self) -> None:
        if self.pebble is not None:
            self.pebble.stop()
        if self.dns is not None:
            self.dns.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
