"""The coexistence step's decisions (issue 17): the Exchange 2007 URLs move to the legacy host, and what verify checks
once they have. Pure: facts in (what Get-*VirtualDirectory answered), a `Decision` and the values recorded before
the change out; the step machinery sends, journals and resumes it.

Microsoft's guidance for 2007 -> 2010 coexistence: move mail./autodiscover. to Exchange 2010 and associate a legacy
host name (legacy.contoso.com) with the 2007 Client Access servers ("Upgrade from Exchange 2007 Client Access",
dd351133(v=exchg.140); Exchange Team Blog "Transitioning Client Access to Exchange Server 2010", 2009-11-20). The
2007 virtual directories' ExternalUrl is what 2010 uses to redirect a 2007 mailbox's client there:
* OWA: redirect to the 2007 ExternalUrl (https://legacy.../owa), per the same sources and reference §7 [S22].
* ActiveSync: Exchange Team Blog "Upgrading Exchange ActiveSync to Exchange 2010" (2009-12-08): a device that
  supports Autodiscover (EAS 12.1+) is told (HTTP 451) to use the 2007 ExternalUrl's name, older devices are proxied
  by 2010; with the 2007 ExternalUrl empty, 2010 proxies every device ($null "to force proxying", third-party
  guidance, reference §7 [S25] and a TechNet Wiki 2013+2007 article). Both are offered: `activesync: legacy_url`
  (default, Microsoft's) or `activesync: proxy` (ExternalUrl $null). Which one suits iOS devices that mishandle 451
  is the admin's call (port25guy.com 2010-09-28).
* EWS and OAB: set to the legacy host like OWA (admins' scripts, reference §7 [S25]); UNCONFIRMED against a
  Microsoft per-directory list for 2010 (the Team Blog's list was not readable), hence each is opt-in through
  `coexistence.services`.
The 2007 URLs are set from the 2007 management shell (its snap-in), never through 2010 remote PowerShell: 2010's
Set-OwaVirtualDirectory says of these URLs "You can only configure this option on Exchange 2010 virtual directories"
(reference §7 [S1]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from orchestrator.commands import Command, Null, Param, Text, text
from orchestrator.decision import Decision, Noop, Read, Send
from orchestrator.errors import ExmigError
from orchestrator.hostnames import any_covers
from orchestrator.names_in_use import VDIR_BY_KEY, VdirKind, prop, value_text
from orchestrator.playbook import Coexistence

AFFECTS = frozenset({"virtual_directories"})


@dataclass(frozen=True)
class VdirFact:
    service: str  # owa, ews, oab, activesync
    identity: str  # as the server wrote it: "EX2007\\owa (Default Web Site)"
    internal_url: str | None
    external_url: str | None


@dataclass(frozen=True)
class UrlChange:
    """One property the step changes, with its value before (what a rollback restores) and after."""

    server: str
    service: str
    cmdlet: str  # Set-OwaVirtualDirectory
    identity: str
    property: str  # ExternalUrl
    before: str | None
    after: str | None


@dataclass(frozen=True)
class CoexistencePlan:
    decision: Decision
    changes: tuple[UrlChange, ...]  # empty for a Noop; journaled before the Send so a rollback has the old values


def vdir_read(server: str, service: str) -> Read[VdirFact | None]:
    """The read of one virtual directory's URLs (both versions take -Server; names_in_use's note)."""
    kind = VDIR_BY_KEY[service]

    def parse(output: list[Any]) -> VdirFact | None:
        for obj in output:
            identity = value_text(prop(obj, "Identity"))
            if identity is None or not kind.is_default(obj):
                continue
            return VdirFact(service, identity, value_text(prop(obj, "InternalUrl")),
                            value_text(prop(obj, "ExternalUrl")))
        return None

    command = Command(f"Get-{kind.noun}", (text("Server", server),), changes=False, affects=frozenset())
    return Read(f"coexistence.{service}", command, parse)


def legacy_url(kind: VdirKind, legacy_host: str) -> str:
    return f"https://{legacy_host}{kind.path}"


def _same_url(a: str | None, b: str | None) -> bool:
    """Equal as Exchange and IIS treat them: scheme and host case-insensitive, IIS paths case-insensitive, a trailing
    slash immaterial."""
    if a is None or b is None:
        return a is None and b is None
    pa, pb = urlsplit(a.strip()), urlsplit(b.strip())
    return ((pa.scheme.lower(), (pa.hostname or "").rstrip("."), pa.port, pa.path.rstrip("/").lower(), pa.query)
            == (pb.scheme.lower(), (pb.hostname or "").rstrip("."), pb.port, pb.path.rstrip("/").lower(), pb.query))


def wanted(service: str, spec: Coexistence) -> str | None:
    """The ExternalUrl the spec wants for a 2007 virtual directory (None: cleared)."""
    if service == "activesync" and spec.activesync == "proxy":
        return None
    return legacy_url(VDIR_BY_KEY[service], spec.legacy_host)


def decide(server: str, version: int, is_source: bool, facts: Mapping[str, VdirFact | None],
           spec: Coexistence) -> CoexistencePlan:
    """What the coexistence step does on one server: set the listed 2007 virtual directories' ExternalUrl to the
    legacy host where it differs. `facts` are the reads of `vdir_read` for the spec's services."""
    if is_source and not spec.on_source:
        return CoexistencePlan(Noop("the source server: coexistence.on_source is false"), ())
    if version != 2007:
        return CoexistencePlan(Noop(f"Exchange {version} serves the primary names; only 2007 moves to "
                                    f"{spec.legacy_host}"), ())
    changes: list[UrlChange] = []
    pipelines: list[tuple[Command, ...]] = []
    for service in spec.service_names:
        kind = VDIR_BY_KEY[service]
        fact = facts.get(service)
        if fact is None:
            raise ExmigError(f"{server}: Get-{kind.noun} -Server {server} found no {kind.label} virtual directory; "
                             f"create it, or remove {service} from coexistence.services")
        target = wanted(service, spec)
        if _same_url(fact.external_url, target):
            continue
        cmdlet = f"Set-{kind.noun}"
        changes.append(UrlChange(server, service, cmdlet, fact.identity, "ExternalUrl", fact.external_url, target))
        value: Text | Null = Text(target) if target is not None else Null()
        pipelines.append((Command(cmdlet, (text("Identity", fact.identity), Param("ExternalUrl", value)),
                                  affects=AFFECTS),))
    if not changes:
        return CoexistencePlan(Noop(f"the {', '.join(VDIR_BY_KEY[s].label for s in spec.service_names)} ExternalUrls "
                                    f"already point to {spec.legacy_host}"), ())
    shown = ", ".join(f"{VDIR_BY_KEY[c.service].label} {c.after or '$null'}" for c in changes)
    return CoexistencePlan(Send(tuple(pipelines), f"set the legacy ExternalUrls: {shown}"), tuple(changes))


def undo(changes: Sequence[UrlChange]) -> Decision:
    """The rollback of recorded changes: each property back to its value before, last change first."""
    if not changes:
        return Noop("the coexistence step changed nothing")
    pipelines = []
    for change in reversed(changes):
        value: Text | Null = Text(change.before) if change.before is not None else Null()
        pipelines.append((Command(change.cmdlet, (text("Identity", change.identity), Param(change.property, value)),
                                  affects=AFFECTS),))
    return Send(tuple(pipelines), f"restored {len(changes)} URL(s) on {changes[0].server}")


# --- verify --------------------------------------------------------------------------------------------------------

def urls_presented(rows: Sequence[Any], presented: Sequence[str]) -> list[str]:
    """verify: every https URL (and TLS host name) configured on a server is covered by the names of the certificate
    that server presents. `rows` are names_in_use.NameInUse of one server; one problem line per name not covered."""
    problems = []
    for row in rows:
        if row.tls and row.service == "IIS" and not any_covers(presented, row.host):
            problems.append(f"{row.server}: {row.setting} {row.value} is not covered by the certificate the server "
                            f"presents ({', '.join(presented) or 'no names'}); clients of {row.host} get a name "
                            "mismatch")
    return problems


@dataclass(frozen=True)
class DnsRecord:
    name: str
    points_to: str  # the server's name (and FQDN) the record must resolve to
    why: str


def dns_table(primary_names: Sequence[str], source: tuple[str, str], legacy_host: str | None,
              legacy_servers: Sequence[tuple[str, str]]) -> list[DnsRecord]:
    """Which DNS names must point where once the certificate and URLs are in place: the primary names (mail.,
    autodiscover.) to Exchange 2010, the legacy host to the 2007 server(s). `source`/`legacy_servers` are
    (name, FQDN). The last change the admin makes by hand (dd351133: DNS moves after the legacy names exist)."""
    target = f"{source[0]} ({source[1]})"
    records = [DnsRecord(name, target, "Exchange 2010 answers the primary names") for name in primary_names
               if name != legacy_host and not name.startswith("*.")]
    if legacy_host is not None and legacy_servers:
        shown = " or ".join(f"{n} ({f})" for n, f in legacy_servers)
        if len(legacy_servers) > 1:
            shown += " (one of them, or a load balancer in front of them)"
        records.append(DnsRecord(legacy_host, shown, "Exchange 2007 answers its own mailboxes' clients there"))
    return records


def render_dns(records: Sequence[DnsRecord]) -> str:
    if not records:
        return ""
    width = max(len(r.name) for r in records)
    lines = ["DNS (change by hand, last):"]
    lines += [f"  {r.name.ljust(width)}  -> {r.points_to}   ({r.why})" for r in records]
    return "\n".join(lines) + "\n"
