"""The CA's root: which one the issuing chain ends at, whether a server trusts it, where its file is.

Exchange refuses to import a CA response whose chain does not end at a root in the server's
LocalMachine\\Root (Exchange 2013's certificate code; 2010 likely), so exmig reads every server's
\\Root before the run's first change and stops there, naming server and root, unless the playbook
says `issuer.install_root: true` (then install-chain adds it with certutil -addstore Root).
Windows fetches root-program roots on demand only with internet access, which many Exchange
servers lack, so a commercial root missing from \\Root is reported the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from orchestrator.certs import IssuedCertificate, der, load_delivery, read_certificates, thumbprint
from orchestrator.errors import ExmigError
from orchestrator.facts import display_path, issued_files
from orchestrator.plan import RootFact
from orchestrator.playbook import FilesIssuer, LabIssuer, LoadedPlaybook
from orchestrator.trust import signed


class UntrustedRoot(ExmigError):
    """A server does not trust the CA's root: nothing was changed."""


def chain_top(loaded: LoadedPlaybook, issued: IssuedCertificate | None, files: Sequence[Path]) -> x509.Certificate | None:
    """The last certificate of the issuing chain below the root; None while the CA's answer is unknown."""
    if issued is None:
        issuer = loaded.playbook.issuer
        if files:
            issued = load_delivery(files)
        elif isinstance(issuer, FilesIssuer):
            issued = load_delivery(issued_files(loaded))
        elif isinstance(issuer, LabIssuer):
            ca = _lab_ca(loaded)
            return ca.intermediate_cert if ca is not None else None
        else:
            return None
    return issued.intermediates[-1] if issued.intermediates else issued.leaf


def find_root(loaded: LoadedPlaybook, top: x509.Certificate, files: Sequence[Path]) -> tuple[x509.Certificate, Path] | None:
    """The root that signed `top`, from issuer.root, the CA's files or the lab CA."""
    issuer = loaded.playbook.issuer
    candidates: list[Path] = []
    if issuer.root:
        candidates.append(loaded.resolve(issuer.root))
    if files:
        candidates += list(files)
    elif isinstance(issuer, FilesIssuer):
        candidates += issued_files(loaded)
    if isinstance(issuer, LabIssuer):
        ca = _lab_ca(loaded)
        if ca is not None:
            candidates.append(ca.directory / "root.crt")
    for path in candidates:
        if not path.is_file():
            continue
        for cert in read_certificates(path):
            if cert.issuer == cert.subject and signed(top, cert):
                return cert, path
    return None


def root_fact(loaded: LoadedPlaybook, top: x509.Certificate | None, files: Sequence[Path]) -> RootFact | None:
    """The root to install, when the playbook asks for it and the admin's files hold it."""
    if top is None or not loaded.playbook.issuer.install_root:
        return None
    found = find_root(loaded, top, files)
    if found is None:
        return None
    cert, path = found
    return RootFact(thumbprint(cert), cert.subject.rfc4514_string(), display_path(path), der(cert))


def describe(top: x509.Certificate, root: RootFact | None) -> str:
    if root is not None:
        return f"'{root.subject}' ({root.thumbprint})"
    return f"'{top.issuer.rfc4514_string()}'"


def untrusted(servers: list[str], top: x509.Certificate, root: RootFact | None) -> UntrustedRoot:
    return UntrustedRoot(
        f"{', '.join(servers)}: the CA's root {describe(top, root)} is not in LocalMachine\\Root, and Exchange does not import "
        "a certificate whose root it does not trust; nothing was changed. Add the root there "
        "(certutil -addstore Root root.cer) or set issuer.install_root: true"
    )


def missing_root_file(top: x509.Certificate) -> ExmigError:
    return ExmigError(
        f"issuer.install_root: true, but the root '{top.issuer.rfc4514_string()}' is not among the CA's files; "
        "give its certificate as issuer.root: FILE"
    )


def _lab_ca(loaded: LoadedPlaybook) -> Any:
    """The lab CA when it exists (the lab or the issue step creates it; a plan must not)."""
    from orchestrator.issuance import lab_ca_dir
    from orchestrator.lab.ca import ROOT_CRT, LabCA

    directory = lab_ca_dir(loaded)
    if not (directory / ROOT_CRT).is_file():
        return None
    return LabCA.load_or_create(directory)
