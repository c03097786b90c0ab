"""Local X.509 work on the admin workstation: read what a CA delivers, compute thumbprints.

CAs deliver in many shapes (a zip with .crt files, a .p7b, one PEM bundle, DER files, in any
order); this module turns any of them into "the leaf" and "the intermediates", so nothing
downstream depends on the CA's packaging.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from orchestrator.errors import ExmigError

_MAX_BUNDLE_BYTES = 10 * 1024 * 1024


def thumbprint(cert: x509.Certificate) -> str:
    """Windows' Thumbprint: SHA-1 of the DER encoding, upper-case hex."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - SHA-1 is what Windows calls the thumbprint


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def parse_certificates(data: bytes, name: str) -> list[x509.Certificate]:
    """Every certificate in `data`: PEM (one or many), DER, PKCS#7 (PEM or DER) or a zip of those."""
    if data[:4] == b"PK\x03\x04":
        return _from_zip(data, name)
    if b"-----BEGIN PKCS7-----" in data or b"-----BEGIN CERTIFICATE-----" in data:
        certs: list[x509.Certificate] = []
        if b"-----BEGIN PKCS7-----" in data:
            certs += pkcs7.load_pem_pkcs7_certificates(data)
        if b"-----BEGIN CERTIFICATE-----" in data:
            certs += x509.load_pem_x509_certificates(data)
        return certs
    for loader in (lambda d: [x509.load_der_x509_certificate(d)], pkcs7.load_der_pkcs7_certificates):
        try:
            return list(loader(data))
        except ValueError:
            continue
    raise ExmigError(f"{name}: not a certificate file (expected PEM, DER, .p7b or the CA's .zip)")


def _from_zip(data: bytes, name: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.is_dir() or info.file_size > _MAX_BUNDLE_BYTES:
                    continue
                member = archive.read(info)
                try:
                    certs += parse_certificates(member, f"{name}:{info.filename}")
                except ExmigError:
                    continue  # readme files and the like
    except zipfile.BadZipFile:
        raise ExmigError(f"{name}: not a readable zip file") from None
    if not certs:
        raise ExmigError(f"{name}: the zip holds no certificate")
    return certs


def read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        size = path.stat().st_size
        if size > _MAX_BUNDLE_BYTES:
            raise ExmigError(f"{path}: {size} bytes is too large for a certificate file")
        data = path.read_bytes()
    except OSError as exc:
        raise ExmigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return parse_certificates(data, str(path))
    except ValueError as exc:
        raise ExmigError(f"{path}: not a valid certificate file ({exc})") from None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


@dataclass(frozen=True)
class IssuedCertificate:
    """The CA's answer, sorted: the leaf and the intermediates that lead to a root (roots dropped)."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.leaf)

    @property
    def leaf_der(self) -> bytes:
        return der(self.leaf)

    def intermediate_blobs(self) -> list[tuple[str, bytes]]:
        return [(thumbprint(c), der(c)) for c in self.intermediates]


def sort_delivery(certs: Iterable[x509.Certificate], name: str) -> IssuedCertificate:
    """Pick the leaf (the one non-CA certificate) and order the chain from it upwards."""
    unique: dict[str, x509.Certificate] = {}
    for cert in certs:
        unique.setdefault(thumbprint(cert), cert)
    leaves = [c for c in unique.values() if not _is_ca(c)]
    if len(leaves) != 1:
        found = "no" if not leaves else str(len(leaves))
        raise ExmigError(
            f"{name}: expected exactly one end-entity certificate (the one issued for your request), found {found}"
        )
    leaf = leaves[0]
    cas = {c.subject.public_bytes(): c for c in unique.values() if _is_ca(c) and not _self_signed(c)}
    chain: list[x509.Certificate] = []
    current = leaf
    for _ in range(len(cas)):
        parent = cas.pop(current.issuer.public_bytes(), None)
        if parent is None:
            break
        chain.append(parent)
        current = parent
    return IssuedCertificate(leaf=leaf, intermediates=tuple(chain))


def load_delivery(paths: Iterable[Path]) -> IssuedCertificate:
    certs: list[x509.Certificate] = []
    names = []
    for path in paths:
        names.append(str(path))
        certs += read_certificates(path)
    return sort_delivery(certs, ", ".join(names))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    text = csr_pem.replace("NEW CERTIFICATE REQUEST", "CERTIFICATE REQUEST").strip().encode()
    if b"-----BEGIN" not in text:
        text = b"-----BEGIN CERTIFICATE REQUEST-----\n" + text + b"\n-----END CERTIFICATE REQUEST-----\n"
    try:
        return x509.load_pem_x509_csr(text)
    except ValueError as exc:
        raise ExmigError(f"the certificate request is not a valid PKCS#10 request ({exc})") from None
