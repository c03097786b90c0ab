"""dns-01 through RFC 2136 dynamic updates signed with TSIG (RFC 8945), with dnspython.

For each name the CA asks about, a TXT record `_acme-challenge.<name>` holding base64url(SHA-256(key
authorization)) (RFC 8555 §8.4) is added at the zone's primary (`server`), then every authoritative server
of the zone (its NS records, asked of the primary) is queried until it answers with the value, bounded in
tries and time, before the CA is told to look. The records are deleted afterwards by value, so a record
someone else keeps at the same name stays.

The updates go over TCP: an update is not idempotent, and TCP neither truncates nor silently drops it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
import time
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from orchestrator.acme_issue.errors import AcmeUnreachable, DnsNotPropagated, DnsUpdateRefused

TTL = 60
QUERY_TIMEOUT = 5.0
DEFAULT_PORT = 53
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")


def txt_value(key_authorization: str) -> str:
    """RFC 8555 §8.4: the TXT record's value for a key authorization."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def split_server(server: str) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' -> (host, port)."""
    text = server.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, DEFAULT_PORT


def _address(host: str, port: int) -> str:
    """dnspython sends to addresses; a name is resolved once here by the system."""
    try:
        return str(socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)[0][4][0])
    except OSError as exc:
        raise AcmeUnreachable(f"issuer.dns.server: cannot resolve {host} ({exc}); give its address") from None


@dataclass
class Rfc2136Responder:
    """Places and removes dns-01 TXT records in `zone` at `server` (host[:port]) with the TSIG key.

    `propagation_timeout` bounds the wait for every authoritative server (seconds), `propagation_interval`
    the pause between rounds."""

    server: str
    zone: str
    tsig_name: str
    tsig_secret: str = field(repr=False)
    tsig_algorithm: str = "hmac-sha256"
    propagation_timeout: float = 60.0
    propagation_interval: float = 0.5
    challenge_type: str = "dns-01"
    _placed: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        host, self.port = split_server(self.server)
        self.address = _address(host, self.port)
        self.origin = dns.name.from_text(self.zone)
        try:
            self.keyring = dns.tsigkeyring.from_text({self.tsig_name: (self.tsig_algorithm, self.tsig_secret)})
        except (ValueError, TypeError, binascii.Error, dns.exception.DNSException):
            raise DnsUpdateRefused(f"issuer.dns.tsig_secret: not a base64 TSIG secret for {self.tsig_name}; "
                                   "give the key's secret as tsig-keygen prints it") from None
        self.key_name = dns.name.from_text(self.tsig_name)

    def record_name(self, name: str) -> dns.name.Name:
        fqdn = dns.name.from_text("_acme-challenge." + name.rstrip(".").removeprefix("*."))
        if not fqdn.is_subdomain(self.origin):
            raise DnsUpdateRefused(f"issuer.dns.zone: {name} is not in the zone {self.zone}; name the zone that "
                                   f"holds {name} (its _acme-challenge record is updated there)")
        return fqdn

    def _update(self, record: dns.name.Name, add: bool, value: str) -> None:
        update = dns.update.UpdateMessage(self.origin, keyring=self.keyring, keyname=self.key_name,
                                          keyalgorithm=self.tsig_algorithm)
        relative = record.relativize(self.origin)
        if add:
            update.add(relative, TTL, "TXT", f'"{value}"')
        else:
            update.delete(relative, "TXT", f'"{value}"')
        where = f"the DNS server {self.server}"
        try:
            response = dns.query.tcp(update, self.address, port=self.port, timeout=QUERY_TIMEOUT)
        except dns.tsig.PeerError as exc:
            raise DnsUpdateRefused(
                f"{where} refused the update of {record} (TSIG {type(exc).__name__.removeprefix('Peer')}): check "
                "issuer.dns.tsig_name, tsig_algorithm and the secret in issuer.dns.tsig_secret"
            ) from None
        except (dns.exception.DNSException, OSError) as exc:
            raise AcmeUnreachable(f"{where} did not take the update of {record} ({exc or type(exc).__name__}); "
                                  "check issuer.dns.server") from None
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        if rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED):
            raise DnsUpdateRefused(
                f"{where} refused the update of {record} ({text}): the key {self.tsig_name} may not update "
                f"{self.zone}; allow it (named.conf: allow-update or update-policy) or check issuer.dns.zone"
            )
        if rcode == dns.rcode.NOTZONE:
            raise DnsUpdateRefused(f"{where} is not authoritative for {self.zone} (NOTZONE); check issuer.dns.zone")
        raise DnsUpdateRefused(f"{where} refused the update of {record} ({text})")

    def check(self, names: list[str]) -> None:
        """Before any server is changed: every name is in the zone, and the server takes this key's updates (a
        signed deletion of a record that is not there: a wrong secret is refused, nothing changes)."""
        for name in names:
            self.record_name(name)
        self._update(dns.name.from_text("_exmig-tsig-check", self.origin), False, "exmig")

    def place(self, name: str, token: str, key_authorization: str) -> None:
        record = self.record_name(name)
        value = txt_value(key_authorization)
        self._update(record, True, value)
        self._placed.setdefault(record.to_text(), set()).add(value)

    def remove(self, name: str, token: str, key_authorization: str) -> None:
        record = self.record_name(name)
        value = txt_value(key_authorization)
        self._update(record, False, value)
        values = self._placed.get(record.to_text())
        if values is not None:
            values.discard(value)

    # --- propagation ---------------------------------------------------------------------------

    def authoritative_servers(self) -> list[str]:
        """Addresses of the zone's name servers (NS at the primary), the primary first; same port as it."""
        found = [self.address]
        try:
            answer = dns.query.udp(dns.message.make_query(self.origin, "NS"), self.address, port=self.port,
                                   timeout=QUERY_TIMEOUT)
        except (dns.exception.DNSException, OSError):
            return found
        names = [r.target for rrset in answer.answer if rrset.rdtype == dns.rdatatype.NS for r in rrset]
        for ns in names:
            for address in self._addresses_of(ns, answer):
                if address not in found:
                    found.append(address)
        return found

    def _addresses_of(self, ns: dns.name.Name, answer: dns.message.Message) -> list[str]:
        glue = [r.address for rrset in answer.additional if rrset.name == ns and rrset.rdtype == dns.rdatatype.A
                for r in rrset]
        if glue:
            return glue
        try:
            reply = dns.query.udp(dns.message.make_query(ns, "A"), self.address, port=self.port,
                                  timeout=QUERY_TIMEOUT)
            addresses = [r.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for r in rrset]
        except (dns.exception.DNSException, OSError):
            addresses = []
        if addresses:
            return addresses
        try:
            return [str(info[4][0]) for info in socket.getaddrinfo(ns.to_text(), self.port, socket.AF_INET)]
        except OSError:
            return []

    def _has(self, address: str, record: str, values: set[str], timeout: float) -> bool:
        try:
            answer = dns.query.udp(dns.message.make_query(record, "TXT"), address, port=self.port, timeout=timeout)
        except (dns.exception.DNSException, OSError):
            return False
        seen = {b"".join(r.strings).decode() for rrset in answer.answer if rrset.rdtype == dns.rdatatype.TXT
                for r in rrset}
        return values <= seen

    def ready(self) -> None:
        """Return once every authoritative server answers every placed value; bounded by propagation_timeout."""
        wanted = {record: set(values) for record, values in self._placed.items() if values}
        if not wanted:
            return
        servers = self.authoritative_servers()
        deadline = time.monotonic() + self.propagation_timeout
        rounds = max(1, int(self.propagation_timeout / max(self.propagation_interval, 0.05)) + 1)
        missing: list[tuple[str, str]] = []
        for _ in range(rounds):
            missing = [(address, record) for address in servers for record, values in wanted.items()
                       if not self._has(address, record, values,
                                        max(0.1, min(QUERY_TIMEOUT, deadline - time.monotonic())))]
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(self.propagation_interval)
        if missing:
            address, record = missing[0]
            raise DnsNotPropagated(
                f"the TXT record {record} did not appear at the zone's name server {address} within "
                f"{self.propagation_timeout:.0f} s; check that the zone's secondaries transfer from "
                f"{self.server} (NOTIFY), or raise the wait"
            )
