"""What exmig reads from a server before deciding: each fact a declared read (a command and its parser).

A server's facts are an immutable `ServerFacts`; the executor gathers the reads a decision asks for
(orchestrator/steps.py) and drops a fact when a command that can touch it was sent (Command.affects).
The parsers are the rules of orchestrator/checks.py and orchestrator/roots.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509

from orchestrator import checks, trust
from orchestrator.commands import Shell
from orchestrator.decision import Read
from orchestrator.dialects import dialect_for, read_store, read_stores, test_path
from orchestrator.playbook import Server
from orchestrator.previous import Held, held_certificates

CERTIFICATES = "certificates"
HELD = "certificates held"  # the same Get-ExchangeCertificate, parsed for retiring and rolling back
PRESENTED = "presented"  # what each TLS endpoint presents now (a handshake, not a command)
STORES = "stores"  # LocalMachine\CA and LocalMachine\Root
PATH = "path:"  # + the remote path: whether it exists


@dataclass(frozen=True)
class Stores:
    ca: tuple[str, ...]  # thumbprints in LocalMachine\CA
    root: tuple[x509.Certificate, ...]


@dataclass(frozen=True)
class TlsRead:
    """What the server's TLS endpoints present now: the leaf each hands a client (orchestrator/verify/tls_probe.py,
    bounded timeouts; an endpoint that does not answer presents None, "not known"). A read over the network, not
    a command: the executor makes it."""

    name: str = PRESENTED


def presented() -> TlsRead:
    return TlsRead()


@dataclass(frozen=True)
class ServerFacts:
    """What is known of one server now. None: not read (or dropped since a change)."""

    certificates: tuple[checks.CertInfo, ...] | None = None
    stores: Stores | None = None
    paths: Mapping[str, bool] = field(default_factory=dict)
    held: tuple[Held, ...] | None = None
    # TLS probe kind ("https", "smtp", "pop3s", "imaps") -> the leaf's thumbprint, or None: nothing learned.
    presented: Mapping[str, str | None] | None = None
    # Shells whose session takes several statements in one request (PSRP 2.2+): a fact of the session.
    batches: frozenset[Shell] = frozenset()
    # Reads made during the current attempt of the current step (a decision that wants a fresh read asks once).
    fresh: frozenset[str] = frozenset()
    # Other declared reads by name (names in use "names.*", virtual directories "coexistence.*"): parsed values.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def known(self, name: str) -> bool:
        if name == CERTIFICATES:
            return self.certificates is not None
        if name == STORES:
            return self.stores is not None
        if name == HELD:
            return self.held is not None
        if name == PRESENTED:
            return self.presented is not None
        if name.startswith(PATH):
            return name.removeprefix(PATH) in self.paths
        return name in self.extra

    def with_value(self, name: str, value: Any) -> ServerFacts:
        fresh = self.fresh | {name}
        if name == CERTIFICATES:
            return replace(self, certificates=tuple(value), fresh=fresh)
        if name == STORES:
            return replace(self, stores=value, fresh=fresh)
        if name == HELD:
            return replace(self, held=tuple(value), fresh=fresh)
        if name == PRESENTED:
            return replace(self, presented=dict(value), fresh=fresh)
        if name.startswith(PATH):
            return replace(self, paths={**self.paths, name.removeprefix(PATH): bool(value)}, fresh=fresh)
        return replace(self, extra={**self.extra, name: value}, fresh=fresh)

    def without(self, affected: frozenset[str]) -> ServerFacts:
        """After a change that can touch `affected` (Command.affects) or whose reply was lost."""
        return replace(
            self,
            certificates=None if "certificates" in affected else self.certificates,
            held=None if "certificates" in affected else self.held,
            # An Enable or Remove changes what the endpoints present.
            presented=None if "certificates" in affected else self.presented,
            stores=None if affected & {"ca_store", "root_store"} else self.stores,
            # Files: the commands that write or remove them are the run's own; a path is re-read when asked.
            paths={} if "files" in affected else self.paths,
            extra={} if "virtual_directories" in affected else self.extra,
        )


def certificates(server: Server) -> Read[list[checks.CertInfo]]:
    return Read(CERTIFICATES, dialect_for(server).list_certificates(server), checks.certificates)


def held(server: Server) -> Read[list[Held]]:
    return held_certificates(server)


def _stores(output: list[Any]) -> Stores | None:
    split = trust.split_stores(output)
    if split is None:
        return None
    return Stores(tuple(checks.store_thumbprints(split["CA"])), tuple(trust.store_certificates(split["Root"])))


def stores() -> Read[Stores | None]:
    """None from the parser: the server did not say which store an object is from; `store_fallback` then."""
    return Read(STORES, read_stores(), _stores)


def store_fallback() -> tuple[Read[list[Any]], Read[list[Any]]]:
    return Read(STORES + ":CA", read_store("CA"), list), Read(STORES + ":Root", read_store("Root"), list)


def stores_from(ca_output: list[Any], root_output: list[Any]) -> Stores:
    return Stores(tuple(checks.store_thumbprints(ca_output)), tuple(trust.store_certificates(root_output)))


def path_exists(path: str) -> Read[bool]:
    return Read(PATH + path, test_path(path), lambda output: bool(output and output[0] is True))


def server_reads(server: Server) -> tuple[Read[Any], ...]:
    """What the preflight reads of every server the run will touch: certificates, and where files and
    certutil go to another endpoint (2010), the stores, so that endpoint's credentials are proven too."""
    if server.system_endpoint != server.exchange_endpoint:
        return certificates(server), stores()
    return (certificates(server),)


def preflight(server: Server, requesting: bool) -> tuple[Read[Any], ...]:
    """What the run reads of a server before its first change anywhere: `server_reads`, and while the request is
    still to make, the host names its settings use (they must be covered before the request: names_in_use.py)."""
    from orchestrator import names_in_use

    return server_reads(server) + (names_in_use.reads(server.name, server.version) if requesting else ())
