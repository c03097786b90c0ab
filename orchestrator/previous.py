"""What served before this run, per server and service, and the facts about a certificate that retiring or
re-enabling it depends on. Pure: input is what the server and its TLS endpoints answered.

Why the TLS endpoints decide: Services in Get-ExchangeCertificate is a computed view, not a list of bindings
(issue 16): POP and IMAP show on every certificate whose names match the configured name, and on 2010 SMTP shows
on every certificate whose key the transport can read. A previous certificate for the same names therefore keeps
showing POP, IMAP and SMTP after the new one took over. What a client is handed (orchestrator/verify/tls_probe.py)
is what serves; only IIS in Services is exact (it is the Default Web Site's binding), and the default SMTP
certificate is a property of the server object in Active Directory (msExchServerInternalTLSCert, Microsoft's
"Selection of Inbound Anonymous TLS Certificates", Exchange 2010 documentation), which Get-ExchangeCertificate does
not show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from orchestrator.checks import CertInfo, cert_info
from orchestrator.decision import Read
from orchestrator.dialects import Dialect
from orchestrator.playbook import Server, Service

# The services a previous certificate is recorded for, and the TLS probe's name for each.
SERVICES: tuple[Service, ...] = (Service.IIS, Service.SMTP, Service.POP, Service.IMAP)
TLS_KIND: dict[Service, str] = {Service.IIS: "https", Service.SMTP: "smtp", Service.POP: "pop3s",
                                Service.IMAP: "imaps"}


@dataclass(frozen=True)
class Held:
    """One certificate on a server, with the facts retirement needs beside CertInfo's."""

    info: CertInfo
    self_signed: bool | None  # None: the server did not say and RawData was not sent
    exportable: bool | None  # PrivateKeyExportable; None: not reported (RawData-only objects)

    @property
    def thumbprint(self) -> str:
        return self.info.thumbprint


def _self_signed(obj: Any) -> bool | None:
    """IsSelfSigned as Exchange reports it; from RawData when only that came (the CSS-Exchange captures): issuer
    equals subject and the certificate's own key verifies its signature. RootCAType does not tell: a self-signed
    certificate is Registry when it is in \\Root and None when not, and None is also what a broken chain shows."""
    getter = getattr(obj, "get", None)
    reported = getter("IsSelfSigned") if callable(getter) else None
    if isinstance(reported, bool):
        return reported
    raw = getter("RawData") if callable(getter) else None
    if not isinstance(raw, (bytes, bytearray)):
        return None
    try:
        cert = x509.load_der_x509_certificate(bytes(raw))
    except ValueError:
        return None
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def held(objects: Iterable[Any]) -> list[Held]:
    """Get-ExchangeCertificate output -> the certificates (pending requests are not certificates)."""
    out = []
    for obj in objects:
        info = cert_info(obj)
        if info is None or info.pending:
            continue
        getter = getattr(obj, "get", None)
        exportable = getter("PrivateKeyExportable") if callable(getter) else None
        out.append(Held(info, _self_signed(obj), exportable if isinstance(exportable, bool) else None))
    return out


def held_certificates(server: Server) -> Read[list[Held]]:
    """The fact the record, the retire and the rollback decisions read: every certificate on the server."""
    return Read("certificates held", Dialect(server.version).list_certificates(server), held)


def serving(certs: list[Held], presented: Mapping[str, str | None], default_smtp: str | None = None
            ) -> dict[Service, tuple[str | None, str]]:
    """Per service: (thumbprint serving it, where that was learned: "tls", "server" or "unknown").

    The TLS endpoint's answer wins. Without one (endpoint down, port not given): IIS from Services (its binding);
    SMTP from the known default SMTP certificate; POP/IMAP only when exactly one certificate shows the service."""
    out: dict[Service, tuple[str | None, str]] = {}
    for service in SERVICES:
        seen = presented.get(TLS_KIND[service])
        if seen:
            out[service] = (seen.upper(), "tls")
            continue
        if service is Service.SMTP and default_smtp:
            out[service] = (default_smtp.upper(), "server")
            continue
        showing = [c.thumbprint for c in certs if c.info.services is not None and service.value in c.info.services]
        if service is not Service.SMTP and len(showing) == 1:
            out[service] = (showing[0], "server")
        else:
            out[service] = (None, "unknown")
    return out


def served_before(server: str, held_now: Iterable[Held], presented: Mapping[str, str | None],
                  default_smtp: str | None = None) -> dict[str, Any]:
    """The journal's record of what served `server` before this run: plain JSON data.

    `held_now`: the server's certificates (held_certificates) before anything was changed.     `presented`: TLS probe kind ("https", "smtp", "imaps", "pop3s") -> the leaf thumbprint it presented (None or
    absent: nothing learned). `default_smtp`: the thumbprint of the default SMTP certificate where known."""
    certs = list(held_now)
    by_service = serving(certs, presented, default_smtp)
    used = {thumb for thumb, _ in by_service.values() if thumb}
    return {
        "server": server,
        "services": {s.value: by_service[s][0] for s in SERVICES},
        "learned_from": {s.value: by_service[s][1] for s in SERVICES},
        "certificates": {
            c.thumbprint: {"subject": c.info.subject, "self_signed": c.self_signed, "exportable": c.exportable,
                           "services": sorted(c.info.services) if c.info.services is not None else None}
            for c in certs if c.thumbprint in used
        },
    }


def previous_services(record: Mapping[str, Any], services: Iterable[Service] = SERVICES) -> dict[str, list[Service]]:
    """Thumbprint -> the services (of `services`) it served before, in SERVICES order."""
    wanted = set(services)
    out: dict[str, list[Service]] = {}
    for service in SERVICES:
        thumb = record.get("services", {}).get(service.value)
        if thumb and service in wanted:
            out.setdefault(thumb.upper(), []).append(service)
    return out
