"""The ACME issuer's failures, each one line naming the reason and the fix (never a secret's value)."""

from __future__ import annotations

from orchestrator.errors import ExmigError


class AcmeError(ExmigError):
    """The ACME CA or the challenge's DNS/web server refused or failed; no server was changed by it."""


class AcmeUnreachable(AcmeError):
    """The ACME directory (or the DNS server) cannot be reached."""


class AcmeAccountRefused(AcmeError):
    """The CA refused the account: external account binding missing or wrong, terms, contact."""


class AcmeNameRefused(AcmeError):
    """The CA will not issue for a name of the request (policy, blocklist, rejectedIdentifier)."""


class AcmeCsrRefused(AcmeError):
    """The CA refused the Exchange-made request itself (badCSR: e.g. its SHA-1 signature, its key)."""


class AcmeValidationFailed(AcmeError):
    """A challenge failed: the CA could not see the token or the TXT record."""


class DnsUpdateRefused(AcmeError):
    """The DNS server refused the RFC 2136 update (TSIG key or secret wrong, zone not updatable)."""


class DnsNotPropagated(AcmeError):
    """The TXT record did not appear at every authoritative server in time."""
