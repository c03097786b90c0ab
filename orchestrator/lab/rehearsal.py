"""Turn any playbook into its rehearsal twin: same servers and versions, pointed at the lab."""

from __future__ import annotations

from pathlib import Path

from orchestrator.playbook import AcmeIssuer, LabIssuer, LoadedPlaybook, SecretRef

KERBEROS_AUTHS = ("kerberos", "negotiate")


def rehearsal_playbook(loaded: LoadedPlaybook, state_dir: Path, force_ntlm: bool = False) -> LoadedPlaybook:
    """Loopback hosts over HTTP, the lab CA, the lab password; authentication as the playbook says.

    Kerberos stays Kerberos (the lab runs the realm): each server keeps its SPN host name, so the
    tickets asked for are those production asks for, while the connection goes to 127.0.0.1.
    `force_ntlm` (rehearse --auth ntlm, where the KDC programs are missing) turns it into NTLM.
    Ports stay as written; the lab replaces them with the ones it listens on."""
    servers = []
    for server in loaded.playbook.servers:
        keep = server.auth in ("ntlm", "basic") or (server.auth in KERBEROS_AUTHS and not force_ntlm)
        auth = server.auth if keep else "ntlm"
        kerberos = auth in KERBEROS_AUTHS
        connection = server.connection.model_copy(update={
            "host": "127.0.0.1", "scheme": "http", "auth": auth, "system_scheme": None, "verify_tls": True,
            "ca_file": None, "transport": server.connection.transport,
            "spn_hostname": server.spn_hostname if kerberos else None,
            "spn_service": server.connection.spn_service if kerberos else None,
        })
        credentials = server.credentials.model_copy(update={
            "password": SecretRef(env="EXMIG_LAB_PASSWORD", lab_default=True)})
        servers.append(server.model_copy(update={"connection": connection, "credentials": credentials}))
    # An acme issuer stays: the lab runs pebble and named for it (LabSite points it at them); others sign with
    # the lab CA.
    issuer = loaded.playbook.issuer if isinstance(loaded.playbook.issuer, AcmeIssuer) else \
        LabIssuer(type="lab", ca_dir=str(state_dir / "ca"), install_root=loaded.playbook.issuer.install_root)
    playbook = loaded.playbook.model_copy(update={"servers": servers, "issuer": issuer})
    return loaded.model_copy(update={"playbook": playbook, "path": state_dir / loaded.path.name})
