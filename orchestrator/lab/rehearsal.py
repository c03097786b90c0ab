"""Turn any playbook into its rehearsal twin: same servers and versions, pointed at the lab."""

from __future__ import annotations

from pathlib import Path

from orchestrator.playbook import LabIssuer, LoadedPlaybook, SecretRef


def rehearsal_playbook(loaded: LoadedPlaybook, state_dir: Path) -> LoadedPlaybook:
    """Loopback hosts, NTLM over HTTP (the lab has no Kerberos realm), the lab CA, the lab password.

    Ports stay as written; the lab replaces them with the ones it listens on."""
    servers = []
    for server in loaded.playbook.servers:
        auth = server.auth if server.auth in ("ntlm", "negotiate", "basic") else "ntlm"
        connection = server.connection.model_copy(update={
            "host": "127.0.0.1", "scheme": "http", "auth": auth, "system_scheme": None, "verify_tls": True,
            "ca_file": None, "transport": server.connection.transport,
        })
        credentials = server.credentials.model_copy(update={
            "password": SecretRef(env="EXMIG_LAB_PASSWORD", lab_default=True)})
        servers.append(server.model_copy(update={"connection": connection, "credentials": credentials}))
    playbook = loaded.playbook.model_copy(update={
        "servers": servers, "issuer": LabIssuer(
        type="lab", ca_dir=str(state_dir / "ca"), install_root=loaded.playbook.issuer.install_root,
        root=None)})
    return loaded.model_copy(update={"playbook": playbook, "path": state_dir / loaded.path.name})
