"""Kerberos failures as an admin meets them: each one is one line naming the server, the principal and the
fix, through exmig's own session factory and transport against a lab server and the real KDC; only an
unreachable KDC is transient."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.commands import Command
from orchestrator.connect import session_factory
from orchestrator.errors import ExmigError, UsageError
from orchestrator.lab.kdc import LabRealm
from orchestrator.lab.server import LabServer
from orchestrator.playbook import LoadedPlaybook, Playbook, load_playbook
from orchestrator.secrets_store import SecretStore
from orchestrator.transport.base import ConnectError, TransientError
from tests.e2e.conftest import LAB_PLAYBOOK, write_playbook
from tests.kerberos.conftest import PASSWORD, USER, keys_for
from tests.kerberos.helpers import to_kerberos
from tests.lab_protocol.conftest import make_registry

FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def playbook_at(srv: LabServer, tmp: Path, **connection: Any) -> LoadedPlaybook:
    """The Kerberos lab playbook with EX2010 at `srv` (its other settings changed by `connection`)."""
    playbook: Playbook = to_kerberos(load_playbook(LAB_PLAYBOOK).playbook)
    servers = []
    for server in playbook.servers:
        if server.name == "EX2010":
            user = connection.pop("username", None)
            update = {"port": srv.port, "system_port": srv.port, **connection}
            server = server.model_copy(update={"connection": server.connection.model_copy(update=update)})
            if user is not None:
                server = server.model_copy(update={"credentials": server.credentials.model_copy(
                    update={"username": user})})
        servers.append(server)
    return load_playbook(write_playbook(playbook.model_copy(update={"servers": servers}), tmp / "pb.yml"))


def first_command(loaded: LoadedPlaybook, notes: list[str] | None = None) -> None:
    """Open EX2010's Exchange session as a run does and send one read."""
    secrets = SecretStore(loaded.playbook, interactive=False)
    opener = session_factory(loaded, secrets, notes.append if notes is not None else None)
    session = opener(loaded.playbook.server("EX2010"))
    try:
        session.invoke(Command("Get-LabSession", ()), None)  # type: ignore[arg-type]  # no blob, no secret
    finally:
        session.close()


def failure(loaded: LoadedPlaybook) -> ExmigError:
    with pytest.raises(ExmigError) as caught:
        first_command(loaded)
    assert "\n" not in str(caught.value)
    return caught.value


@pytest.fixture
def exchange(kerberos_server: Callable[..., LabServer]) -> LabServer:
    return kerberos_server(kerberos_only=("/PowerShell",))


def test_the_lab_playbook_over_kerberos_works(exchange: LabServer, tmp_path: Path) -> None:
    first_command(playbook_at(exchange, tmp_path))
    assert {r.mechanism for r in exchange.log.records() if r.action} == {"kerberos"}


def test_wrong_password(exchange: LabServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXMIG_LAB_PASSWORD", "not-the-password")
    error = failure(playbook_at(exchange, tmp_path))
    assert isinstance(error, ConnectError)
    assert str(error) == ("EX2010: Kerberos: the KDC refused the password of administrator@MITSERV.NET "
                          "(pre-authentication failed); check the password variable")


def test_unknown_principal(exchange: LabServer, tmp_path: Path) -> None:
    error = failure(playbook_at(exchange, tmp_path, username="nobody@mitserv.net"))
    assert isinstance(error, ConnectError)
    assert str(error).startswith("EX2010: Kerberos: nobody@MITSERV.NET is not known to the KDC; ")


def test_unknown_spn(exchange: LabServer, tmp_path: Path) -> None:
    error = failure(playbook_at(exchange, tmp_path, spn_hostname="mail-lb.mitserv.net"))
    assert isinstance(error, ConnectError)
    assert str(error).startswith("EX2010: Kerberos: the KDC has no service principal "
                                 "host/mail-lb.mitserv.net@MITSERV.NET; ")
    assert "spn_hostname" in str(error)


def test_spn_service_is_settable(exchange: LabServer, tmp_path: Path) -> None:
    # HTTP/ is what IIS-hosted Exchange is registered as; the lab registered it too.
    first_command(playbook_at(exchange, tmp_path, spn_service="HTTP"))
    error = failure(playbook_at(exchange, tmp_path, spn_service="CIFS"))
    assert "host" not in str(error).split("principal ")[1].split(";")[0]
    assert "CIFS/ex2010.mitserv.net@MITSERV.NET" in str(error)


def test_unreachable_kdc_is_transient(exchange: LabServer, realm: LabRealm, tmp_path: Path) -> None:
    loaded = playbook_at(exchange, tmp_path)
    realm.stop()
    error = failure(loaded)
    assert isinstance(error, TransientError)
    assert str(error) == "EX2010: Kerberos: cannot contact any KDC for the realm of administrator@MITSERV.NET"


def test_ntlm_on_the_exchange_endpoint_is_explained(exchange: LabServer, tmp_path: Path) -> None:
    error = failure(playbook_at(exchange, tmp_path, auth="ntlm", spn_hostname=None))
    assert isinstance(error, ConnectError)
    assert str(error).startswith("EX2010: Exchange refused the ntlm session without details (Received a WSManFault "
                                 "message. (No details returned by the server)); ")
    assert str(error).endswith("takes Kerberos only: set connection.auth: kerberos and credentials.username: "
                               "user@REALM")


@pytest.fixture
def skewed_realm(make_realm: Callable[..., LabRealm]) -> Iterator[LabRealm]:
    """A KDC whose clock is two hours ahead (libfaketime), and a client that does not resync to it
    (kdc_timesync = 0): pre-authentication fails with KRB_AP_ERR_SKEW, as on a workstation whose clock
    is off where the client is not allowed to adjust."""
    if not os.path.exists(FAKETIME):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the clock-skew test: {FAKETIME} missing (apt-get install faketime)")
        pytest.skip("libfaketime is not installed: apt-get install faketime")
    realm = make_realm(kdc_env={"LD_PRELOAD": FAKETIME, "FAKETIME": "+2h"}, client_timesync=False)
    with realm.client_environment():
        yield realm


def test_clock_skew(skewed_realm: LabRealm, tmp_path: Path) -> None:
    srv = LabServer("EX2010", make_registry(), {USER.lower(): PASSWORD}, configurations=["Microsoft.Exchange", "Microsoft.PowerShell"],
                    auth=("negotiate", "kerberos"), kerberos=keys_for(skewed_realm)).start()
    try:
        error = failure(playbook_at(srv, tmp_path))
    finally:
        srv.stop()
    assert isinstance(error, ConnectError)
    assert str(error).startswith("EX2010: Kerberos: clock skew too great between this machine and the domain for "
                                 "administrator@MITSERV.NET; ")


# --- the admin's own ticket --------------------------------------------------------------------


def without_password(loaded: LoadedPlaybook, tmp: Path) -> LoadedPlaybook:
    servers = [s.model_copy(update={"credentials": s.credentials.model_copy(update={"password": None})})
               for s in loaded.playbook.servers]
    return load_playbook(write_playbook(loaded.playbook.model_copy(update={"servers": servers}), tmp / "nopw.yml"))


def test_the_ticket_cache_is_used_and_named(exchange: LabServer, realm: LabRealm, tmp_path: Path) -> None:
    loaded = without_password(playbook_at(exchange, tmp_path), tmp_path)
    assert loaded.playbook.server("EX2010").credentials.password is None
    # No ticket yet: one line before anything is sent.
    before = len(exchange.log)
    with pytest.raises(UsageError, match=r"no password is given, so exmig uses your Kerberos ticket, but the "
                                         r"credential cache holds none; run `kinit administrator@MITSERV.NET`"):
        first_command(loaded)
    assert len(exchange.log) == before
    realm.kinit(USER, PASSWORD, Path(os.environ["KRB5CCNAME"].removeprefix("FILE:")))
    notes: list[str] = []
    first_command(loaded, notes)
    assert "EX2010: Kerberos as administrator@MITSERV.NET, with the ticket from the credential cache" in notes
    assert {r.mechanism for r in exchange.log.records() if r.action} == {"kerberos"}


def test_a_ticket_for_someone_else_is_refused_before_sending(exchange: LabServer, realm: LabRealm,
                                                            tmp_path: Path) -> None:
    realm.add_user("helpdesk", "Help-Desk-2010!")
    realm.kinit("helpdesk", "Help-Desk-2010!", Path(os.environ["KRB5CCNAME"].removeprefix("FILE:")))
    loaded = without_password(playbook_at(exchange, tmp_path), tmp_path)
    with pytest.raises(UsageError, match="holds a ticket for helpdesk@MITSERV.NET, not administrator@MITSERV.NET"):
        first_command(loaded)
