"""Kerberos tests run against a real MIT KDC (Debian krb5-kdc, krb5-admin-server) that each test starts.

Where the programs or GSSAPI are missing, the tests skip with the install command; in CI (CI=true) they
fail instead, so a CI machine without them cannot pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.auth import KerberosKeys
from orchestrator.lab.kdc import INSTALL_HINT, LabRealm, gssapi_available, missing_programs
from orchestrator.lab.server import LabServer
from tests.lab_protocol.conftest import make_registry

REALM = "MITSERV.NET"
USER = f"administrator@{REALM}"
PASSWORD = "exmig-Lab-2010!"
HOST = "ex2010.mitserv.net"


def require_kerberos() -> None:
    missing = missing_programs()
    reason = ""
    if missing:
        reason = f"the MIT KDC is not installed ({', '.join(missing)}): {INSTALL_HINT}"
    elif not gssapi_available():
        reason = "GSSAPI is missing from this Python: pip install -e '.[kerberos]' (needs libkrb5-dev)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Kerberos tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _kerberos_programs() -> None:
    require_kerberos()


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.fixture
def make_realm(tmp_path: Path) -> Iterator[Callable[..., LabRealm]]:
    """Start realms for a test; after it, every KDC must be stopped and its process gone."""
    started: list[LabRealm] = []

    def make(users: dict[str, str] | None = None, hosts: tuple[str, ...] = (HOST,), **kw: Any) -> LabRealm:
        realm = LabRealm(REALM, tmp_path / f"realm-{len(started)}", users or {USER: PASSWORD}, hosts=hosts, **kw)
        realm.start()
        started.append(realm)
        return realm

    yield make
    pids = [r.pid for r in started if r.pid is not None]
    for realm in started:
        realm.stop()
    assert all(process_gone(pid) for pid in pids), "a KDC outlived its test"


@pytest.fixture
def realm(make_realm: Callable[..., LabRealm]) -> Iterator[LabRealm]:
    """A realm with the client side of this process pointed at it (KRB5_CONFIG, a private ccache)."""
    realm = make_realm()
    with realm.client_environment():
        yield realm


def keys_for(realm: LabRealm, host: str = HOST) -> KerberosKeys:
    service = realm.services[host]
    return KerberosKeys(service.keytab, realm.rcache_dir)


@pytest.fixture
def kerberos_server(realm: LabRealm) -> Iterator[Callable[..., LabServer]]:
    """Lab servers accepting Kerberos with the realm's keytab for HOST; internal errors fail the test."""
    started: list[LabServer] = []

    def make(**kw: Any) -> LabServer:
        kw.setdefault("configurations", ["Microsoft.Exchange", "Microsoft.PowerShell"])
        kw.setdefault("auth", ("negotiate", "kerberos"))
        kw.setdefault("kerberos", keys_for(realm))
        srv = LabServer(kw.pop("name", "EX2010"), make_registry(), kw.pop("users", {USER.lower(): PASSWORD}), **kw)
        srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        errors = srv.errors
        srv.stop()
        assert not errors, "\n".join(errors)
