"""Several lab servers with different NTLM users in one process (as the 50-target benchmark runs
them): each accepts exactly its own users under concurrent logins, and no credential store
outlives its server."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import PowerShell, RunspacePool

from orchestrator.lab.auth import UserFile
from orchestrator.lab.server import LabServer

from .conftest import make_registry
from .test_psrp import wsman_for

# The same user name with a different password on each server: only the server's own store can
# tell them apart. The password with a colon is one the DOMAIN:USER:PASSWORD format cannot hold.
EX1_USERS = {"admin": "Ex1-Passw0rd!", "LAB\\ex1op": "colon:in-it"}
EX2_USERS = {"admin": "Ex2-Passw0rd!", "LAB\\ex2op": "Ex2-Op3rator"}
ROUNDS = 4  # logins per case and thread pool


def lab_user_stores() -> list[str]:
    """This process's in-memory NTLM stores (the memfds behind /proc/self/fd)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listing itself, closed meanwhile
            continue
        if "exmig-lab-ntlm" in target:
            found.append(target)
    return found


def login(srv: LabServer, username: str, password: str) -> str:
    """Open a pool over NTLM with message encryption and return the user the lab saw."""
    w = wsman_for(srv, auth="ntlm", username=username, password=password, encryption="always")
    with RunspacePool(w, configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-LabSession")
        return str(ps.invoke()[0].adapted_properties["User"])


def refused(srv: LabServer, username: str, password: str) -> bool:
    try:
        RunspacePool(wsman_for(srv, auth="ntlm", username=username, password=password, encryption="always"),
                     configuration_name="Microsoft.Exchange").open()
    except AuthenticationError:
        return True
    return False


def test_two_servers_accept_only_their_own_users_concurrently(make_server: Callable[..., LabServer]) -> None:
    ex1 = make_server(name="EX1", users=EX1_USERS, auth=("negotiate",))
    ex2 = make_server(name="EX2", users=EX2_USERS, auth=("negotiate",))
    accepted = [(ex1, "admin", "Ex1-Passw0rd!", "admin"), (ex1, "LAB\\ex1op", "colon:in-it", "LAB\\ex1op"),
                (ex2, "admin", "Ex2-Passw0rd!", "admin"), (ex2, "LAB\\ex2op", "Ex2-Op3rator", "LAB\\ex2op")]
    rejected = [(ex1, "admin", "Ex2-Passw0rd!"), (ex2, "admin", "Ex1-Passw0rd!"),  # the other server's password
                (ex1, "LAB\\ex2op", "Ex2-Op3rator"), (ex2, "LAB\\ex1op", "colon:in-it")]  # the other's user

    with ThreadPoolExecutor(max_workers=8) as pool:
        logins = [pool.submit(login, srv, user, password) for _ in range(ROUNDS)
                  for srv, user, password, _seen in accepted]
        refusals = [pool.submit(refused, srv, user, password) for _ in range(ROUNDS)
                    for srv, user, password in rejected]
        seen = [future.result(timeout=60) for future in logins]
        assert all(future.result(timeout=60) for future in refusals)
    assert seen == [expected for _ in range(ROUNDS) for *_, expected in accepted]
    assert not os.environ.get("NTLM_USER_FILE")  # points at a store only during an acceptor step


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="in-memory stores need memfd (Linux)")
def test_no_user_store_outlives_its_server() -> None:
    before = lab_user_stores()
    servers = [LabServer(f"EX{i}", make_registry(), users, configurations=("Microsoft.Exchange",),
                         auth=("negotiate",))
               for i, users in enumerate((EX1_USERS, EX2_USERS))]
    for srv in servers:
        srv.start()
    try:
        assert len(lab_user_stores()) == len(before) + 2
        assert login(servers[0], "admin", "Ex1-Passw0rd!") == "admin"
    finally:
        for srv in servers:
            srv.stop()
    assert lab_user_stores() == before


def test_disk_store_is_private_holds_no_password_and_is_removed() -> None:
    store = UserFile(EX1_USERS, in_memory=False)
    try:
        directory = os.path.dirname(store.path)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
        with open(store.path, encoding="utf-8") as fh:
            text = fh.read()
        assert all(password not in text for password in EX1_USERS.values())
        assert text.count("\n") == len(EX1_USERS)
    finally:
        store.close()
    assert not os.path.exists(directory)
    store.close()  # a second stop is harmless
    with pytest.raises(RuntimeError), store.active():
        pass
