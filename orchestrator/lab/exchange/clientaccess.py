"""Client-access cmdlets of one emulated server (issue 17): the virtual directories' Get-/Set-, Get-/Set-
ClientAccessServer, Outlook Anywhere, receive connectors, POP/IMAP settings.

Syntax per version, from Microsoft's cmdlet reference:
* Get-OwaVirtualDirectory takes -Identity or -Server on 2007 too ("Get-OwaVirtualDirectory [-Identity
  <VirtualDirectoryIdParameter>] [-DomainController <Fqdn>]" / "-Server <ServerIdParameter>", aa998588(v=exchg.80));
  2010 adds -ADPropertiesOnly (Get-OwaVirtualDirectory, learn.microsoft.com/powershell/module/exchange). The other
  Get-*VirtualDirectory cmdlets follow the same two parameter sets.
* Set-*VirtualDirectory: -Identity (position 1, pipeline by property name) with -ExternalUrl <Uri> -InternalUrl <Uri>
  (Set-OabVirtualDirectory bb124707(v=exchg.80) on 2007; Set-WebServicesVirtualDirectory aa997233(v=exchg.80); 2010
  pages of office-docs-powershell, reference S1), no -Server.
* Set-ClientAccessServer -Identity <ClientAccessServerIdParameter> [-AutoDiscoverServiceInternalUri <Uri>]
  (bb125157(v=exchg.80)).
* Identities as Exchange writes them: "<SERVER>\\owa (Default Web Site)" (Set-OwaVirtualDirectory examples, and the
  2007 coexistence commands of reference §7 [S22]); Set-OABVirtualDirectory -Identity "Server1\\OAB (Default Web
  Site)" (Set-OabVirtualDirectory Example 1).
* Exchange 2007 has no Exchange Control Panel: *-EcpVirtualDirectory are not registered there, so a client gets
  PowerShell's CommandNotFoundException ("The term ... is not recognized").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from orchestrator.lab.exchange.cmdlets import EMS_2007_SNAPIN, EXCHANGE_CONFIGURATION, implementing_type
from orchestrator.lab.exchange.model import ExchangeServerModel
from orchestrator.lab.exchange.params import with_common
from orchestrator.lab.exchange.settings import LabSettings
from orchestrator.lab.exchange.webconfig import DEFAULT_SITE, VdirKind, VirtualDirectory, WebConfig, kinds_for
from orchestrator.lab.objects import LabList, LabObject, LabUri
from orchestrator.lab.registry import CommandCall, CommandSpec, Kind, LabError, Parameter, Registry

S, U, B, SA = Kind.STRING, Kind.URI, Kind.BOOL, Kind.STRINGS
_BASE_TYPES = [
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADExchangeServiceVirtualDirectory",
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADVirtualDirectory",
    "Microsoft.Exchange.Data.Directory.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
CLIENT_ACCESS_SERVER_TYPE = "Microsoft.Exchange.Data.Directory.Management.ClientAccessServer"
OUTLOOK_ANYWHERE_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADRpcHttpVirtualDirectory"
RECEIVE_CONNECTOR_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.ReceiveConnector"
POP_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.Pop3AdConfiguration"
IMAP_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.Imap4AdConfiguration"
EXCHANGE_VERSION = {"2007": "0.1 (8.0.535.0)", "2010": "0.10 (14.0.100.0)"}
INSTALL_PATH = {"2007": "C:\\Program Files\\Microsoft\\Exchange Server",
                "2010": "C:\\Program Files\\Microsoft\\Exchange Server\\V14"}


def _strip_site(text: str) -> str:
    suffix = f" ({DEFAULT_SITE})".lower()
    return text[: -len(suffix)] if text.lower().endswith(suffix) else text


class ClientAccessCmdlets:
    def __init__(self, model: ExchangeServerModel, settings: LabSettings) -> None:
        self.model = model
        self.settings = settings

    # --- state -------------------------------------------------------------------------------------------

    def _web(self) -> WebConfig:
        """The configuration, made with the fresh-install defaults (and saved) on first use."""
        model = self.model
        with model.lock:
            if model.web is None:
                model.web = WebConfig.fresh(model.name, model.fqdn, model.version,
                                            self.settings.external_host_at_setup, self.settings.oab_internal_http)
                model.save()
            return model.web

    def _error(self, call: CommandCall, key: str, **fmt: object) -> LabError:
        return self.settings.error(key, call.name, implementing_type(call.name), **fmt)

    def _dc(self) -> str:
        fqdn = self.model.fqdn
        return f"dc01.{fqdn.split('.', 1)[1]}" if "." in fqdn else "dc01"

    def _is_me(self, text: str) -> bool:
        return text.strip().lower() in (self.model.name.lower(), self.model.fqdn.lower())

    def _check_server(self, call: CommandCall) -> bool:
        """-Server naming another server: the not-found error (this lab server knows only itself)."""
        server = call.params.get("Server")
        if server is None or self._is_me(server):
            return True
        raise self.settings.error("server_not_found", call.name, implementing_type(call.name), server=server,
                                  domain_controller=self._dc())

    def _identity_matches(self, given: str, leaf: str) -> bool:
        """VirtualDirectoryIdParameter: "SERVER\\name (Default Web Site)", the same without the site, or
        "name (Default Web Site)" for the local server (case-insensitive)."""
        text = given.strip()
        if "\\" in text:
            server, _, rest = text.partition("\\")
            if not self._is_me(server):
                return False
        else:
            rest = text
        return _strip_site(rest).lower() == _strip_site(leaf).lower()

    def _not_found(self, call: CommandCall, identity: str) -> LabError:
        return self._error(call, "object_not_found", identity=identity, domain_controller=self._dc())

    def _should_process(self, call: CommandCall) -> bool:
        return call.params.get("WhatIf") is not True

    def _url(self, call: CommandCall, name: str) -> str | None:
        """A Uri parameter's value after Exchange's validation: absolute, http or https; $null clears it. An empty
        string also clears it (lab choice, UNCONFIRMED)."""
        value = call.params.get(name)
        if value is None or value == "":
            return None
        scheme, sep, _ = value.partition("://")
        if not sep or not scheme.isalpha():
            raise self._error(call, "url_not_absolute", value=value, property=name)
        if scheme.lower() not in ("http", "https"):
            raise self._error(call, "url_bad_scheme", value=value, property=name, scheme=scheme)
        return value

    # --- output objects -----------------------------------------------------------------------------------

    def _vdir_object(self, kind: VdirKind, iis_name: str, vdir: VirtualDirectory) -> LabObject:
        model = self.model
        name = f"{iis_name} ({DEFAULT_SITE})"
        identity = f"{model.name}\\{name}"
        domain = model.fqdn.split(".", 1)[1] if "." in model.fqdn else model.fqdn
        dc_path = ",".join(f"DC={part}" for part in domain.split("."))
        props: dict[str, Any] = {
            "Name": name,
            "Server": model.name,
            "InternalUrl": LabUri(vdir.internal_url) if vdir.internal_url else None,
            "ExternalUrl": LabUri(vdir.external_url) if vdir.external_url else None,
            "MetabasePath": f"IIS://{model.fqdn}/W3SVC/1/ROOT/{iis_name}",
            "Path": f"{INSTALL_PATH[model.version]}\\ClientAccess\\{kind.folder}",
            "AdminDisplayName": "",
            "ExchangeVersion": EXCHANGE_VERSION[model.version],
            "DistinguishedName": f"CN={name},CN=HTTP,CN=Protocols,CN={model.name},CN=Servers,CN=Exchange "
                                 f"Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,CN=MITSERV,"
                                 f"CN=Microsoft Exchange,CN=Services,CN=Configuration,{dc_path}",
            "Identity": identity,
            "Guid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{model.fqdn}/{iis_name}")),
            "IsValid": True,
        }
        return LabObject([kind.type_name, *_BASE_TYPES], adapted=props, to_string=name)

    def _cas_object(self) -> LabObject:
        model, web = self.model, self._web()
        props = {
            "Name": model.name,
            "Fqdn": model.fqdn,
            "OutlookAnywhereEnabled": web.outlook_anywhere_host is not None,
            "AutoDiscoverServiceCN": model.name,
            "AutoDiscoverServiceClassName": "ms-Exchange-AutoDiscover-Service",
            "AutoDiscoverServiceInternalUri": (LabUri(web.autodiscover_internal_uri)
                                               if web.autodiscover_internal_uri else None),
            "AutoDiscoverSiteScope": LabList(["Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String]]",
                                              "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"],
                                             ["Default-First-Site-Name"]),
            "Identity": model.name,
            "IsValid": True,
        }
        return LabObject([CLIENT_ACCESS_SERVER_TYPE, "System.Object"], adapted=props, to_string=model.name)

    def _anywhere_object(self) -> LabObject:
        model, web = self.model, self._web()
        name = f"Rpc ({DEFAULT_SITE})"
        # ExternalHostname is Exchange's Hostname type; sent as its text (how 2010 remoting serializes it is
        # UNCONFIRMED; a client reads it as text either way).
        props = {
            "ServerName": model.name,
            "SSLOffloading": web.outlook_anywhere_ssl_offloading,
            "ExternalHostname": web.outlook_anywhere_host,
            "ClientAuthenticationMethod": web.outlook_anywhere_auth,
            "Name": name,
            "Server": model.name,
            "Identity": f"{model.name}\\{name}",
            "IsValid": True,
        }
        return LabObject([OUTLOOK_ANYWHERE_TYPE, *_BASE_TYPES[1:]], adapted=props, to_string=name)

    def _connector_object(self, index: int) -> LabObject:
        model = self.model
        connector = self._web().receive_connectors[index]
        props = {
            "Name": connector.name,
            "Fqdn": connector.fqdn,  # Exchange's Fqdn type, as text
            "Server": model.name,
            "Bindings": ["0.0.0.0:25"] if connector.name.startswith("Default") else ["0.0.0.0:587"],
            "Identity": f"{model.name}\\{connector.name}",
            "Enabled": True,
            "IsValid": True,
        }
        return LabObject([RECEIVE_CONNECTOR_TYPE, "System.Object"], adapted=props, to_string=connector.name)

    def _protocol_object(self, protocol: str) -> LabObject:
        model = self.model
        configured = model.pop_name if protocol == "pop" else model.imap_name
        # On a fresh server the name POP/IMAP present is the server's FQDN (model.services_of's default); whether
        # Get-POPSettings shows it or an empty X509CertificateName then is UNCONFIRMED.
        props = {
            "Name": "1",
            "Server": model.name,
            "X509CertificateName": configured or model.fqdn,
            "ProtocolName": "POP3" if protocol == "pop" else "IMAP4",
            "Identity": model.name,
            "IsValid": True,
        }
        type_name = POP_TYPE if protocol == "pop" else IMAP_TYPE
        return LabObject([type_name, "System.Object"], adapted=props, to_string="1")

    # --- virtual directories -----------------------------------------------------------------------------

    def _directories(self, kind: VdirKind) -> list[tuple[str, VirtualDirectory]]:
        """(IIS name, directory) of a kind on this server, in name order as Get- lists them (UNCONFIRMED order); 2007's
        Get-OwaVirtualDirectory also lists the legacy directories."""
        web = self._web()
        found = [(kind.name, web.vdirs[kind.key])] if kind.key in web.vdirs else []
        if kind.key == "owa":
            found += list(web.legacy_owa.items())
        return sorted(found, key=lambda item: item[0].lower())

    def get_vdir(self, kind: VdirKind) -> Callable[[CommandCall], None]:
        def handler(call: CommandCall) -> None:
            self._check_server(call)
            with self.model.lock:
                found = self._directories(kind)
                if call.has("Identity"):
                    found = [(n, v) for n, v in found
                             if self._identity_matches(call.params["Identity"], f"{n} ({DEFAULT_SITE})")]
                    if not found:
                        call.write_error(self._not_found(call, call.params["Identity"]))
                        return
                for name, vdir in found:
                    call.write(self._vdir_object(kind, name, vdir))
        return handler

    def set_vdir(self, kind: VdirKind) -> Callable[[CommandCall], None]:
        def handler(call: CommandCall) -> None:
            identity = call.params["Identity"]
            # Validated before anything changes: one bad URL leaves both URLs as they were.
            internal = self._url(call, "InternalUrl") if call.has("InternalUrl") else None
            external = self._url(call, "ExternalUrl") if call.has("ExternalUrl") else None
            with self.model.transaction():
                found = [v for n, v in self._directories(kind)
                         if self._identity_matches(identity, f"{n} ({DEFAULT_SITE})")]
                if not found:
                    raise self._not_found(call, identity)
                if not self._should_process(call):
                    return
                if call.has("InternalUrl"):
                    found[0].internal_url = internal
                if call.has("ExternalUrl"):
                    found[0].external_url = external
        return handler

    # --- Client Access server ------------------------------------------------------------------------------

    def get_cas(self, call: CommandCall) -> None:
        with self.model.lock:
            if call.has("Identity") and not self._is_me(call.params["Identity"]):
                call.write_error(self._not_found(call, call.params["Identity"]))
                return
            call.write(self._cas_object())

    def set_cas(self, call: CommandCall) -> None:
        identity = call.params["Identity"]
        if not self._is_me(identity):
            raise self._not_found(call, identity)
        uri = self._url(call, "AutoDiscoverServiceInternalUri") if call.has("AutoDiscoverServiceInternalUri") else None
        if not self._should_process(call):
            return
        with self.model.transaction():
            if call.has("AutoDiscoverServiceInternalUri"):
                self._web().autodiscover_internal_uri = uri

    # --- Outlook Anywhere -----------------------------------------------------------------------------------

    def get_anywhere(self, call: CommandCall) -> None:
        self._check_server(call)
        with self.model.lock:
            if self._web().outlook_anywhere_host is None:
                if call.has("Identity"):
                    call.write_error(self._not_found(call, call.params["Identity"]))
                return
            if call.has("Identity") and not self._identity_matches(call.params["Identity"], f"Rpc ({DEFAULT_SITE})"):
                call.write_error(self._not_found(call, call.params["Identity"]))
                return
            call.write(self._anywhere_object())

    def enable_anywhere(self, call: CommandCall) -> None:
        self._check_server(call)
        with self.model.transaction():
            web = self._web()
            if web.outlook_anywhere_host is not None:
                raise self._error(call, "outlook_anywhere_enabled", server=self.model.name)
            if not self._should_process(call):
                return
            web.outlook_anywhere_host = call.params["ExternalHostname"]
            web.outlook_anywhere_ssl_offloading = bool(call.params["SSLOffloading"])
            web.outlook_anywhere_auth = call.params.get("ClientAuthenticationMethod") or "Basic"

    def set_anywhere(self, call: CommandCall) -> None:
        identity = call.params["Identity"]
        with self.model.transaction():
            web = self._web()
            if web.outlook_anywhere_host is None or not self._identity_matches(identity, f"Rpc ({DEFAULT_SITE})"):
                raise self._not_found(call, identity)
            if not self._should_process(call):
                return
            if call.has("ExternalHostname"):
                web.outlook_anywhere_host = call.params["ExternalHostname"]

    # --- receive connectors -----------------------------------------------------------------------------------

    def _connector_index(self, identity: str) -> int | None:
        for index, connector in enumerate(self._web().receive_connectors):
            if self._identity_matches(identity, connector.name):
                return index
        return None

    def get_connector(self, call: CommandCall) -> None:
        self._check_server(call)
        with self.model.lock:
            if call.has("Identity"):
                index = self._connector_index(call.params["Identity"])
                if index is None:
                    call.write_error(self._not_found(call, call.params["Identity"]))
                    return
                call.write(self._connector_object(index))
                return
            for index in range(len(self._web().receive_connectors)):
                call.write(self._connector_object(index))

    def set_connector(self, call: CommandCall) -> None:
        identity = call.params["Identity"]
        with self.model.transaction():
            index = self._connector_index(identity)
            if index is None:
                raise self._not_found(call, identity)
            if not self._should_process(call):
                return
            if call.has("Fqdn"):
                self._web().receive_connectors[index].fqdn = call.params["Fqdn"]

    # --- POP / IMAP -------------------------------------------------------------------------------------------

    def get_protocol(self, protocol: str) -> Callable[[CommandCall], None]:
        def handler(call: CommandCall) -> None:
            self._check_server(call)
            with self.model.lock:
                call.write(self._protocol_object(protocol))
        return handler

    def set_protocol(self, protocol: str) -> Callable[[CommandCall], None]:
        def handler(call: CommandCall) -> None:
            self._check_server(call)
            if call.has("Identity") and not self._is_me(call.params["Identity"]):
                raise self._not_found(call, call.params["Identity"])
            if not self._should_process(call):
                return
            with self.model.transaction():
                if call.has("X509CertificateName"):
                    name = call.params["X509CertificateName"] or None
                    if protocol == "pop":
                        self.model.pop_name = name
                    else:
                        self.model.imap_name = name
        return handler

    # --- registration -------------------------------------------------------------------------------------------

    def register(self, registry: Registry) -> None:
        version = self.model.version
        visibility: dict[str, Any] = ({"snapin": EMS_2007_SNAPIN} if version == "2007"
                                      else {"configurations": (EXCHANGE_CONFIGURATION,)})
        dc = Parameter("DomainController", S)
        get_sets = (
            Parameter("Identity", S, position=0, sets=("Identity",)),
            Parameter("Server", S, mandatory=True, sets=("Server",)),
            dc,
        )
        if version == "2010":
            get_sets += (Parameter("ADPropertiesOnly", Kind.SWITCH),)
        by_server = (Parameter("Server", S), dc)
        identity = Parameter("Identity", S, mandatory=True, position=0, from_pipeline_property=True)
        table: list[tuple[str, Callable[[CommandCall], None], tuple[Parameter, ...], str | None]] = []
        for kind in kinds_for(version):
            table.append((f"Get-{kind.noun}", self.get_vdir(kind), with_common(*get_sets, should_process=False), "Identity"))
            table.append((f"Set-{kind.noun}", self.set_vdir(kind),
                          with_common(identity, Parameter("ExternalUrl", U), Parameter("InternalUrl", U), dc), None))
        table += [
            ("Get-ClientAccessServer", self.get_cas, with_common(Parameter("Identity", S, position=0), dc,
                                                          should_process=False), None),
            ("Set-ClientAccessServer", self.set_cas,
             with_common(identity, Parameter("AutoDiscoverServiceInternalUri", U), Parameter("AutoDiscoverSiteScope", SA), dc),
             None),
            ("Get-OutlookAnywhere", self.get_anywhere, with_common(*get_sets, should_process=False), "Identity"),
            ("Enable-OutlookAnywhere", self.enable_anywhere,
             with_common(Parameter("ExternalHostname", S, mandatory=True), Parameter("SSLOffloading", B, mandatory=True),
                  Parameter("ClientAuthenticationMethod", S), Parameter("DefaultAuthenticationMethod", S),
                  Parameter("IISAuthenticationMethods", SA), *by_server), None),
            ("Set-OutlookAnywhere", self.set_anywhere,
             with_common(identity, Parameter("ExternalHostname", S), Parameter("SSLOffloading", B),
                  Parameter("ClientAuthenticationMethod", S), dc), None),
            ("Get-ReceiveConnector", self.get_connector, with_common(*get_sets, should_process=False), "Identity"),
            ("Set-ReceiveConnector", self.set_connector, with_common(identity, Parameter("Fqdn", S), dc), None),
        ]
        for protocol, noun in (("pop", "POPSettings"), ("imap", "IMAPSettings")):
            table.append((f"Get-{noun}", self.get_protocol(protocol), with_common(*by_server, should_process=False), None))
            table.append((f"Set-{noun}", self.set_protocol(protocol),
                          with_common(Parameter("Identity", S), Parameter("X509CertificateName", S), *by_server), None))
        for name, handler, parameters, default_set in table:
            registry.register(CommandSpec(name=name, handler=handler, parameters=parameters,
                                          implementing_type=implementing_type(name), default_set=default_set,
                                          **visibility))
