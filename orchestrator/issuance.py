"""The `issue` step, on the workstation: get the CA's certificate and check it before any server sees it.

Checks (all local, before anything is imported): the leaf is for the pending request (same public
key as the CSR), covers every playbook name, is within its validity period, and the chain the CA
sent builds from the leaf upwards (each certificate signed by the next).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from orchestrator.certs import IssuedCertificate, load_csr, load_delivery, pem, sort_delivery, thumbprint
from orchestrator.errors import ExitCode, ExmigError
from orchestrator.hostnames import any_covers
from orchestrator.playbook import CertificateSpec, LabIssuer, LoadedPlaybook


class WaitingForCA(ExmigError):
    exit_code = ExitCode.WAITING_FOR_CA


class IssuedCertificateRejected(ExmigError):
    exit_code = ExitCode.USAGE




def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)}


def check_issued(issued: IssuedCertificate, csr_pem: str | None, cert: CertificateSpec, origin: str,
                 now: datetime | None = None) -> None:
    leaf = issued.leaf
    moment = now or datetime.now(UTC)
    if csr_pem is not None:
        csr = load_csr(csr_pem)
        if _public_der(leaf.public_key()) != _public_der(csr.public_key()):
            raise IssuedCertificateRejected(
                f"{origin}: certificate {issued.thumbprint} is not for this request (its public key differs from "
                "the CSR's); the CA answered another request, or the request was made again"
            )
    names = _names(leaf)
    missing = [d for d in cert.domains if not any_covers(names, d)]
    if missing:
        raise IssuedCertificateRejected(
            f"{origin}: certificate {issued.thumbprint} does not cover {', '.join(missing)}; ask the CA to reissue "
            "with every name of certificate.domains"
        )
    if moment < leaf.not_valid_before_utc:
        raise IssuedCertificateRejected(
            f"{origin}: certificate {issued.thumbprint} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if moment > leaf.not_valid_after_utc:
        raise IssuedCertificateRejected(
            f"{origin}: certificate {issued.thumbprint} expired on {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    current = leaf
    for parent in issued.intermediates:
        try:
            current.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise IssuedCertificateRejected(
                f"{origin}: the chain does not build: {thumbprint(parent)} did not sign {thumbprint(current)} ({exc})"
            ) from None
        current = parent


def from_files(paths: list[Path], csr_pem: str | None, cert: CertificateSpec) -> IssuedCertificate:
    issued = load_delivery(paths)
    check_issued(issued, csr_pem, cert, ", ".join(str(p) for p in paths))
    return issued


def from_lab_ca(loaded: LoadedPlaybook, csr_pem: str, cert: CertificateSpec) -> IssuedCertificate:
    from orchestrator.lab.ca import LabCA

    ca = LabCA.load_or_create(lab_ca_dir(loaded))
    leaf = ca.sign_csr(csr_pem.encode())
    issued = IssuedCertificate(leaf=leaf, intermediates=(ca.intermediate_cert,))
    check_issued(issued, csr_pem, cert, "lab CA")
    return issued


def lab_ca_dir(loaded: LoadedPlaybook) -> Path:
    """Where the lab CA lives: the issuer's ca_dir; else that of the lab serving this playbook now
    (`exmig lab serve PLAYBOOK --state DIR` says where, `served_lab_dir`); else beside the playbook, where
    `exmig lab serve PLAYBOOK` keeps its state by default."""
    issuer = loaded.playbook.issuer
    if isinstance(issuer, LabIssuer) and issuer.ca_dir:
        return loaded.resolve(issuer.ca_dir)
    served = served_lab_dir(loaded)
    return (served or lab_state_dir(loaded)) / "ca"


def lab_state_dir(loaded: LoadedPlaybook) -> Path:
    return loaded.directory / ".exmig" / f"{loaded.path.stem}.lab"


def _serving_file(loaded: LoadedPlaybook) -> Path:
    return loaded.directory / ".exmig" / f"{loaded.path.stem}.lab-serving.json"


def announce_served_lab(loaded: LoadedPlaybook, state_dir: Path) -> Path:
    """Written by `exmig lab serve` while it runs: which state folder (and CA) serves this playbook."""
    import json
    import os

    from orchestrator.fileio import write_atomic

    path = _serving_file(loaded)
    data = {"state_dir": str(state_dir.resolve()), "pid": os.getpid()}
    write_atomic(path, json.dumps(data).encode(), mode=0o644)
    return path


def withdraw_served_lab(loaded: LoadedPlaybook) -> None:
    import contextlib
    import os

    path = _serving_file(loaded)
    if served_lab_pid(path) == os.getpid():
        with contextlib.suppress(OSError):
            path.unlink()


def served_lab_pid(path: Path) -> int | None:
    import json

    try:
        data = json.loads(path.read_text())
        return int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def served_lab_dir(loaded: LoadedPlaybook) -> Path | None:
    """The state folder of the `exmig lab serve` running for this playbook, if one is (its process alive)."""
    import json
    import os

    path = _serving_file(loaded)
    pid = served_lab_pid(path)
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a lab that was killed: its note is stale
    except PermissionError:
        pass  # alive, another user's
    state_dir = Path(json.loads(path.read_text())["state_dir"])
    return state_dir if (state_dir / "ca").is_dir() else None


def issued_from_journal(issued_pem: str, chain_pems: list[str]) -> IssuedCertificate:
    certs = x509.load_pem_x509_certificates((issued_pem + "".join(chain_pems)).encode())
    return sort_delivery(certs, "journal")


def issued_to_pems(issued: IssuedCertificate) -> tuple[str, list[str]]:
    return pem(issued.leaf).decode(), [pem(c).decode() for c in issued.intermediates]
