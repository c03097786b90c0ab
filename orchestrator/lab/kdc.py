"""A real MIT Kerberos realm for the lab: `krb5kdc` on 127.0.0.1, private configuration, keytabs.

Exchange 2010's remote PowerShell is used with Kerberos, so a rehearsal that only ever speaks NTLM
tests something production never does. Instead of imitating Kerberos, the lab runs Debian's MIT KDC
(packages krb5-kdc, krb5-admin-server) for the playbook's realm:

- everything lives in one private folder: `kdc.conf` (KRB5_KDC_PROFILE), `krb5.conf` (KRB5_CONFIG
  for the clients it serves; the acceptors need only their keytab), the database and its stash, one keytab per
  emulated server, the replay cache (KRB5RCACHEDIR) and the KDC's log; nothing global changes and
  no root is needed;
- `kdb5_util create` makes the database, `kadmin.local` adds the users (with pre-authentication
  required, as Active Directory does) and each server's service principals (`HTTP/`, `host/` and
  `WSMAN/` on its name) and writes their keys to the server's keytab;
- `krb5kdc -n` runs in the foreground as our child. On Linux the child asks the kernel to kill it
  when its parent dies (PR_SET_PDEATHSIG), so a lab killed with SIGKILL leaves no KDC behind; a
  normal stop terminates it and waits.

Client-side settings that matter (MIT krb5.conf(5)): `rdns = false` and
`dns_canonicalize_hostname = false` keep the SPN on the name exmig was given (the emulated servers
are all 127.0.0.1), `udp_preference_limit = 1` keeps the conversation on TCP, and `dns_lookup_*` are
off: the lab never asks a DNS server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from orchestrator.errors import UsageError
from orchestrator.kerberos import principal_name
from orchestrator.lab.children import die_with_parent, find_program, free_port, stop_child
from orchestrator.lab.environ import overridden

KDC_PROGRAMS = ("krb5kdc", "kdb5_util", "kadmin.local")
INSTALL_HINT = "apt-get install krb5-kdc krb5-admin-server"
# The SPN services a Windows host answers for: HOST (which AD maps to HTTP and WSMAN), HTTP (IIS,
# Exchange 2010's /PowerShell) and WSMAN (the WinRM listener).
SERVICE_CLASSES = ("HTTP", "host", "WSMAN")
START_TIMEOUT = 10.0


class KdcUnavailable(UsageError):
    """The MIT KDC programs are not installed (or not runnable) on this machine."""


def missing_programs() -> list[str]:
    return [p for p in KDC_PROGRAMS if find_program(p) is None]


def gssapi_available() -> bool:
    try:
        import gssapi  # noqa: F401
    except ImportError:
        return False
    return True


def _require_programs(what: str, otherwise: str = "") -> None:
    missing = missing_programs()
    if missing:
        raise KdcUnavailable(f"{what} needs the MIT KDC ({', '.join(missing)} not found): {INSTALL_HINT}"
                             + (f", {otherwise}" if otherwise else ""))


def require_kerberos(what: str, otherwise: str) -> None:
    """One line naming the install command when a Kerberos lab cannot run here."""
    _require_programs(what, otherwise)
    if not gssapi_available():
        raise KdcUnavailable(f"{what} needs GSSAPI in exmig's Python: pip install 'exmig[kerberos]' (on Debian "
                             f"first apt-get install libkrb5-dev), {otherwise}")


@dataclass
class ServicePrincipals:
    """One emulated server's Kerberos identity: its host name and the keytab holding its SPNs' keys."""

    hostname: str
    keytab: Path


@dataclass
class LabRealm:
    """An MIT realm in `directory`, served by a `krb5kdc` child on 127.0.0.1:`port`.

    `users` are {principal: password} (principal as `user@REALM` or bare `user`); `hosts` the names
    the emulated servers are known by (the SPN host part), each with its own keytab."""

    realm: str
    directory: Path
    users: dict[str, str]
    hosts: Iterable[str] = ()
    host: str = "127.0.0.1"
    port: int = 0
    clockskew: int = 300
    # MIT clients correct their clock by the KDC's when it differs (kdc_timesync); off, a skewed clock fails.
    client_timesync: bool = True
    kdc_env: dict[str, str] = field(default_factory=dict)  # e.g. LD_PRELOAD/FAKETIME for clock-skew tests
    services: dict[str, ServicePrincipals] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.realm = self.realm.upper()
        self.directory = Path(self.directory)
        self.hosts = tuple(dict.fromkeys(h.lower() for h in self.hosts))

    # --- files -------------------------------------------------------------------------------

    @property
    def krb5_config(self) -> Path:
        return self.directory / "krb5.conf"

    @property
    def kdc_profile(self) -> Path:
        return self.directory / "kdc.conf"

    @property
    def rcache_dir(self) -> Path:
        return self.directory / "rcache"

    @property
    def log_file(self) -> Path:
        return self.directory / "kdc.log"

    def principal(self, user: str) -> str:
        return principal_name(user) if "@" in user else f"{user}@{self.realm}"

    def _write_configs(self) -> None:
        d = self.directory
        domains = sorted({h.split(".", 1)[1] for h in self.hosts if "." in h})
        domain_realm = "".join(f" .{dom} = {self.realm}\n {dom} = {self.realm}\n" for dom in domains)
        self.krb5_config.write_text(
            "[libdefaults]\n"
            f" default_realm = {self.realm}\n"
            " dns_lookup_kdc = false\n dns_lookup_realm = false\n"
            " rdns = false\n dns_canonicalize_hostname = false\n"
            " udp_preference_limit = 1\n"
            f" clockskew = {self.clockskew}\n"
            f" kdc_timesync = {1 if self.client_timesync else 0}\n"
            " ticket_lifetime = 10h\n renew_lifetime = 7d\n forwardable = true\n"
            "[realms]\n"
            f" {self.realm} = {{\n  kdc = {self.host}:{self.port}\n }}\n"
            "[domain_realm]\n" + domain_realm,
            encoding="utf-8",
        )
        self.kdc_profile.write_text(
            "[kdcdefaults]\n"
            f" kdc_listen = {self.host}:{self.port}\n kdc_tcp_listen = {self.host}:{self.port}\n"
            "[realms]\n"
            f" {self.realm} = {{\n"
            f"  database_name = {d / 'principal'}\n"
            f"  key_stash_file = {d / 'stash'}\n"
            f"  acl_file = {d / 'kadm5.acl'}\n"
            f"  kdc_listen = {self.host}:{self.port}\n  kdc_tcp_listen = {self.host}:{self.port}\n"
            "  max_life = 10h\n  max_renewable_life = 7d\n"
            "  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
            " }\n"
            "[logging]\n"
            f" kdc = FILE:{self.log_file}\n",
            encoding="utf-8",
        )
        (d / "kadm5.acl").write_text("", encoding="utf-8")

    def admin_env(self) -> dict[str, str]:
        """The environment the MIT programs run with: only this realm's files, never /etc/krb5.conf."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
        env.update(KRB5_CONFIG=str(self.krb5_config), KRB5_KDC_PROFILE=str(self.kdc_profile),
                   KRB5RCACHEDIR=str(self.rcache_dir))
        return env

    def _run(self, program: str, *args: str, stdin: str | None = None) -> None:
        path = find_program(program)
        if path is None:
            raise KdcUnavailable(f"{program} is not installed; {INSTALL_HINT}")
        result = subprocess.run([path, *args], input=(stdin or "").encode(), env=self.admin_env(),
                                capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            text = (result.stderr or result.stdout).decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"{program} {' '.join(args[:2])} failed: {text[-1] if text else result.returncode}")

    def _kadmin(self, *queries: str) -> None:
        # kadmin.local reads its queries from -q one at a time; each is a fixed kadmin command with
        # names exmig validated (principal names cannot hold quotes or spaces: see playbook rules).
        for query in queries:
            self._run("kadmin.local", "-r", self.realm, "-q", query)

    def add_user(self, principal: str, password: str) -> None:
        # Quoted for kadmin's own tokenizer; the lab's passwords are its documented lab passwords.
        if any(ch in password for ch in "\"\n\\"):
            raise UsageError("the lab's Kerberos users cannot have a password with a quote, backslash or newline")
        self._kadmin(f'addprinc +requires_preauth -pw "{password}" {self.principal(principal)}')

    def _provision(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self.rcache_dir.mkdir(exist_ok=True)
        self._write_configs()
        # The master key protects only this throw-away database.
        self._run("kdb5_util", "create", "-s", "-W", "-r", self.realm, "-P", secrets.token_hex(16))
        for user, password in self.users.items():
            self.add_user(user, password)
        for hostname in self.hosts:
            principals = tuple(f"{cls}/{hostname}@{self.realm}" for cls in SERVICE_CLASSES)
            keytab = self.directory / f"{hostname}.keytab"
            self._kadmin(*(f"addprinc -randkey {p}" for p in principals))
            self._kadmin(f"ktadd -k {keytab} {' '.join(principals)}")
            os.chmod(keytab, 0o600)
            self.services[hostname] = ServicePrincipals(hostname, keytab)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        _require_programs("the lab's Kerberos realm")
        if not self.port:
            self.port = free_port(self.host)
        self._provision()
        env = self.admin_env()
        env.update(self.kdc_env)
        path = find_program("krb5kdc")
        assert path is not None
        log = open(self.directory / "krb5kdc.out", "ab")  # noqa: SIM115 - the child owns it from here
        try:
            self._process = subprocess.Popen(
                [path, "-n", "-r", self.realm, "-P", str(self.directory / "kdc.pid")],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        finally:
            log.close()
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                tail = (self.directory / "krb5kdc.out").read_text(errors="replace").strip().splitlines()
                raise RuntimeError(f"krb5kdc exited at start ({self._process.returncode}): "
                                   f"{tail[-1] if tail else 'see ' + str(self.log_file)}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"krb5kdc did not listen on {self.host}:{self.port} within {START_TIMEOUT:.0f} s")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_child(process)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- clients -----------------------------------------------------------------------------

    def kinit(self, principal: str, password: str, ccache: Path) -> None:
        """A ticket for `principal` in the file cache `ccache`, as an admin's `kinit` makes it."""
        path = find_program("kinit")
        if path is None:
            raise KdcUnavailable("kinit is not installed; apt-get install krb5-user")
        env = self.admin_env()
        env["KRB5CCNAME"] = f"FILE:{ccache}"
        result = subprocess.run([path, self.principal(principal)], input=f"{password}\n".encode(), env=env,
                                capture_output=True, timeout=30, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"kinit failed: {result.stderr.decode(errors='replace').strip()}")

    def client_environment(self, ccache: Path | None = None) -> contextlib.AbstractContextManager[None]:
        """KRB5_CONFIG (and a private credential cache) for clients in this process, restored after."""
        return overridden({"KRB5_CONFIG": str(self.krb5_config),
                           "KRB5CCNAME": f"FILE:{ccache or self.directory / 'client.ccache'}"})
