"""`exmig verify` end to end: the management view of every server, then every TLS service by name.

Over each server's management session: the certificate with the expected thumbprint exists, has
its private key, Status Valid, is enabled for the playbook's services ("not reported" when the
server omits Services, never a guess) and the intermediates are in LocalMachine\\CA. Then, over
the network, one TLS handshake per service and client name (see `tls_probe`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

from orchestrator import checks, status
from orchestrator.certs import IssuedCertificate, thumbprint
from orchestrator.commands import Command, Param, Shell, Text
from orchestrator.dialects import dialect_for
from orchestrator.hostnames import name_covers
from orchestrator.playbook import Playbook, Server, Service
from orchestrator.transport.base import InvocationResult, ServerSession
from orchestrator.verify.checks import TlsCheck, run_tls_checks
from orchestrator.verify.report import Finding, Verdict

# Which Exchange service answers on which TLS protocol.
TLS_SERVICE_OF: dict[Service, str] = {
    Service.IIS: "https", Service.SMTP: "smtp", Service.IMAP: "imaps", Service.POP: "pop3s",
}


class _NoValues:
    """Verify sends only reads: no bytes, no secrets."""

    def blob(self, key: str) -> bytes:
        raise KeyError(key)

    def secret(self, key: str) -> str:
        raise KeyError(key)


def management_findings(server: Server, session: ServerSession, playbook: Playbook,
                        issued: IssuedCertificate) -> list[Finding]:
    expected = issued.thumbprint
    values = _NoValues()

    def call(command: Command) -> InvocationResult:
        return session.invoke(command, values)

    findings: list[Finding] = []
    certs = checks.certificates(call(dialect_for(server).list_certificates(server)).output)
    found = checks.find(certs, expected)
    if found is None:
        return [Finding(server.name, "certificate", None, Verdict.WRONG_CERTIFICATE,
                        f"certificate {expected} is not on the server")]
    problems = status.certificate_problems(found.has_private_key, found.status)
    caution = status.warning(found.status)
    if problems:
        findings.append(Finding(server.name, "certificate", None, Verdict.WRONG_CERTIFICATE,
                                f"certificate {expected}: " + "; ".join(problems), expected))
    elif caution:
        findings.append(Finding(server.name, "certificate", None, Verdict.REVOCATION_UNCHECKED,
                                f"certificate {expected}: private key, {caution}", expected))
    else:
        findings.append(Finding(server.name, "certificate", None, Verdict.OK,
                                f"certificate {expected}: private key, status {found.status or 'not reported'}",
                                expected))
    for service in server.services_for(playbook.certificate):
        if found.services is None:
            findings.append(Finding(server.name, service.value, None, Verdict.NOT_REPORTED,
                                    "the server does not report Services remotely; see the TLS checks", expected))
        elif service.value in found.services:
            findings.append(Finding(server.name, service.value, None, Verdict.OK, "enabled", expected))
        else:
            findings.append(Finding(server.name, service.value, None, Verdict.WRONG_CERTIFICATE,
                                    f"certificate {expected} is not enabled for {service.value}", expected))
    findings += url_findings(server, call, playbook, issued)
    wanted = [thumbprint(c) for c in issued.intermediates]
    if wanted:
        store = checks.store_thumbprints(call(Command(
            "Get-ChildItem", (Param("Path", Text("Cert:\\LocalMachine\\CA")),), shell=Shell.SYSTEM,
            changes=False)).output)
        decision = checks.ca_store_has(store, wanted)
        findings.append(Finding(server.name, "CA store", None,
                                Verdict.OK if decision.done else Verdict.MISSING_INTERMEDIATE, decision.reason))
    return findings


def url_findings(server: Server, call: Callable[[Command], InvocationResult], playbook: Playbook,
                 issued: IssuedCertificate) -> list[Finding]:
    """Every https URL configured on the server is covered by the certificate it should present (issue 17): a URL
    that is not is a name mismatch for its clients. One finding per host name in use."""
    from orchestrator.coexistence import urls_presented
    from orchestrator.names_in_use import reads

    rows = []
    for declared in reads(server.name, server.version):
        rows += declared.parse(call(declared.command).output)
    san = issued.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = san.get_values_for_type(x509.DNSName)
    accepted = playbook.certificate.uncovered_ok
    # A name the playbook accepts as uncovered (certificate.uncovered_ok, with its reason) is no finding.
    rows = [r for r in rows if not any(name_covers(a.name, r.host) for a in accepted)]
    problems = urls_presented(rows, names)
    findings = [Finding(server.name, "URLs", None, Verdict.NAME_MISMATCH, problem, issued.thumbprint)
                for problem in problems]
    served = sorted({r.host for r in rows if r.tls and r.service == "IIS"})
    if not problems and served:
        findings.append(Finding(server.name, "URLs", None, Verdict.OK, "every https URL configured is covered: "
                                + ", ".join(served), issued.thumbprint))
    return findings


def tls_checks(playbook: Playbook, issued: IssuedCertificate, servers: Sequence[Server]) -> list[TlsCheck]:
    intermediates = frozenset(thumbprint(c) for c in issued.intermediates)
    out = []
    for server in servers:
        ports = dict(server.tls_ports.items())
        for service in server.services_for(playbook.certificate):
            kind = TLS_SERVICE_OF.get(service)
            if kind is None:
                continue  # UM has no TLS endpoint of its own here
            for name in server.names_for(playbook.certificate):
                out.append(TlsCheck(server.name, server.connection.host, ports[kind], kind, name,  # type: ignore[arg-type]
                                    issued.thumbprint, intermediates))
    return out


def verify(playbook: Playbook, issued: IssuedCertificate, servers: Sequence[Server],
           session_for: Callable[[Server], ServerSession], roots: Sequence[x509.Certificate] | None,
           warn_days: int = 30, timeout: float = 10.0, close: bool = True) -> list[Finding]:
    """`close`: close each session after its server (False: the caller's, e.g. a run's own, which it closes)."""
    findings: list[Finding] = []
    for server in servers:
        session = session_for(server)
        try:
            findings += management_findings(server, session, playbook, issued)
        except Exception as exc:  # noqa: BLE001 - a server we cannot ask is a finding, not a crash
            findings.append(Finding(server.name, "management", None, Verdict.UNREACHABLE, str(exc)))
        finally:
            if close:
                session.close()
    findings += run_tls_checks(tls_checks(playbook, issued, servers), roots=roots, warn_days=warn_days,
                               timeout=timeout)
    return findings


def load_roots(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())
