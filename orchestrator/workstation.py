"""The issue step, on the admin's workstation: the CA's certificate from files, the journal or the lab CA, or
the CSR written for a manual CA. It reads and writes local files only; it never talks to a server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator.certs import IssuedCertificate
from orchestrator.commands import Command
from orchestrator.errors import ExmigError
from orchestrator.fileio import write_atomic
from orchestrator.issuance import WaitingForCA, check_issued, from_files, from_lab_ca
from orchestrator.journal import Journal
from orchestrator.playbook import AcmeIssuer, FilesIssuer, LabIssuer, LoadedPlaybook, ManualIssuer, Server
from orchestrator.secrets_store import SecretStore
from orchestrator.steps import DependencyError


def csr_path(loaded: LoadedPlaybook) -> Path:
    issuer = loaded.playbook.issuer
    name = issuer.csr_file if isinstance(issuer, ManualIssuer) and issuer.csr_file else f"{loaded.path.stem}.csr"
    return loaded.resolve(name)


def write_csr_file(loaded: LoadedPlaybook, csr_pem: str | None) -> None:
    """For a manual CA the CSR is also a file the admin submits."""
    if isinstance(loaded.playbook.issuer, ManualIssuer) and csr_pem:
        write_atomic(csr_path(loaded), csr_pem.encode(), mode=0o644)


def issue(loaded: LoadedPlaybook, journal: Journal, files: Sequence[Path], known: IssuedCertificate | None,
          secrets: SecretStore | None = None, send: Callable[[Server, Command], None] | None = None
          ) -> tuple[str, str, IssuedCertificate | None]:
    """(outcome, reason, the certificate when it is new to this run). Raises WaitingForCA for a manual CA.
    An ACME CA needs the run's `secrets` (EAB, TSIG) and, for http-01, `send` for the token files."""
    cert = loaded.playbook.certificate
    issuer = loaded.playbook.issuer
    if files:
        issued = from_files(list(files), journal.csr_pem, cert)
        reason = f"the CA's certificate {issued.thumbprint} from {', '.join(str(f) for f in files)}"
    elif known is not None:
        check_issued(known, journal.csr_pem, cert, "journal")
        return "ok", f"the CA's certificate {known.thumbprint} is known", None
    elif isinstance(issuer, FilesIssuer):
        paths = [loaded.resolve(p) for p in [issuer.certificate, issuer.bundle] if p]
        paths += [loaded.resolve(p) for p in issuer.chain]
        issued = from_files(paths, journal.csr_pem, cert)
        reason = f"the CA's certificate {issued.thumbprint} from the playbook's files"
    elif journal.csr_pem is None:
        raise DependencyError("issue needs the CSR: run the request step on the source first")
    elif isinstance(issuer, LabIssuer):
        issued = from_lab_ca(loaded, journal.csr_pem, cert)
        reason = f"signed by the lab CA: {issued.thumbprint}"
    elif isinstance(issuer, AcmeIssuer):
        assert secrets is not None and send is not None, "the ACME issuer is run by the executor"
        issued = _from_acme(loaded, journal, secrets, send)
        reason = f"issued over ACME by {issuer.directory}: {issued.thumbprint}"
    else:
        write_csr_file(loaded, journal.csr_pem)
        raise WaitingForCA(
            f"waiting for the CA: the CSR is in {csr_path(loaded)}; submit it to your CA, then run "
            f"`exmig run {loaded.path.name} --certificate FILE [--chain FILE]` with the files it returns"
        )
    if known is not None and known.thumbprint != issued.thumbprint:
        raise ExmigError(
            f"the journal already holds certificate {known.thumbprint}; {issued.thumbprint} is another one. "
            "Move the journal away to start over with the new certificate"
        )
    return "changed", reason, issued


def _from_acme(loaded: LoadedPlaybook, journal: Journal, secrets: SecretStore,
               send: Callable[[Server, Command], None]) -> IssuedCertificate:
    """The Exchange server's own CSR finalized over ACME (its key never leaves the server); the order is kept
    beside the journal, so a run killed in this step picks the same order up."""
    from orchestrator.acme_http import ServerTokens
    from orchestrator.acme_issue import issue as acme_issue
    from orchestrator.acme_issue.setup import acme_settings, dns_responder, state_dir_for

    issuer = loaded.playbook.issuer
    assert isinstance(issuer, AcmeIssuer) and journal.csr_pem is not None
    tokens = ServerTokens(loaded.playbook, send) if issuer.challenge == "http-01" else None
    responder = tokens if tokens is not None else dns_responder(loaded, secrets)
    try:
        result = acme_issue(journal.csr_pem, acme_settings(loaded, secrets), state_dir_for(journal.path), responder)
    finally:
        if tokens is not None:
            tokens.cleanup()
    check_issued(result.issued, journal.csr_pem, loaded.playbook.certificate, "ACME")
    return result.issued


def acme_preflight(loaded: LoadedPlaybook, journal: Journal, secrets: SecretStore) -> None:
    """Before the run's first change: the ACME account (EAB), the order for the names (a name the CA refuses)
    and, for dns-01, the TSIG key, so such mistakes stop the run with no server changed."""
    from orchestrator.acme_issue.client import preflight
    from orchestrator.acme_issue.setup import acme_settings, dns_responder, state_dir_for

    issuer = loaded.playbook.issuer
    assert isinstance(issuer, AcmeIssuer)
    names = list(loaded.playbook.certificate.domains)
    preflight(acme_settings(loaded, secrets), state_dir_for(journal.path), names)
    if issuer.challenge == "dns-01":
        dns_responder(loaded, secrets).check(names)
