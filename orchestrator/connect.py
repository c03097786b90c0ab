"""Open sessions to the playbook's servers with the right transport and credentials."""

from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.dialects import add_snapin
from orchestrator.errors import UsageError
from orchestrator.kerberos import check_ticket, check_username, principal_name
from orchestrator.playbook import Endpoint, LoadedPlaybook, Server
from orchestrator.secrets_store import SecretStore
from orchestrator.transport.base import FULL_LANGUAGE, NO_LANGUAGE, ServerSession, SessionSpec
from orchestrator.transport.limits import Limits

log = logging.getLogger(__name__)


def language(endpoint: Endpoint) -> str:
    """Exchange 2010's remote PowerShell endpoint (Microsoft.Exchange) runs commands only and refuses script text
    ("The syntax is not supported by this runspace...": exchange-cmdlets reference §4.2, [S14]);
    Microsoft.PowerShell (/wsman, and 2007's session) is a FullLanguage endpoint."""
    return NO_LANGUAGE if endpoint.configuration.lower() == "microsoft.exchange" else FULL_LANGUAGE


def session_spec(server: Server) -> SessionSpec:
    """What the transports need of a playbook server (they never see the playbook)."""
    snapin = add_snapin(server)
    return SessionSpec(
        name=server.name,
        exchange=server.exchange_endpoint,
        system=server.system_endpoint,
        prelude=(snapin,) if snapin is not None else (),
        # Exchange 2010's /PowerShell (IIS) takes Kerberos only (jborean93/pypsrp issue #187).
        kerberos_only=server.version == 2010,
        exchange_language=language(server.exchange_endpoint),
        exchange_throttled=server.exchange_endpoint.configuration.lower() == "microsoft.exchange",
        system_language=language(server.system_endpoint),
    )


def limits(loaded: LoadedPlaybook) -> Limits:
    given = loaded.playbook.limits
    return Limits(shells=given.max_shells_per_user, operations=given.max_operations_per_user,
                  exchange_sessions=given.exchange_max_sessions, idle_timeout=given.idle_timeout)


def session_factory(loaded: LoadedPlaybook, secrets: SecretStore,
                    warn: Callable[[str], None] | None = None) -> Callable[[Server], ServerSession]:
    for server in loaded.playbook.servers:
        if server.auth == "kerberos" and server.credentials.password is None:
            # No password: the admin's ticket. Checked here, before any connection, and said once.
            note = check_ticket(server.name, principal_name(secrets.username(server)))
            if warn is not None:
                warn(note)

    def open_session(server: Server) -> ServerSession:
        from orchestrator.transport.psrp import ConnectionSettings, PsrpServerSession

        verify: bool | str = server.connection.verify_tls
        if verify and server.connection.ca_file:
            verify = str(loaded.resolve(server.connection.ca_file))
        uses_tls = server.exchange_endpoint.scheme == "https" or server.system_endpoint.scheme == "https"
        if not server.connection.verify_tls and uses_tls and warn is not None:
            warn(f"warning: {server.name}: TLS certificate validation is off (connection.verify_tls: false)")
        policy = loaded.playbook.retry
        username = secrets.username(server)
        problem = check_username(username) if server.auth == "kerberos" else None
        if problem is not None:  # a name from a variable: the playbook could not check it
            raise UsageError(f"servers[{server.name}].credentials.username: {problem}")
        settings = ConnectionSettings(
            host=server.connection.host,
            auth=server.auth,
            # Kerberos realms are case-sensitive and AD's are upper-case: administrator@mitserv.net
            # is asked for as administrator@MITSERV.NET, as Windows' own clients do.
            username=principal_name(username) if server.auth == "kerberos" else username,
            password=secrets.password(server),
            spn_service=server.spn_service,
            spn_hostname=server.spn_hostname,
            verify_tls=verify,
            operation_timeout=policy.operation_timeout,
            read_timeout=policy.read_timeout,
            limits=limits(loaded),
        )
        if server.connection.transport == "winrs":
            from orchestrator.render.winrs_script import EXSHELL_CONSOLE_FILE
            from orchestrator.transport.winrs import WinrsServerSession

            console_file = server.connection.console_file or EXSHELL_CONSOLE_FILE
            return WinrsServerSession(session_spec(server), settings, console_file=console_file)
        return PsrpServerSession(session_spec(server), settings)

    return open_session
