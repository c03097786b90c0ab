"""Emulated Exchange 2007/2010 servers for the exmig rehearsal lab.

Public API:
    model = ExchangeServerModel.load_or_create(state_dir, name="EX2010A", version="2010",
                                               fqdn="ex2010a.contoso.com")
    settings = LabSettings(third_party_roots=(lab_ca.root_pem,))
    registry = build_registry(model, settings)        # plug into the protocol server
    ServerInspector(model).served_cert("https")       # read-only view for tests / verify / TLS
"""

from __future__ import annotations

from cryptography import x509

from orchestrator.lab.exchange.certutil import CERTUTIL_TEXTS
from orchestrator.lab.exchange.clientaccess import ClientAccessCmdlets
from orchestrator.lab.exchange.cmdlets import EMS_2007_SNAPIN, EXCHANGE_CONFIGURATION, ExchangeCertificateCmdlets
from orchestrator.lab.exchange.inspect import TLS_SERVICES, CertView, ServerInspector
from orchestrator.lab.exchange.model import CA, MY, REQUEST, ROOT, ExchangeServerModel, Services
from orchestrator.lab.exchange.settings import ERROR_TEXTS, ErrorText, LabSettings
from orchestrator.lab.exchange.windows_commands import FULL_LANGUAGE, WindowsCommands
from orchestrator.lab.registry import Registry

__all__ = [
    "CA", "CERTUTIL_TEXTS", "EMS_2007_SNAPIN", "ERROR_TEXTS", "EXCHANGE_CONFIGURATION", "FULL_LANGUAGE", "MY",
    "REQUEST", "ROOT", "TLS_SERVICES", "CertView", "ErrorText", "ExchangeServerModel", "LabSettings",
    "ServerInspector", "Services", "build_registry",
]


def build_registry(server: ExchangeServerModel, settings: LabSettings) -> Registry:
    """All commands of one emulated server: its Exchange cmdlets (certificates, client access; per version) and
    Windows commands.

    Installs `settings.third_party_roots` into the server's \\Root first (when enabled), so certificates
    issued by the lab CA validate like ones from a commercial CA.
    """
    if settings.install_third_party_roots and settings.third_party_roots:
        server.trust_third_party_roots(settings.third_party_roots)
    server.known_roots = tuple(c for pem in settings.third_party_roots for c in x509.load_pem_x509_certificates(pem))
    server.revocation_offline = settings.revocation_offline
    registry = Registry()
    ExchangeCertificateCmdlets(server, settings).register(registry)
    ClientAccessCmdlets(server, settings).register(registry)
    WindowsCommands(server, settings).register(registry)
    return registry
