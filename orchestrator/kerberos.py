"""Kerberos as exmig uses it: principal names, the SPN it asks for, the admin's ticket, and failures.

Exchange 2010's remote PowerShell (`/PowerShell` in IIS) takes Kerberos only; NTLM there ends in a
WSManFault without details (jborean93/pypsrp issue #187). The clients (pypsrp, pywinrm) reach
Kerberos through pyspnego and MIT's GSSAPI, whose errors arrive as krb5/gssapi exceptions; this
module turns the ones an admin can act on into one line naming the server, the principal and the fix.

Codes are MIT krb5's com_err values (krb5/krb5_err.h and kdb5_err.h as installed with libkrb5-dev);
GSSAPI carries the same value as an unsigned minor status.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.errors import UsageError

# The SPN service class each client library asks for when the playbook does not say.
DEFAULT_SPN_SERVICE = {"psrp": "host", "winrs": "HTTP"}

_REALM = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*$")
_USER = re.compile(r"^[^\s@\\/:\"']{1,104}$")

# MIT krb5 error codes (signed), and the failure each one means to an admin.
KDC_ERR_C_PRINCIPAL_UNKNOWN = -1765328378
KDC_ERR_S_PRINCIPAL_UNKNOWN = -1765328377
KDC_ERR_CLIENT_REVOKED = -1765328366
KDC_ERR_KEY_EXPIRED = -1765328361
KDC_ERR_PREAUTH_FAILED = -1765328360
AP_ERR_SKEW = -1765328347
KRB5_REALM_UNKNOWN = -1765328230
KRB5_KDC_UNREACH = -1765328228
KRB5_CC_NOTFOUND = -1765328189
KG_CCACHE_NOMATCH = -1765328243  # "Can't find client principal ... in cache collection"


def realm_of(principal: str) -> str | None:
    """The realm of `user@REALM`, in capitals (Kerberos realms are case-sensitive; AD's are upper-case)."""
    user, at, realm = principal.rpartition("@")
    return realm.upper() if at and user and realm else None


def principal_name(principal: str) -> str:
    """`user@realm` as the KDC knows it: the realm in capitals, the user as written."""
    realm = realm_of(principal)
    return f"{principal.rpartition('@')[0]}@{realm}" if realm else principal


def check_username(username: str) -> str | None:
    """Why `username` is no Kerberos principal name, or None when it is one (`user@REALM`)."""
    if "\\" in username:
        domain, _, user = username.partition("\\")
        return (f"'{username}' is a Windows logon name (DOMAIN\\user); Kerberos needs user@REALM: the account's "
                f"UPN with the domain's DNS name in capitals, e.g. {user or 'administrator'}@CORP.EXAMPLE.COM")
    user, at, realm = username.rpartition("@")
    if not at or not _USER.fullmatch(user) or not _REALM.fullmatch(realm):
        return (f"'{username}' is not a Kerberos principal; write user@REALM, e.g. administrator@EXAMPLE.COM "
                "(the account's UPN, realm in capitals)")
    return None


def spn(service: str, hostname: str, principal: str) -> str:
    realm = realm_of(principal)
    return f"{service}/{hostname}" + (f"@{realm}" if realm else "")


@dataclass(frozen=True)
class KerberosTarget:
    """What one server's Kerberos exchange involves, for messages: who, towards which SPN."""

    server: str
    principal: str
    spn: str


def _codes(exc: BaseException) -> Iterator[tuple[int | None, str]]:
    """(krb5 code, text) of the exception and of everything it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if not isinstance(code, int):
            minor = getattr(current, "min_code", None)
            code = minor - (1 << 32) if isinstance(minor, int) and minor >= (1 << 31) else minor
        text = str(current)
        if not isinstance(code, int):
            # pyspnego's SpnegoError text carries the GSS minor status: "Minor (2529638919): ...".
            found = re.search(r"Minor \((\d+)\)", text) or re.search(r"(-17653\d{5})\b", text)
            if found:
                value = int(found.group(1))
                code = value - (1 << 32) if value >= (1 << 31) else value
        yield (code if isinstance(code, int) else None), text
        base = getattr(current, "base_error", None)
        current = base if isinstance(base, BaseException) else (current.__cause__ or current.__context__)


def classify_kerberos(target: KerberosTarget, exc: BaseException) -> tuple[str, bool] | None:
    """(one-line message, transient?) for a Kerberos failure, or None when `exc` is none.

    Only an unreachable KDC is transient (a KDC restarting, a network blip); a wrong password retried
    would lock the account out."""
    s, who, spn_ = target.server, target.principal, target.spn
    for code, text in _codes(exc):
        if code == KDC_ERR_PREAUTH_FAILED:
            return (f"{s}: Kerberos: the KDC refused the password of {who} (pre-authentication failed); "
                    "check the password variable"), False
        if code == KDC_ERR_C_PRINCIPAL_UNKNOWN:
            return (f"{s}: Kerberos: {who} is not known to the KDC; write credentials.username as the "
                    "account's user@REALM (UPN, realm in capitals)"), False
        if code == KDC_ERR_S_PRINCIPAL_UNKNOWN:
            return (f"{s}: Kerberos: the KDC has no service principal {spn_}; register it on the server's "
                    "account (setspn -S) or set connection.spn_service / connection.spn_hostname to the name "
                    "it is registered under"), False
        if code == AP_ERR_SKEW:
            return (f"{s}: Kerberos: clock skew too great between this machine and the domain for {who}; "
                    "synchronise this machine's clock (NTP) to within 5 minutes of the domain controllers"), False
        if code in (KDC_ERR_CLIENT_REVOKED, KDC_ERR_KEY_EXPIRED):
            return (f"{s}: Kerberos: the account {who} is disabled, locked or its password expired; "
                    "fix the account in Active Directory"), False
        if code == KRB5_REALM_UNKNOWN:
            return (f"{s}: Kerberos: no KDC is known for the realm of {who}; add the realm to krb5.conf "
                    "(KRB5_CONFIG) or run from a domain-joined workstation"), False
        if code == KRB5_KDC_UNREACH:
            return f"{s}: Kerberos: cannot contact any KDC for the realm of {who}", True
        if code in (KG_CCACHE_NOMATCH, KRB5_CC_NOTFOUND) or "cache collection" in text:
            return (f"{s}: Kerberos: no ticket for {who} in the credential cache; run `kinit {who}` "
                    "or give credentials.password"), False
    return None


def check_ticket(server: str, principal: str) -> str:
    """For a server with `auth: kerberos` and no password: the line saying which ticket is used.

    Checked before the first connection, so a missing or foreign ticket is one clear line, not a
    GSSAPI error from inside the first request. On Windows pyspnego uses SSPI and the logon session's
    tickets, which GSSAPI cannot list: the logon session is named instead."""
    if sys.platform == "win32":
        return f"{server}: Kerberos as {principal}, with the logon session's ticket"
    cached = cached_principal()
    if cached is None:
        raise UsageError(f"servers[{server}].credentials: no password is given, so exmig uses your Kerberos "
                         f"ticket, but the credential cache holds none; run `kinit {principal}` or give "
                         "credentials.password")
    if cached.lower() != principal.lower():
        raise UsageError(f"servers[{server}].credentials.username: the credential cache holds a ticket for "
                         f"{cached}, not {principal}; run `kinit {principal}` or set the user name to {cached}")
    return f"{server}: Kerberos as {cached}, with the ticket from the credential cache"


def cached_principal() -> str | None:
    """The principal of the admin's default credential cache (kinit's), or None when it holds none."""
    try:
        import gssapi
        import gssapi.exceptions
    except ImportError:
        raise UsageError("auth: kerberos without a password uses the Kerberos ticket cache, which needs GSSAPI: "
                         "pip install 'exmig[kerberos]' (on Debian first: apt-get install libkrb5-dev)") from None
    try:
        creds = gssapi.Credentials(usage="initiate")
        if creds.lifetime == 0:
            return None
        return str(creds.name)
    except (gssapi.exceptions.GSSError, gssapi.exceptions.GeneralError):
        return None
