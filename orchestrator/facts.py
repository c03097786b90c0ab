"""What the workstation knows before touching a server: the CA's files, read and sorted locally."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

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


def display_path(path: Path) -> str:
    """A path as the admin would type it: relative to the working folder when inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else thumbprint(cert)


def facts_from_delivery(issued: IssuedCertificate, files: Sequence[Path], csr_pem: str | None = None,
                        held_in: str = "the CA's files") -> Facts:
    """Facts for the plan, remembering which file each certificate came from (the dry-run shows it);
    without files (the journal holds the certificates) every one is shown as held in `held_in`."""
    origin: dict[str, tuple[str, str | None]] = {}
    for path in files:
        certs = read_certificates(path)
        for cert in certs:
            member = None if len(certs) == 1 else f"certificate {_common_name(cert)}"
            origin.setdefault(thumbprint(cert), (display_path(path), member))

    def where(cert: x509.Certificate) -> tuple[str, str | None]:
        return origin.get(thumbprint(cert), (held_in, None))

    leaf_file, leaf_member = where(issued.leaf)
    return Facts(
        csr_pem=csr_pem,
        issued_thumbprint=issued.thumbprint,
        issued_subject=issued.leaf.subject.rfc4514_string(),
        issued_file=leaf_file,
        issued_member=leaf_member,
        intermediates=tuple(
            IntermediateFact(thumbprint(c), c.subject.rfc4514_string(), *where(c), der(c))
            for c in issued.intermediates
        ),
    )


def local_facts(loaded: LoadedPlaybook, certificate: Sequence[Path] = (), chain: Sequence[Path] = ()) -> Facts:
    files = issued_files(loaded, certificate, chain)
    if not files:
        return Facts()
    return facts_from_delivery(load_delivery(files), files)
