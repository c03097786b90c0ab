"""The client-access configuration of one emulated server: virtual directories, Autodiscover's internal URI, Outlook
Anywhere, receive connectors. Pure data with its fresh-install defaults and its state.json form; the cmdlets that
read and change it are in clientaccess.py, the lock and the saving in model.py.

Fresh-install defaults (Exchange setup):
* InternalUrl of every virtual directory is https://<server FQDN>/<path>, AutoDiscoverServiceInternalUri
  https://<server FQDN>/Autodiscover/Autodiscover.xml ("The default internalURL and AutoDiscoverServiceInternalURI
  values are derived from the server FQDN", public 2007/2013 coexistence write-up, techroom.3utilities.com 2014;
  "The URLs are composed of https://, the FQDN of the server, the IIS virtual folder", davidmtechblog 2014).
* ExternalUrl is empty unless setup was given the external domain ("Depending on choices made at installation
  time, there will either be no external URL or a URL like mail.contoso.com", same blog): the lab setting
  `external_host_at_setup` (None: empty, the default).
* OAB's InternalUrl uses http: the OAB virtual directory does not require SSL by default (davidmtechblog 2016,
  "Exchange 2010 (SP3) - Virtual Directory Authentication Settings": all directories require SSL "except OAB,
  PowerShell"). 2007 UNCONFIRMED -> setting `oab_internal_http` (on).
* Exchange 2007 (Client Access and Mailbox roles on one server, as the seed's) also has the legacy Outlook Web Access
  directories /Exchange, /Public, /Exchweb and /Exadmin for Exchange 2003/2000 mailboxes, which
  Get-OwaVirtualDirectory lists beside owa ("Exchange 2007 virtual directories installed in different
  configurations", technet bb885041). Their URLs on a fresh install are UNCONFIRMED: the lab leaves them empty.
* Outlook Anywhere is off until Enable-OutlookAnywhere (no Rpc virtual directory, Get-OutlookAnywhere answers
  nothing).
* Receive connectors "Default <SERVER>" and "Client <SERVER>" with Fqdn = the server's FQDN (the hub transport
  role's two default connectors on 2007 and 2010).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_SITE = "Default Web Site"


@dataclass(frozen=True)
class VdirKind:
    key: str  # the playbook's service name: owa, ews, activesync, oab, ecp
    noun: str  # the cmdlets' noun: Get-<noun>, Set-<noun>
    name: str  # the IIS virtual directory, the first part of Name "owa (Default Web Site)"
    path: str  # the URL path under the host
    type_name: str  # the .NET class of the output object
    versions: tuple[str, ...]
    folder: str  # the physical path under the Exchange install folder's ClientAccess


_DS = "Microsoft.Exchange.Data.Directory.SystemConfiguration."
VDIR_KINDS: tuple[VdirKind, ...] = (
    VdirKind("owa", "OwaVirtualDirectory", "owa", "/owa", _DS + "ADOwaVirtualDirectory", ("2007", "2010"), "Owa"),
    VdirKind("ews", "WebServicesVirtualDirectory", "EWS", "/EWS/Exchange.asmx", _DS + "ADWebServicesVirtualDirectory",
             ("2007", "2010"), "exchweb\\EWS"),
    VdirKind("activesync", "ActiveSyncVirtualDirectory", "Microsoft-Server-ActiveSync", "/Microsoft-Server-ActiveSync",
             _DS + "ADMobileVirtualDirectory", ("2007", "2010"), "Sync"),
    VdirKind("oab", "OabVirtualDirectory", "OAB", "/OAB", _DS + "ADOabVirtualDirectory", ("2007", "2010"), "OAB"),
    # The Exchange Control Panel came with 2010; 2007 has no ECP virtual directory and no *-EcpVirtualDirectory.
    VdirKind("ecp", "EcpVirtualDirectory", "ecp", "/ecp", _DS + "ADEcpVirtualDirectory", ("2010",), "ecp"),
)
KIND_BY_KEY = {k.key: k for k in VDIR_KINDS}
LEGACY_OWA_2007 = ("Exadmin", "Exchange", "Exchweb", "Public")


def kinds_for(version: str) -> tuple[VdirKind, ...]:
    return tuple(k for k in VDIR_KINDS if version in k.versions)


@dataclass
class VirtualDirectory:
    kind: str
    internal_url: str | None
    external_url: str | None


@dataclass
class ReceiveConnector:
    name: str
    fqdn: str


@dataclass
class WebConfig:
    vdirs: dict[str, VirtualDirectory] = field(default_factory=dict)  # by kind key
    legacy_owa: dict[str, VirtualDirectory] = field(default_factory=dict)  # 2007: by IIS name (Exchange, Public...)
    autodiscover_internal_uri: str | None = None
    outlook_anywhere_host: str | None = None  # None: Outlook Anywhere not enabled
    outlook_anywhere_ssl_offloading: bool = False
    outlook_anywhere_auth: str = "Basic"
    receive_connectors: list[ReceiveConnector] = field(default_factory=list)

    @classmethod
    def fresh(cls, name: str, fqdn: str, version: str, external_host: str | None = None,
              oab_internal_http: bool = True) -> WebConfig:
        vdirs = {}
        for kind in kinds_for(version):
            scheme = "http" if kind.key == "oab" and oab_internal_http else "https"
            external = f"https://{external_host}{kind.path}" if external_host else None
            vdirs[kind.key] = VirtualDirectory(kind.key, f"{scheme}://{fqdn}{kind.path}", external)
        legacy = {name: VirtualDirectory("owa", None, None) for name in LEGACY_OWA_2007} if version == "2007" else {}
        return cls(
            vdirs=vdirs,
            legacy_owa=legacy,
            autodiscover_internal_uri=f"https://{fqdn}/Autodiscover/Autodiscover.xml",
            receive_connectors=[ReceiveConnector(f"Default {name}", fqdn), ReceiveConnector(f"Client {name}", fqdn)],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "vdirs": {k: {"internal_url": v.internal_url, "external_url": v.external_url} for k, v in self.vdirs.items()},
            "legacy_owa": {k: {"internal_url": v.internal_url, "external_url": v.external_url}
                           for k, v in self.legacy_owa.items()},
            "autodiscover_internal_uri": self.autodiscover_internal_uri,
            "outlook_anywhere": None if self.outlook_anywhere_host is None else {
                "external_hostname": self.outlook_anywhere_host,
                "ssl_offloading": self.outlook_anywhere_ssl_offloading,
                "client_authentication": self.outlook_anywhere_auth,
            },
            "receive_connectors": [{"name": c.name, "fqdn": c.fqdn} for c in self.receive_connectors],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WebConfig:
        anywhere = data.get("outlook_anywhere")
        return cls(
            vdirs={k: VirtualDirectory(k, v.get("internal_url"), v.get("external_url"))
                   for k, v in data.get("vdirs", {}).items()},
            legacy_owa={k: VirtualDirectory("owa", v.get("internal_url"), v.get("external_url"))
                        for k, v in data.get("legacy_owa", {}).items()},
            autodiscover_internal_uri=data.get("autodiscover_internal_uri"),
            outlook_anywhere_host=anywhere["external_hostname"] if anywhere else None,
            outlook_anywhere_ssl_offloading=bool(anywhere and anywhere.get("ssl_offloading")),
            outlook_anywhere_auth=(anywhere or {}).get("client_authentication", "Basic"),
            receive_connectors=[ReceiveConnector(c["name"], c["fqdn"]) for c in data.get("receive_connectors", [])],
        )
