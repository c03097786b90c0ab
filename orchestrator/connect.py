"""Open sessions to the playbook's servers with the right transport and credentials."""

from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.playbook import LoadedPlaybook, Server
from orchestrator.secrets_store import SecretStore
from orchestrator.transport.base import ServerSession

log = logging.getLogger(__name__)


def session_factory(loaded: LoadedPlaybook, secrets: SecretStore,
                    warn: Callable[[str], None] | None = None) -> Callable[[Server], ServerSession]:
    def open_session(server: Server) -> ServerSession:
        from orchestrator.transport.psrp import ConnectionSettings, PsrpServerSession

        verify: bool | str = server.connection.verify_tls
        if verify and server.connection.ca_file:
            verify = str(loaded.resolve(server.connection.ca_file))
        uses_tls = server.exchange_endpoint.scheme == "https" or server.system_endpoint.scheme == "https"
        if not server.connection.verify_tls and uses_tls and warn is not None:
            warn(f"warning: {server.name}: TLS certificate validation is off (connection.verify_tls: false)")
        policy = loaded.playbook.retry
        settings = ConnectionSettings(
            host=server.connection.host,
            auth=server.auth,
            username=secrets.username(server),
            password=secrets.password(server),
            verify_tls=verify,
            operation_timeout=policy.operation_timeout,
            read_timeout=policy.read_timeout,
        )
        if server.connection.transport == "winrs":
            from orchestrator.render.winrs_script import EXSHELL_CONSOLE_FILE
            from orchestrator.transport.winrs import WinrsServerSession

            console_file = server.connection.console_file or EXSHELL_CONSOLE_FILE
            return WinrsServerSession(server, settings, console_file=console_file)
        return PsrpServerSession(server, settings)

    return open_session
