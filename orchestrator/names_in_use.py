"""The host names a server has in use, read before the request, and whether the new certificate covers them (issue 17).

Pure: `reads()` declares, per server and version, the read-only commands whose output names a host (the virtual
directories' InternalUrl/ExternalUrl, Autodiscover's internal URI, Outlook Anywhere's external host name, the
receive connectors' FQDN, POP/IMAP's X509CertificateName); their parsers turn the objects the client received into
rows; `uncovered()` says which rows the certificate would serve but `certificate.domains` does not cover, one line
each with the fix; `render_table()` is the table plan/--check/verify print.

Why these: a client that reaches one of these names gets the certificate the service presents, and a name missing
from it shows up only as users' certificate warnings after DNS moves. IIS serves the web URLs, the SMTP receive
connectors answer STARTTLS with the certificate matching their FQDN, POP/IMAP present the one matching
X509CertificateName (Exchange 2010 TLS certificate selection; reference §1.4). An http:// URL (the OAB's default
InternalUrl) involves no certificate.

Cmdlets per version: both have every Get- cmdlet used here except Get-EcpVirtualDirectory (2010 only; 2007 has no
ECP). The Get-*VirtualDirectory cmdlets take -Server on 2007 as on 2010 (Get-OwaVirtualDirectory, aa998588
(v=exchg.80): "-Server <ServerIdParameter>"); without it 2007's would list every Client Access server of the
organization, so -Server is always given; the parsers also keep only the server's own objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from orchestrator.commands import Command, Param, text
from orchestrator.decision import Read
from orchestrator.hostnames import name_covers
from orchestrator.playbook import Playbook, UncoveredOk


@dataclass(frozen=True)
class NameInUse:
    """One configured value that names a host."""

    server: str
    setting: str  # e.g. "OWA ExternalUrl", "receive connector 'Default EX2007' Fqdn"
    value: str  # as configured: a URL or a host name
    host: str  # the host name in it, lower-case
    service: str  # the certificate service that presents a certificate for it: IIS, SMTP, POP or IMAP
    tls: bool = True  # False: an http:// URL, served without any certificate


@dataclass(frozen=True)
class VdirKind:
    key: str  # the playbook's service name
    label: str  # how the admin names it
    noun: str  # Get-<noun> / Set-<noun>
    name: str  # the IIS virtual directory: Name is "<name> (Default Web Site)"
    path: str  # the URL path of a default virtual directory
    versions: tuple[int, ...] = (2007, 2010)

    def is_default(self, obj: Any) -> bool:
        """Whether a Get- object is this kind's own directory, not another one the same cmdlet lists (2007's
        Get-OwaVirtualDirectory also lists the legacy /Exchange, /Public, /Exchweb, /Exadmin, technet bb885041)."""
        name = value_text(prop(obj, "Name")) or (value_text(prop(obj, "Identity")) or "").rpartition("\\")[2]
        return name.lower().split(" (", 1)[0] == self.name.lower()


VDIRS: tuple[VdirKind, ...] = (
    VdirKind("owa", "OWA", "OwaVirtualDirectory", "owa", "/owa"),
    VdirKind("ews", "EWS", "WebServicesVirtualDirectory", "EWS", "/EWS/Exchange.asmx"),
    VdirKind("activesync", "ActiveSync", "ActiveSyncVirtualDirectory", "Microsoft-Server-ActiveSync",
             "/Microsoft-Server-ActiveSync"),
    VdirKind("oab", "OAB", "OabVirtualDirectory", "OAB", "/OAB"),
    VdirKind("ecp", "ECP", "EcpVirtualDirectory", "ecp", "/ecp", (2010,)),
)
VDIR_BY_KEY = {k.key: k for k in VDIRS}

Rows = list[NameInUse]


# --- reading the output as the client received it --------------------------------------------------------------------

def prop(obj: Any, name: str) -> Any:
    """A property of a received object (transport RemoteObject, case-insensitive); None when absent."""
    getter = getattr(obj, "get", None)
    return getter(name) if callable(getter) else None


def value_text(value: Any) -> str | None:
    """A Uri arrives as text (CLIXML <URI>); Exchange's Hostname/Fqdn types as text or as an object whose ToString is
    the name. Empty means not set."""
    if value is None:
        return None
    shown = getattr(value, "text", None) if not isinstance(value, str) else value
    result = str(shown if shown is not None else value).strip()
    return result or None


def host_of(value: str) -> tuple[str, bool] | None:
    """(host, uses TLS) of a URL, or of a bare host name (TLS); None when no host can be read."""
    if "://" in value:
        parts = urlsplit(value)
        if not parts.hostname:
            return None
        return parts.hostname.lower().rstrip("."), parts.scheme.lower() != "http"
    return value.strip().lower().rstrip("."), True


def _own(obj: Any, server: str) -> bool:
    """Whether an object belongs to `server` (its Server property, or its Identity's "SERVER\\..." part)."""
    owner = value_text(prop(obj, "Server")) or value_text(prop(obj, "ServerName"))
    if owner is None:
        identity = value_text(prop(obj, "Identity")) or ""
        owner = identity.partition("\\")[0] if "\\" in identity else None
    if owner is None:
        return True
    short = server.split(".", 1)[0].lower()
    return owner.split(".", 1)[0].lower() == short


def _row(server: str, setting: str, value: Any, service: str) -> NameInUse | None:
    shown = value_text(value)
    if shown is None:
        return None
    found = host_of(shown)
    if found is None:
        return None
    host, tls = found
    return NameInUse(server, setting, shown, host, service, tls)


def _rows(server: str, output: Iterable[Any], make: Callable[[Any], Iterable[NameInUse | None]]) -> Rows:
    rows: Rows = []
    for obj in output:
        if obj is None or not _own(obj, server):
            continue
        rows.extend(r for r in make(obj) if r is not None)
    return rows


def parse_vdirs(server: str, kind: VdirKind) -> Callable[[list[Any]], Rows]:
    def label(obj: Any) -> str:
        return kind.label if kind.is_default(obj) else f"{kind.label} '{value_text(prop(obj, 'Name')) or '?'}'"

    def parse(output: list[Any]) -> Rows:
        return _rows(server, output, lambda o: [
            _row(server, f"{label(o)} {name}", prop(o, name), "IIS") for name in ("InternalUrl", "ExternalUrl")])
    return parse


def parse_client_access(server: str) -> Callable[[list[Any]], Rows]:
    def parse(output: list[Any]) -> Rows:
        return _rows(server, output, lambda o: [
            _row(server, "Autodiscover AutoDiscoverServiceInternalUri", prop(o, "AutoDiscoverServiceInternalUri"),
                 "IIS")])
    return parse


def parse_outlook_anywhere(server: str) -> Callable[[list[Any]], Rows]:
    def parse(output: list[Any]) -> Rows:
        return _rows(server, output, lambda o: [
            _row(server, "Outlook Anywhere ExternalHostname", prop(o, "ExternalHostname"), "IIS")])
    return parse


def parse_receive_connectors(server: str) -> Callable[[list[Any]], Rows]:
    def parse(output: list[Any]) -> Rows:
        return _rows(server, output, lambda o: [
            _row(server, f"receive connector '{value_text(prop(o, 'Name')) or '?'}' Fqdn", prop(o, "Fqdn"), "SMTP")])
    return parse


def parse_protocol(server: str, service: str) -> Callable[[list[Any]], Rows]:
    def parse(output: list[Any]) -> Rows:
        return _rows(server, output, lambda o: [
            _row(server, f"{service} X509CertificateName", prop(o, "X509CertificateName"), service)])
    return parse


def _get(name: str, *params: Param) -> Command:
    return Command(name, tuple(params), changes=False, affects=frozenset())


def reads(server: str, version: int) -> tuple[Read[Rows], ...]:
    """The reads of the names in use on `server` (its name as Exchange knows it, e.g. EX2007) of `version`."""
    declared: list[Read[Rows]] = []
    for kind in VDIRS:
        if version in kind.versions:
            declared.append(Read(f"names.{kind.key}", _get(f"Get-{kind.noun}", text("Server", server)),
                                 parse_vdirs(server, kind)))
    declared += [
        Read("names.autodiscover", _get("Get-ClientAccessServer", text("Identity", server)),
             parse_client_access(server)),
        Read("names.outlook_anywhere", _get("Get-OutlookAnywhere", text("Server", server)),
             parse_outlook_anywhere(server)),
        Read("names.receive_connectors", _get("Get-ReceiveConnector", text("Server", server)),
             parse_receive_connectors(server)),
        Read("names.pop", _get("Get-POPSettings", text("Server", server)), parse_protocol(server, "POP")),
        Read("names.imap", _get("Get-IMAPSettings", text("Server", server)), parse_protocol(server, "IMAP")),
    ]
    return tuple(declared)


# --- coverage ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Coverage:
    row: NameInUse
    status: str  # covered, accepted, uncovered, no_tls, not_served
    detail: str  # the certificate name that covers it, the reason it is accepted, or the service not enabled


def coverage(rows: Sequence[NameInUse], domains: Sequence[str], services: Iterable[str],
             accepted: Sequence[UncoveredOk] = ()) -> list[Coverage]:
    """Each row judged against the certificate's names: `services` are those the certificate is enabled for on the
    row's server (a name in use by a service the certificate does not serve is not its concern)."""
    enabled = {s.upper() for s in services}
    judged: list[Coverage] = []
    for row in rows:
        if not row.tls:
            judged.append(Coverage(row, "no_tls", "http, no certificate"))
            continue
        if row.service.upper() not in enabled:
            judged.append(Coverage(row, "not_served", row.service))
            continue
        by = next((d for d in domains if name_covers(d, row.host)), None)
        if by is not None:
            judged.append(Coverage(row, "covered", by))
            continue
        ok = next((a for a in accepted if name_covers(a.name, row.host)), None)
        if ok is not None:
            judged.append(Coverage(row, "accepted", ok.reason))
            continue
        judged.append(Coverage(row, "uncovered", ""))
    return judged


FIX = "add it to certificate.domains, or list it under certificate.uncovered_ok with a reason"


def uncovered(rows: Sequence[NameInUse], domains: Sequence[str], services: Iterable[str],
              accepted: Sequence[UncoveredOk] = ()) -> list[str]:
    """One problem line per name in use that the certificate would serve but does not cover (empty: all covered)."""
    return [problem_line(c.row) for c in coverage(rows, domains, services, accepted) if c.status == "uncovered"]


def problem_line(row: NameInUse) -> str:
    return f"{row.server}: {row.setting} uses {row.host} ({row.value}), which certificate.domains does not cover; {FIX}"


def playbook_coverage(playbook: Playbook, rows_by_server: Mapping[str, Sequence[NameInUse]]) -> list[Coverage]:
    """Every server's rows judged with the services the certificate is enabled for there (a server's `services`
    overrides certificate.services), in the playbook's server order."""
    cert = playbook.certificate
    judged: list[Coverage] = []
    for server in playbook.servers:
        rows = rows_by_server.get(server.name, ())
        judged += coverage(rows, cert.domains, [s.value for s in server.services_for(cert)], cert.uncovered_ok)
    return judged


def playbook_problems(playbook: Playbook, rows_by_server: Mapping[str, Sequence[NameInUse]]) -> list[str]:
    """The lines that stop the run before the request (empty: the certificate covers every name it would serve)."""
    return [problem_line(c.row) for c in playbook_coverage(playbook, rows_by_server) if c.status == "uncovered"]


def grouped_problems(playbook: Playbook, rows_by_server: Mapping[str, Sequence[NameInUse]]) -> list[str]:
    """One line per server and uncovered name, with every setting that uses it (a fresh install's FQDN is in a
    dozen settings: one line says it)."""
    found: dict[tuple[str, str], list[NameInUse]] = {}
    for judged in playbook_coverage(playbook, rows_by_server):
        if judged.status == "uncovered":
            found.setdefault((judged.row.server, judged.row.host), []).append(judged.row)
    lines = []
    for (server, host), rows in found.items():
        settings = ", ".join(r.setting for r in rows)
        example = rows[0].value if rows[0].value != host else ""
        lines.append(f"{server}: {host} is used by {settings}" + (f" ({example})" if example else "")
                     + f", which certificate.domains does not cover; {FIX}")
    return lines


_SHOWN = {"covered": "covered by {detail}", "accepted": "not covered, accepted: {detail}", "uncovered": "NOT COVERED",
          "no_tls": "{detail}", "not_served": "not served by this certificate ({detail} not enabled)"}


def render_table(judged: Sequence[Coverage]) -> str:
    """The names in use and what the certificate does for each, as aligned text."""
    header = ("SERVER", "SETTING", "NAME", "CERTIFICATE")
    lines = [(c.row.server, c.row.setting, c.row.host, _SHOWN[c.status].format(detail=c.detail)) for c in judged]
    if not lines:
        return "No host names in use were read.\n"
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(3)]
    out = []
    for r in [header, *lines]:
        out.append("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    return "\n".join(line.rstrip() for line in out) + "\n"
