"""Read-only views of an emulated server for tests, `exmig verify` and the lab's TLS services.

Nothing here changes state; every call takes the server's lock so it sees a completed command.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.lab.exchange import pki
from orchestrator.lab.exchange.certificate import status_of
from orchestrator.lab.exchange.model import MY, STORES, ExchangeServerModel, Services, services_text
from orchestrator.lab.exchange.winfs import normalize
from orchestrator.lab.exchange.x500 import format_name

# Which Exchange service answers on which TLS protocol of the lab.
TLS_SERVICES: dict[str, Services] = {
    "https": Services.IIS,
    "smtp": Services.SMTP,
    "imaps": Services.IMAP,
    "pop3s": Services.POP,
}


@dataclass(frozen=True)
class CertView:
    store: str
    thumbprint: str
    subject: str
    has_private_key: bool
    private_key_exportable: bool
    services: str  # e.g. "IMAP, POP, IIS, SMTP" or "None"
    status: str  # e.g. "Valid", "Untrusted", "PendingRequest"
    root_ca_type: str


class ServerInspector:
    def __init__(self, model: ExchangeServerModel) -> None:
        self.model = model

    def thumbprints(self, store: str) -> list[str]:
        """Thumbprints in one store: 'My', 'CA', 'Root' or 'REQUEST'."""
        return [e.thumbprint for e in self.model.entries(store)]

    def stores(self) -> dict[str, list[str]]:
        with self.model.lock:
            return {store: self.thumbprints(store) for store in STORES}

    def certificate(self, thumbprint: str, store: str = MY) -> CertView | None:
        with self.model.lock:
            entry = self.model.find(store, thumbprint)
            if entry is None:
                return None
            status, root_type = status_of(self.model, entry)
            return CertView(
                store=store,
                thumbprint=entry.thumbprint,
                subject=format_name(entry.cert.subject),
                has_private_key=entry.has_key,
                private_key_exportable=entry.exportable and entry.has_key,
                services=services_text(self.model.services_of(entry)),
                status=status,
                root_ca_type=root_type,
            )

    def services(self) -> dict[str, str]:
        """Thumbprint of each certificate in \\My -> its Services text."""
        return {e.thumbprint: services_text(self.model.services_of(e)) for e in self.model.entries(MY)}

    def serving(self) -> dict[str, str | None]:
        """TLS service name ('https', 'smtp', 'imaps', 'pop3s') -> thumbprint of the certificate serving it."""
        out: dict[str, str | None] = {}
        for name, service in TLS_SERVICES.items():
            owner = self.model.owner(service)
            out[name] = owner.thumbprint if owner else None
        return out

    def served_cert(self, service: str) -> tuple[bytes, bytes, list[bytes]] | None:
        """(leaf PEM, private key PEM, [intermediate PEMs]) of the certificate bound to `service`.

        The chain is what Windows would send: built from \\CA (and \\Root) minus the self-signed root.
        None when no certificate with a private key serves it.
        """
        with self.model.lock:
            owner = self.model.owner(TLS_SERVICES[service])
            if owner is None or owner.key_pem is None:
                return None
            chain = self.model.trust(owner.cert).chain[1:]
            intermediates = [pki.cert_pem(c) for c in chain if not pki.is_self_signed(c)]
            return pki.cert_pem(owner.cert), owner.key_pem, intermediates

    def file(self, path: str) -> bytes | None:
        return self.model.fs.read(normalize(path))

    def iis_require_ssl(self) -> bool:
        return self.model.iis_require_ssl
