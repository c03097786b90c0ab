"""Exchange facts read back from a server, and the rules that say whether a step is already done.

Pure: input is what Get-ExchangeCertificate / the CA store returned (already deserialized),
output is a decision. Certificate facts come from RawData when the server sends it (thumbprint,
names, key and dates computed locally), because some Exchange servers return only RawData over
remoting, and some omit Services; in that case services are "not reported" (None), never guessed.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from orchestrator.certs import thumbprint as sha1_thumbprint
from orchestrator.errors import ExmigError
from orchestrator.playbook import Service

SERVICE_NAMES = {s.value for s in Service}


@dataclass(frozen=True)
class CertInfo:
    thumbprint: str
    status: str | None  # Valid, PendingRequest, Untrusted, ... (None: not reported)
    has_private_key: bool | None
    services: frozenset[str] | None  # None: not reported by this server
    subject: str | None
    public_key_der: bytes | None
    domains: tuple[str, ...]
    common_name: str | None = None  # the subject's CN, parsed (never a substring of the subject text)

    @property
    def pending(self) -> bool:
        return self.status == "PendingRequest"


def _get(obj: Any, name: str) -> Any:
    getter = getattr(obj, "get", None)
    return getter(name) if callable(getter) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).strip() or None


def parse_services(value: Any) -> frozenset[str] | None:
    """`IMAP, POP, IIS, SMTP` (the enum's text) -> {'IMAP','POP','IIS','SMTP'}; None stays None."""
    text = _text(value)
    if text is None:
        return None
    names = {part.strip().upper() for part in text.split(",") if part.strip()}
    names.discard("NONE")
    return frozenset(n for n in names if n in SERVICE_NAMES or n == "FEDERATION")


def cert_info(obj: Any) -> CertInfo | None:
    """One Get-ExchangeCertificate object -> facts; None when it is not a certificate at all."""
    raw = _get(obj, "RawData")
    cert: x509.Certificate | None = None
    if isinstance(raw, (bytes, bytearray)) and raw:
        try:
            cert = x509.load_der_x509_certificate(bytes(raw))
        except ValueError:
            cert = None
    thumb = sha1_thumbprint(cert) if cert is not None else _text(_get(obj, "Thumbprint"))
    if not thumb:
        return None
    domains: tuple[str, ...] = ()
    key_der = None
    subject = _text(_get(obj, "Subject"))
    if cert is not None:
        key_der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        if subject is None:
            with warnings.catch_warnings():
                # Real subjects break X.520 rules (C=Germany in a CSS-Exchange capture); cryptography warns on
                # each read, which would reach the admin's terminal as a Python warning.
                warnings.simplefilter("ignore", UserWarning)
                subject = cert.subject.rfc4514_string()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            domains = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            domains = ()
    else:
        # No RawData: the names Exchange lists (its CertificateDomains), when it sends them.
        listed = _get(obj, "CertificateDomains")
        if isinstance(listed, (list, tuple)):
            domains = tuple(str(n).strip().lower() for n in listed if str(n).strip())
    common_name = None
    if cert is not None:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(cns[0].value) if cns else None
    elif subject:
        common_name = subject_cn(subject)
    has_key = _get(obj, "HasPrivateKey")
    return CertInfo(
        thumbprint=thumb.upper(),
        status=_text(_get(obj, "Status")),
        has_private_key=has_key if isinstance(has_key, bool) else None,
        services=parse_services(_get(obj, "Services")) if _get(obj, "Services") is not None else None,
        subject=subject,
        public_key_der=key_der,
        domains=domains,
        common_name=common_name,
    )


def subject_cn(subject: str) -> str | None:
    """The CN of a subject as Exchange writes it (`CN=mail.example.com, OU=IT, O="Smith, Jones", C=US`):
    RDNs split at commas outside double quotes, where `""` is a quote (X500DistinguishedName's rules)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in subject:
        if ch == '"':
            quoted = not quoted
        elif ch in ",;" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key.strip().upper() == "CN":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('""', '"')
            return value
    return None


def certificates(objects: Iterable[Any]) -> list[CertInfo]:
    return [info for info in (cert_info(o) for o in objects) if info is not None]


def find(certs: Iterable[CertInfo], thumb: str | None) -> CertInfo | None:
    if thumb is None:
        return None
    return next((c for c in certs if c.thumbprint == thumb.upper() and not c.pending), None)


@dataclass(frozen=True)
class Decision:
    done: bool
    reason: str


def installed_with_key(certs: list[CertInfo], thumb: str | None) -> Decision:
    found = find(certs, thumb)
    if found is None:
        return Decision(False, "the certificate is not on the server yet")
    if found.has_private_key is False:
        return Decision(False, "present without its private key")
    return Decision(True, f"certificate {thumb} is present with its private key")


def services_enabled(certs: list[CertInfo], thumb: str | None, wanted: Iterable[Service],
                     journal_says_done: bool) -> Decision:
    found = find(certs, thumb)
    if found is None:
        return Decision(False, "the certificate is not on the server")
    want = {s.value for s in wanted}
    if found.services is None:
        # Some servers do not report Services remotely: trust our own record, else enable (additive).
        if journal_says_done:
            return Decision(True, "services not reported by the server; enabled by an earlier run")
        return Decision(False, "services not reported by the server")
    missing = sorted(want - found.services)
    if missing:
        return Decision(False, "not enabled for " + ", ".join(missing))
    if Service.SMTP.value in want and not journal_says_done:
        # Services is computed: SMTP shows on any certificate whose key the transport can read (one enabled for
        # POP or IMAP too), not only on the default SMTP certificate; Enable -Force is the only way to be sure.
        return Decision(False, "SMTP is shown, which does not make it the default SMTP certificate")
    return Decision(True, "enabled for " + ", ".join(sorted(want)))


@dataclass(frozen=True)
class PendingMatch:
    """The source's pending requests for this playbook's certificate: `mine` have its CN and exactly its
    names; `ambiguous` have its CN but other names (or the server did not say which), so whose they are
    is not exmig's to guess."""

    mine: tuple[CertInfo, ...]
    ambiguous: tuple[CertInfo, ...]

    @property
    def all(self) -> tuple[CertInfo, ...]:
        return self.mine + self.ambiguous


def matching_requests(certs: list[CertInfo], cn: str, domains: Iterable[str]) -> PendingMatch:
    """Pending requests whose parsed CN is exactly `cn` (another CN, e.g. mail.example.community for
    mail.example.com, is someone else's), sorted by whether their names are exactly `domains`."""
    wanted = {d.lower() for d in domains}
    mine: list[CertInfo] = []
    ambiguous: list[CertInfo] = []
    for c in certs:
        if not c.pending or c.common_name is None or c.common_name.lower() != cn.lower():
            continue
        (mine if c.domains and set(c.domains) == wanted else ambiguous).append(c)
    return PendingMatch(tuple(mine), tuple(ambiguous))


def ca_store_has(thumbprints_in_store: Iterable[str], wanted: Iterable[str]) -> Decision:
    have = {t.upper() for t in thumbprints_in_store}
    missing = [t for t in wanted if t.upper() not in have]
    if missing:
        return Decision(False, f"{len(missing)} intermediate(s) missing from LocalMachine\\CA")
    return Decision(True, "the intermediate certificate(s) are in LocalMachine\\CA")


def store_thumbprints(objects: Iterable[Any]) -> list[str]:
    """Get-ChildItem Cert:\\LocalMachine\\CA output -> thumbprints (from RawData when present)."""
    out = []
    for obj in objects:
        info = cert_info(obj)
        if info is not None:
            out.append(info.thumbprint)
    return out


# -- what the server's answers carry ------------------------------------------------------------


def csr_text(output: list[Any]) -> str:
    """The request as the server gave it: 2010 New-ExchangeCertificate returns the Base64 text (a string,
    or an object whose text it is); Get-Content/Export return bytes (text or DER, maybe as FileData)."""
    for item in output:
        getter = getattr(item, "get", None)
        value = getter("FileData") if callable(getter) and getter("FileData") is not None else item
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
            if data[:1] == b"0":  # DER: a SEQUENCE
                body = base64.b64encode(data).decode()
                lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
                return f"-----BEGIN NEW CERTIFICATE REQUEST-----\n{lines}\n-----END NEW CERTIFICATE REQUEST-----\n"
            for encoding in ("utf-8-sig", "utf-16"):
                try:
                    return data.decode(encoding)
                except UnicodeDecodeError:
                    continue
        text = str(value) if value is not None else ""
        if "REQUEST-----" in text:
            return text
    strings = [o for o in output if isinstance(o, str)]
    if strings:  # Get-Content without -Encoding Byte: one string per line
        return "\n".join(strings) + "\n"
    raise ExmigError("the server returned no certificate request")


def pfx_bytes(output: list[Any]) -> bytes:
    for item in output:
        if isinstance(item, (bytes, bytearray)):
            return bytes(item)
        getter = getattr(item, "get", None)
        if callable(getter):
            data = getter("FileData")
            if isinstance(data, (bytes, bytearray)):
                return bytes(data)
    raise ExmigError("Export-ExchangeCertificate returned no FileData")
