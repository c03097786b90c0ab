"""What the workstation knows before touching a server: the CA's files, read and sorted locally."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.certs import IssuedCertificate, der, load_delivery, read_certificates, thumbprint
from orchestrator.plan import Facts, IntermediateFact
from orchestrator.playbook import FilesIssuer, LoadedPlaybook


def issued_files(loaded: LoadedPlaybook, certificate: Sequence[Path] = (), chain: Sequence[Path] = ()) -> list[Path]:
    """The CA's files: from the command line if given, else from a `files` issuer."""
    if certificate:
        return [*certificate, *chain]
    issuer = loaded.playbook.issuer
    if isinstance(issuer, FilesIssuer):
        named = [p for p in (issuer.certificate, issuer.bundle) if p] + list(issuer.chain)
        return [loaded.resolve(p) for p in named]
    return []


def facts_from_delivery(issued: IssuedCertificate, files: Sequence[Path], csr_pem: str | None = None) -> Facts:
    by_thumb: dict[str, str] = {}
    for path in files:
        for cert in read_certificates(path):
            # A file holding exactly this certificate is shown as its origin; a bundle is named as such.
            by_thumb.setdefault(thumbprint(cert), str(path))
    leaf_file = by_thumb.get(issued.thumbprint, str(files[0]) if files else None)
    return Facts(
        csr_pem=csr_pem,
        issued_thumbprint=issued.thumbprint,
        issued_subject=issued.leaf.subject.rfc4514_string(),
        issued_file=leaf_file,
        intermediates=tuple(
            IntermediateFact(thumbprint(c), c.subject.rfc4514_string(), by_thumb.get(thumbprint(c), "chain"), der(c))
            for c in issued.intermediates
        ),
    )


def local_facts(loaded: LoadedPlaybook, certificate: Sequence[Path] = (), chain: Sequence[Path] = ()) -> Facts:
    files = issued_files(loaded, certificate, chain)
    if not files:
        return Facts()
    return facts_from_delivery(load_delivery(files), files)
