"""Kerberos versions of the lab playbook: every server `auth: kerberos`, users in MITSERV.NET."""

from __future__ import annotations

from orchestrator.playbook import Playbook
from tests.kerberos.conftest import REALM


def to_kerberos(playbook: Playbook, user: str = f"administrator@{REALM.lower()}") -> Playbook:
    """`auth: kerberos` everywhere; each server keeps the SPN host name production would use
    (<name>.mitserv.net) while it listens on 127.0.0.1."""
    servers = []
    for server in playbook.servers:
        connection = server.connection.model_copy(update={
            "auth": "kerberos", "spn_hostname": f"{server.name.lower()}.mitserv.net"})
        credentials = server.credentials.model_copy(update={"username": user})
        servers.append(server.model_copy(update={"connection": connection, "credentials": credentials}))
    return playbook.model_copy(update={"servers": servers})
