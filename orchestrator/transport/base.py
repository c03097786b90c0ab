"""What every transport offers the executor, and how failures are classified."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from orchestrator import server_errors
from orchestrator.commands import Command, Shell
from orchestrator.errors import ExmigError
from orchestrator.kerberos import KerberosTarget, classify_kerberos
from orchestrator.playbook import Endpoint


class RemoteError(ExmigError):
    """The server ran the command and reported an error: permanent, shown with the server's text."""

    def __init__(self, server: str, command: str, message: str, error_id: str | None = None) -> None:
        # One line: the inner text (2010's RPC wrapping removed) and, for errors exmig knows, the fix.
        super().__init__(server_errors.one_line(server, command, message))
        self.server = server
        self.command = command
        self.remote_message = message
        self.error_id = error_id
        known = server_errors.classify(message)
        self.kind = known.kind if known else None


class TransientError(ExmigError):
    """The request may not have reached the server, or its answer was lost: worth retrying."""

    def __init__(self, server: str, what: str, reopen: bool = False) -> None:
        super().__init__(f"{server}: {what}")
        self.server = server
        self.reopen = reopen  # the session itself is gone or suspect: open a new one


class ConnectError(ExmigError):
    """Permanent connection problems: wrong credentials, TLS validation failure, unknown endpoint."""


@dataclass
class RemoteObject:
    """A deserialized object from the server: type names, properties (adapted and extended), text."""

    types: list[str]
    props: dict[str, Any] = field(default_factory=dict)
    text: str | None = None

    def get(self, name: str, default: Any = None) -> Any:
        for key, value in self.props.items():
            if key.lower() == name.lower():
                return value
        return default

    def __str__(self) -> str:
        return self.text or ""


@dataclass
class InvocationResult:
    output: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class ValueSource(Protocol):
    """Resolves the references a plan command carries to real values at send time."""

    def blob(self, key: str) -> bytes: ...

    def secret(self, key: str) -> str: ...


def first_line(value: object) -> str:
    """One line of an exception's text, bounded, for a one-line error."""
    text = str(value).strip()
    return text.splitlines()[0][:300] if text else type(value).__name__


def classify_kerberos_error(server: str, exc: BaseException, target: KerberosTarget | None) -> Exception | None:
    """A Kerberos failure as ConnectError (one line with the fix) or, for an unreachable KDC, TransientError."""
    if target is None:
        return None
    known = classify_kerberos(replace(target, server=server), exc)
    if known is None:
        return None
    message, transient = known
    return TransientError(server, message.removeprefix(f"{server}: "), reopen=True) if transient \
        else ConnectError(message)


def classify_http(server: str, exc: BaseException) -> Exception | None:
    """What both transports see from requests: TLS validation (permanent) vs a lost connection (retry)."""
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return ConnectError(f"{server}: TLS certificate validation failed ({first_line(exc)}); "
                            "set connection.ca_file to the CA that issued the server's certificate")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError)):
        return TransientError(server, f"connection failed: {first_line(exc)}", reopen=True)
    return None


FULL_LANGUAGE = "FullLanguage"
NO_LANGUAGE = "NoLanguage"


@dataclass(frozen=True)
class SessionSpec:
    """What a transport needs of a server: where its two sessions are, and what each session gets first.
    Built from the playbook by orchestrator/connect.py, so transports hold no Exchange rule."""

    name: str
    exchange: Endpoint
    system: Endpoint
    # Sent once at the start of each Exchange session, before its first command (2007's Add-PSSnapin).
    prelude: tuple[Command, ...] = ()
    # The Exchange endpoint takes Kerberos only (2010's /PowerShell in IIS): a detail-less refusal of another
    # scheme is explained as that.
    kerberos_only: bool = False
    # Each endpoint's language mode: FullLanguage runs a script (several commands in one pipeline on
    # PowerShell 2.0); Exchange 2010's Microsoft.Exchange endpoint is NoLanguage (commands only).
    exchange_language: str = FULL_LANGUAGE
    system_language: str = FULL_LANGUAGE
    # The Exchange endpoint is Exchange 2010's own /PowerShell (IIS-hosted): its sessions count against
    # Exchange's throttling policy, not against WinRM's shells per user.
    exchange_throttled: bool = False

    def endpoint(self, shell: Shell) -> Endpoint:
        return self.exchange if shell is Shell.EXCHANGE else self.system

    def runs_scripts(self, shell: Shell) -> bool:
        language = self.exchange_language if shell is Shell.EXCHANGE else self.system_language
        return language == FULL_LANGUAGE


class ServerSession(Protocol):
    """An open connection to one server, reused by every step."""

    name: str

    def invoke(self, command: Command, values: ValueSource) -> InvocationResult: ...

    def can_batch(self, shell: Shell) -> bool:
        """Whether several commands for `shell` can go as the statements of one request."""
        ...

    def invoke_batch(self, commands: Sequence[Command], values: ValueSource) -> InvocationResult: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...
