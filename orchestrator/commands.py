"""A remote command as data: a cmdlet (or program) and typed parameters, never script text.

Transports turn a `Command` into PSRP AddCommand/AddParameter calls (or, for WinRS, into text
through the PowerShell renderer); the dry-run renders the same object. Values that are not
known while planning (bytes produced by an earlier step, secrets, the thumbprint before the CA
has signed) are references that the executor resolves, so the plan itself stays pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Shell(str, Enum):
    """Which session of a server a command needs."""

    EXCHANGE = "exchange"  # Exchange cmdlets: 2010 Microsoft.Exchange endpoint, 2007 snap-in session
    SYSTEM = "system"  # full-language Windows PowerShell: files, certutil


@dataclass(frozen=True)
class Text:
    value: str


@dataclass(frozen=True)
class TextList:
    values: tuple[str, ...]


@dataclass(frozen=True)
class Switch:
    """A switch parameter (`-Force`); present unless explicitly `-Name:$false`."""

    present: bool = True


@dataclass(frozen=True)
class Flag:
    """A [bool] parameter, rendered `-Name:$true` as Exchange's examples do."""

    value: bool


@dataclass(frozen=True)
class Null:
    """$null: clears a property (Set-ActiveSyncVirtualDirectory -ExternalUrl $null). pypsrp sends Python None as
    <Nil/>; the PowerShell renderer writes `$null`."""


@dataclass(frozen=True)
class Number:
    value: int


@dataclass(frozen=True)
class LocalFile:
    """Bytes read from a file on the admin workstation; `member` when the file is a bundle (zip,
    p7b, PEM chain) and these bytes are one certificate in it."""

    path: str
    member: str | None = None


@dataclass(frozen=True)
class Captured:
    """Bytes from the output of an earlier command, e.g. the export's FileData."""

    variable: str  # the name the dry-run gives the output, e.g. "Export"
    property: str  # e.g. "FileData"
    description: str


@dataclass(frozen=True)
class Pending:
    """Bytes that do not exist yet (the CA has not signed)."""

    description: str


Origin = LocalFile | Captured | Pending


@dataclass(frozen=True)
class Blob:
    """A byte[] parameter value; `key` names it in the executor's store of known bytes."""

    key: str
    origin: Origin


@dataclass(frozen=True)
class Secret:
    """A SecureString parameter; `key` names the secret the executor holds (never its value)."""

    key: str
    description: str


@dataclass(frozen=True)
class Thumbprint:
    """A certificate's thumbprint: the issued one's is known once the CA's certificate is at hand; `unknown`
    says in the dry-run which certificate it will be."""

    value: str | None
    unknown: str = "thumbprint of the issued certificate"

    @property
    def known(self) -> bool:
        return self.value is not None


Value = Text | TextList | Switch | Flag | Null | Number | Blob | Secret | Thumbprint


@dataclass(frozen=True)
class Param:
    name: str | None  # None: a positional argument (native programs)
    value: Value


@dataclass(frozen=True)
class Command:
    name: str
    params: tuple[Param, ...]
    shell: Shell = Shell.EXCHANGE
    native: bool = False  # a program such as certutil.exe, given positional arguments
    # The dry-run's variable name for the output exmig keeps (CSR text, PFX bytes...).
    capture: str | None = None
    changes: bool = True  # False: only reads state
    # Which facts a change can touch ("certificates", "ca_store"); the executor re-reads only those.
    # Empty for file commands: the executor keeps no file facts.
    affects: frozenset[str] = frozenset({"certificates", "ca_store"})
    # Answers nothing when it succeeds (Enable-ExchangeCertificate): it may share a pipeline with a command
    # whose output is kept, without mixing into that output.
    silent: bool = False

    def param(self, name: str) -> Value | None:
        for p in self.params:
            if p.name is not None and p.name.lower() == name.lower():
                return p.value
        return None

    @property
    def unresolved(self) -> list[str]:
        """What must still become known before this command can be sent."""
        missing = []
        for p in self.params:
            if isinstance(p.value, Thumbprint) and not p.value.known:
                missing.append("the issued certificate's thumbprint")
            if isinstance(p.value, Blob) and isinstance(p.value.origin, Pending):
                missing.append(p.value.origin.description)
        return missing


def text(name: str, value: str) -> Param:
    return Param(name, Text(value))


def switch(name: str) -> Param:
    return Param(name, Switch())


def arg(value: str) -> Param:
    return Param(None, Text(value))
