"""Client-access cmdlets of the lab (issue 17) driven with raw pypsrp: virtual directories with their identities and
fresh-install URLs, the Uri values as a client receives them, URL validation errors, 2007 without ECP, Autodiscover,
Outlook Anywhere, receive connectors, POP/IMAP names, and the state across a lab restart; then the declared reads of
names_in_use and the coexistence decision run against the lab."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from orchestrator.coexistence import decide, undo, vdir_read
from orchestrator.commands import Command, Null, Text
from orchestrator.decision import Noop, Send
from orchestrator.lab.exchange import EMS_2007_SNAPIN, ExchangeServerModel, LabSettings, build_registry
from orchestrator.lab.server import LabServer
from orchestrator.names_in_use import VDIR_BY_KEY, reads, uncovered
from orchestrator.playbook import Coexistence, UncoveredOk
from orchestrator.transport.psrp import to_python

from .conftest import ServerFactory

USER, PASSWORD = "admin", "Lab-Passw0rd!"
NAMES = {"2007": "EX2007A", "2010": "EX2010A"}


def start(model: ExchangeServerModel, settings: LabSettings) -> LabServer:
    configs = ["Microsoft.Exchange", "Microsoft.PowerShell"] if model.version == "2010" else ["Microsoft.PowerShell"]
    srv = LabServer(model.name, build_registry(model, settings), {USER: PASSWORD}, configurations=configs,
                    allow_unencrypted=True)
    srv.start()
    return srv


def ems(srv: LabServer, version: str) -> RunspacePool:
    """The Exchange session of a version: 2010's Microsoft.Exchange endpoint, 2007's snap-in in Windows PowerShell."""
    config = "Microsoft.Exchange" if version == "2010" else "Microsoft.PowerShell"
    wsman = WSMan("127.0.0.1", port=srv.port, path="PowerShell" if version == "2010" else "wsman", auth="basic",
                  username=USER, password=PASSWORD, ssl=False, encryption="never", operation_timeout=5,
                  read_timeout=10)
    pool = RunspacePool(wsman, configuration_name=config)
    pool.open()
    if version == "2007":
        run(pool, ("Add-PSSnapin", {"Name": EMS_2007_SNAPIN}))
    return pool


def call(pool: RunspacePool, *commands: tuple[str, dict[str, Any]]) -> PowerShell:
    ps = PowerShell(pool)
    for name, params in commands:
        ps.add_cmdlet(name)
        for key, value in params.items():
            ps.add_parameter(key, value)
    ps.invoke()
    return ps


def run(pool: RunspacePool, *commands: tuple[str, dict[str, Any]]) -> list[Any]:
    ps = call(pool, *commands)
    assert not ps.had_errors, [str(e) for e in ps.streams.error]
    return list(ps.output)


def props(obj: Any) -> dict[str, Any]:
    return dict(obj.adapted_properties)


@pytest.fixture(params=["2007", "2010"])
def server(request: pytest.FixtureRequest, make_server: ServerFactory, settings: LabSettings
           ) -> Iterator[tuple[str, ExchangeServerModel, LabServer]]:
    version = request.param
    model, _ = make_server(version, name=NAMES[version])
    srv = start(model, settings)
    yield version, model, srv
    errors = srv.errors
    srv.stop()
    assert not errors, errors


VDIRS = [("OwaVirtualDirectory", "owa", "/owa"), ("WebServicesVirtualDirectory", "EWS", "/EWS/Exchange.asmx"),
         ("ActiveSyncVirtualDirectory", "Microsoft-Server-ActiveSync", "/Microsoft-Server-ActiveSync"),
         ("OabVirtualDirectory", "OAB", "/OAB")]


def test_fresh_install_virtual_directories(server: tuple[str, ExchangeServerModel, LabServer]) -> None:
    version, model, srv = server
    name = model.name
    pool = ems(srv, version)
    try:
        for noun, vdir, path in VDIRS:
            listed = run(pool, (f"Get-{noun}", {"Server": name}))
            if noun == "OwaVirtualDirectory" and version == "2007":
                # 2007 (CAS and Mailbox roles) also has the legacy OWA directories for 2003/2000 mailboxes.
                assert [props(o)["Name"] for o in listed] == [f"{n} (Default Web Site)" for n in
                                                              ("Exadmin", "Exchange", "Exchweb", "owa", "Public")]
                listed = [o for o in listed if props(o)["Name"].startswith("owa ")]
            [obj] = listed
            got = props(obj)
            assert got["Identity"] == f"{name}\\{vdir} (Default Web Site)"
            assert got["Name"] == f"{vdir} (Default Web Site)" and got["Server"] == name
            scheme = "http" if vdir == "OAB" else "https"
            # A System.Uri is a CLIXML primitive (<URI>): pypsrp hands it back as text.
            assert got["InternalUrl"] == f"{scheme}://{model.fqdn}{path}"
            assert got["ExternalUrl"] is None
            # -Identity in the form Exchange writes finds the same directory.
            [again] = run(pool, (f"Get-{noun}", {"Identity": got["Identity"]}))
            assert props(again)["Identity"] == got["Identity"]
        [cas] = run(pool, ("Get-ClientAccessServer", {"Identity": name}))
        assert props(cas)["AutoDiscoverServiceInternalUri"] == f"https://{model.fqdn}/Autodiscover/Autodiscover.xml"
        assert run(pool, ("Get-OutlookAnywhere", {"Server": name})) == []  # off until Enable-OutlookAnywhere
        connectors = run(pool, ("Get-ReceiveConnector", {"Server": name}))
        assert [(props(c)["Identity"], props(c)["Fqdn"]) for c in connectors] == [
            (f"{name}\\Default {name}", model.fqdn), (f"{name}\\Client {name}", model.fqdn)]
        for noun in ("POPSettings", "IMAPSettings"):
            [settings_obj] = run(pool, (f"Get-{noun}", {"Server": name}))
            assert props(settings_obj)["X509CertificateName"] == model.fqdn
        ecp = call(pool, ("Get-EcpVirtualDirectory", {"Server": name}))
        if version == "2007":
            assert ecp.had_errors
            assert "The term 'Get-EcpVirtualDirectory' is not recognized" in str(ecp.streams.error[0])
        else:
            assert not ecp.had_errors
            assert props(ecp.output[0])["InternalUrl"] == f"https://{model.fqdn}/ecp"
        # -Server naming another server: not found, nothing returned.
        other = call(pool, ("Get-OwaVirtualDirectory", {"Server": "EX9999"}))
        assert other.had_errors and "couldn't be found" in str(other.streams.error[0])
    finally:
        pool.close()


def test_set_urls_validation_and_restart(server: tuple[str, ExchangeServerModel, LabServer], settings: LabSettings
                                         ) -> None:
    version, model, srv = server
    name = model.name
    owa = f"{name}\\owa (Default Web Site)"
    pool = ems(srv, version)
    try:
        run(pool, ("Set-OwaVirtualDirectory", {"Identity": owa, "ExternalUrl": "https://legacy.mitserv.net/owa"}))
        # Piped, as admins write it: Get-... | Set-... binds -Identity from the object.
        run(pool, ("Get-WebServicesVirtualDirectory", {"Server": name}),
            ("Set-WebServicesVirtualDirectory", {"ExternalUrl": "https://legacy.mitserv.net/EWS/Exchange.asmx"}))
        run(pool, ("Set-ActiveSyncVirtualDirectory", {
            "Identity": f"{name}\\Microsoft-Server-ActiveSync (Default Web Site)",
            "ExternalUrl": "https://legacy.mitserv.net/Microsoft-Server-ActiveSync"}))
        run(pool, ("Set-ActiveSyncVirtualDirectory", {
            "Identity": f"{name}\\Microsoft-Server-ActiveSync (Default Web Site)", "ExternalUrl": None}))
        run(pool, ("Set-ClientAccessServer", {
            "Identity": name, "AutoDiscoverServiceInternalUri": "https://autodiscover.mitserv.net/Autodiscover/"
                                                                "Autodiscover.xml"}))
        run(pool, ("Enable-OutlookAnywhere", {"Server": name, "ExternalHostname": "mail.mitserv.net",
                                              "SSLOffloading": False}))
        run(pool, ("Set-POPSettings", {"Server": name, "X509CertificateName": "mail.mitserv.net"}))
        run(pool, ("Set-ReceiveConnector", {"Identity": f"{name}\\Default {name}", "Fqdn": "mail.mitserv.net"}))

        bad = [("owa", "isn't valid. The URL must be an absolute URL"),
               ("ftp://legacy.mitserv.net/owa", "The URL scheme \"ftp\" isn't supported"),
               ("https://", "Cannot convert value \"https://\" to type \"System.Uri\". Error: \"Invalid URI: "
                            "The hostname could not be parsed.\"")]
        for value, text in bad:
            ps = call(pool, ("Set-OwaVirtualDirectory", {"Identity": owa, "ExternalUrl": value,
                                                         "InternalUrl": "https://legacy.mitserv.net/owa"}))
            assert ps.had_errors and text in str(ps.streams.error[0]), [str(e) for e in ps.streams.error]
        missing = call(pool, ("Set-OwaVirtualDirectory", {"Identity": f"{name}\\nothere (Default Web Site)",
                                                          "ExternalUrl": "https://legacy.mitserv.net/owa"}))
        assert missing.had_errors and "couldn't be found" in str(missing.streams.error[0])
        whatif = call(pool, ("Set-OabVirtualDirectory", {"Identity": f"{name}\\OAB (Default Web Site)",
                                                         "ExternalUrl": "https://legacy.mitserv.net/OAB",
                                                         "WhatIf": True}))
        assert not whatif.had_errors
    finally:
        pool.close()
    srv.stop()

    # The lab restarted from its state directory: every change is still there, the rejected ones never happened.
    again = ExchangeServerModel.load_or_create(model.state_dir, name=name, version=version, fqdn=model.fqdn)
    srv2 = start(again, settings)
    pool = ems(srv2, version)
    try:
        [o] = run(pool, ("Get-OwaVirtualDirectory", {"Identity": owa}))
        assert (props(o)["ExternalUrl"], props(o)["InternalUrl"]) == ("https://legacy.mitserv.net/owa",
                                                                       f"https://{model.fqdn}/owa")
        [e] = run(pool, ("Get-WebServicesVirtualDirectory", {"Server": name}))
        assert props(e)["ExternalUrl"] == "https://legacy.mitserv.net/EWS/Exchange.asmx"
        [a] = run(pool, ("Get-ActiveSyncVirtualDirectory", {"Server": name}))
        assert props(a)["ExternalUrl"] is None
        [oab] = run(pool, ("Get-OabVirtualDirectory", {"Server": name}))
        assert props(oab)["ExternalUrl"] is None  # -WhatIf changed nothing
        [cas] = run(pool, ("Get-ClientAccessServer", {}))
        assert props(cas)["AutoDiscoverServiceInternalUri"] == \
            "https://autodiscover.mitserv.net/Autodiscover/Autodiscover.xml"
        [oa] = run(pool, ("Get-OutlookAnywhere", {"Server": name}))
        assert props(oa)["ExternalHostname"] == "mail.mitserv.net"
        assert props(oa)["Identity"] == f"{name}\\Rpc (Default Web Site)"
        [pop] = run(pool, ("Get-POPSettings", {"Server": name}))
        assert props(pop)["X509CertificateName"] == "mail.mitserv.net"
        [imap] = run(pool, ("Get-IMAPSettings", {"Server": name}))
        assert props(imap)["X509CertificateName"] == model.fqdn
        connectors = run(pool, ("Get-ReceiveConnector", {"Server": name}))
        assert [props(c)["Fqdn"] for c in connectors] == ["mail.mitserv.net", model.fqdn]
        twice = call(pool, ("Enable-OutlookAnywhere", {"Server": name, "ExternalHostname": "x.mitserv.net",
                                                       "SSLOffloading": False}))
        assert twice.had_errors and "already enabled" in str(twice.streams.error[0])
    finally:
        pool.close()
        errors = srv2.errors
        srv2.stop()
        assert not errors, errors


def test_external_host_given_to_setup(make_server: ServerFactory, settings: LabSettings) -> None:
    """A lab whose setup was given the external domain: every ExternalUrl starts as https://<host>/<path>."""
    model, _ = make_server("2010", name="EX2010B")
    settings.external_host_at_setup = "mail.mitserv.net"
    srv = start(model, settings)
    pool = ems(srv, "2010")
    try:
        [o] = run(pool, ("Get-OwaVirtualDirectory", {"Server": model.name}))
        assert props(o)["ExternalUrl"] == "https://mail.mitserv.net/owa"
    finally:
        pool.close()
        srv.stop()


# --- the pure facts and decisions against the lab ------------------------------------------------------------------


def send(pool: RunspacePool, command: Command) -> list[Any]:
    """A Command as the PSRP transport sends it: the cmdlet and its typed parameters ($null as None, <Nil/>); the
    output converted by the transport's own `to_python`, as the parsers receive it."""
    params: dict[str, Any] = {}
    for param in command.params:
        assert param.name is not None and isinstance(param.value, (Text, Null))
        params[param.name] = param.value.value if isinstance(param.value, Text) else None
    return [to_python(o) for o in run(pool, (command.name, params))]


def test_names_in_use_read_from_the_lab(server: tuple[str, ExchangeServerModel, LabServer]) -> None:
    version, model, srv = server
    pool = ems(srv, version)
    try:
        run(pool, ("Set-OwaVirtualDirectory", {"Identity": f"{model.name}\\owa (Default Web Site)",
                                               "ExternalUrl": "https://webmail.mitserv.net/owa"}))
        rows = [row for read in reads(model.name, int(version)) for row in read.parse(send(pool, read.command))]
    finally:
        pool.close()
    settings_read = {(r.setting, r.host) for r in rows}
    assert ("OWA ExternalUrl", "webmail.mitserv.net") in settings_read
    assert ("Autodiscover AutoDiscoverServiceInternalUri", model.fqdn) in settings_read
    assert (f"receive connector 'Default {model.name}' Fqdn", model.fqdn) in settings_read
    assert ("ECP InternalUrl", model.fqdn) in settings_read if version == "2010" else \
        not any(r.setting.startswith("ECP") for r in rows)
    [oab] = [r for r in rows if r.setting == "OAB InternalUrl"]
    assert oab.tls is False  # http: no certificate involved
    accepted = [UncoveredOk(name=model.fqdn, reason="internal names")]
    assert uncovered(rows, ["mail.mitserv.net", "autodiscover.mitserv.net", "legacy.mitserv.net"],
                     ["IIS", "SMTP", "POP", "IMAP"], accepted) == [
        f"{model.name}: OWA ExternalUrl uses webmail.mitserv.net (https://webmail.mitserv.net/owa), which "
        "certificate.domains does not cover; add it to certificate.domains, or list it under "
        "certificate.uncovered_ok with a reason"]


@pytest.mark.parametrize("activesync", ["legacy_url", "proxy"])
def test_coexistence_decision_applied_to_the_lab(make_server: ServerFactory, settings: LabSettings,
                                                 activesync: str) -> None:
    """Read, decide, send on a lab 2007 server whose setup was given mail. as external host: afterwards its
    directories carry the legacy URLs (ActiveSync as the mode says), and a second decision is a no-op."""
    model, _ = make_server("2007", name="EX2007A")
    settings.external_host_at_setup = "mail.mitserv.net"
    srv = start(model, settings)
    spec = Coexistence(legacy_host="legacy.mitserv.net", activesync=activesync)  # type: ignore[arg-type]
    pool = ems(srv, "2007")
    try:
        def facts() -> dict[str, Any]:
            return {s: (r := vdir_read(model.name, s)).parse(send(pool, r.command)) for s in spec.service_names}

        plan = decide(model.name, 2007, False, facts(), spec)
        assert isinstance(plan.decision, Send) and len(plan.changes) == 4
        assert {c.before for c in plan.changes} == {f"https://mail.mitserv.net{VDIR_BY_KEY[c.service].path}"
                                                    for c in plan.changes}
        for pipeline in plan.decision.pipelines:
            for command in pipeline:
                send(pool, command)
        again = decide(model.name, 2007, False, facts(), spec)
        assert isinstance(again.decision, Noop) and again.changes == ()
        [sync] = run(pool, ("Get-ActiveSyncVirtualDirectory", {"Server": model.name}))
        expected = None if activesync == "proxy" else "https://legacy.mitserv.net/Microsoft-Server-ActiveSync"
        assert props(sync)["ExternalUrl"] == expected
        owa_id = f"{model.name}\\owa (Default Web Site)"
        [owa] = run(pool, ("Get-OwaVirtualDirectory", {"Identity": owa_id}))
        assert props(owa)["ExternalUrl"] == "https://legacy.mitserv.net/owa"
        [legacy] = run(pool, ("Get-OwaVirtualDirectory", {"Identity": f"{model.name}\\Exchange (Default Web Site)"}))
        assert props(legacy)["ExternalUrl"] is None  # the legacy /Exchange directory is not the step's
        # The recorded values restore the server as it was.
        restore = undo(plan.changes)
        assert isinstance(restore, Send)
        for command in restore.commands:
            send(pool, command)
        [owa] = run(pool, ("Get-OwaVirtualDirectory", {"Identity": owa_id}))
        assert props(owa)["ExternalUrl"] == "https://mail.mitserv.net/owa"
    finally:
        pool.close()
        errors = srv.errors
        srv.stop()
        assert not errors, errors
