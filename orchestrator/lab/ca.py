"""A lab certificate authority shaped like a commercial one: root -> issuing intermediate -> leaf.

The procedure exmig automates ends with a third-party CA answering a CSR with a zip holding the leaf and
an intermediate (the Starfield pair in the seed). Rehearsals need the same shape, with real signatures, so
that clients verifying against the root only succeed when a server sends the intermediate too.

Layout of the CA directory (PEM; keys are mode 0600, the directory 0700 -- it is a lab CA, not a secret,
but it should not look like one carelessly left lying about):

    root.key  root.crt  intermediate.key  intermediate.crt

`LabCA.load_or_create` is idempotent and safe against two processes creating the same CA at once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import io
import ipaddress
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.fileio import write_atomic

__all__ = [
    "CSRRejected",
    "Delivery",
    "LabCA",
    "LabCAError",
    "load_csr",
    "sign_request_file",
    "thumbprint",
    "write_delivery",
]

ROOT_KEY = "root.key"
ROOT_CRT = "root.crt"
INTERMEDIATE_KEY = "intermediate.key"
INTERMEDIATE_CRT = "intermediate.crt"
_CA_FILES = (ROOT_KEY, ROOT_CRT, INTERMEDIATE_KEY, INTERMEDIATE_CRT)

# The CA certificates start well in the past so tests can issue leaves that were valid once and have since
# expired, and still have them chain to an intermediate that covered their whole lifetime.
_CA_BACKDATE = dt.timedelta(days=2 * 365)
_ROOT_LIFETIME = dt.timedelta(days=22 * 365)
_INTERMEDIATE_LIFETIME = dt.timedelta(days=12 * 365)
# Commercial CAs backdate leaves slightly so a client with a slow clock does not reject a fresh certificate.
_LEAF_BACKDATE = dt.timedelta(minutes=5)

_BASENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class LabCAError(Exception):
    """The CA directory is unusable (partial, or files that do not belong together)."""


class CSRRejected(ValueError):
    """The CA refuses a request, as a commercial CA's web form would."""


@dataclass(frozen=True)
class Delivery:
    """What the CA hands back for a request, as files on disk."""

    directory: Path
    leaf: Path  # <basename>.crt, PEM
    intermediate: Path  # intermediate.crt, PEM
    p7b: Path  # <basename>.p7b, PKCS#7 certs-only (leaf + intermediate; DER SET, so canonical order), DER
    zip: Path  # <basename>.zip holding <basename>.crt and intermediate.crt
    thumbprint: str  # SHA-1 of the leaf, upper-case hex, as Get-ExchangeCertificate shows it


def thumbprint(cert: x509.Certificate) -> str:
    """The Windows thumbprint: SHA-1 over the DER certificate, upper-case hex without separators."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the start (no window where the key is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """A reader never sees half a certificate."""
    write_atomic(path, data, mode)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Serialise CA creation between processes (lab server and `exmig lab sign` may start together)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; creation still refuses to clobber (O_EXCL).
        yield
        return
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PKCS#10 request the way a CA web form would accept it.

    Accepts PEM with either `CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST` armour (Exchange writes the
    latter), bare base64, or DER; tolerates CRLF and the UTF-16 that Windows PowerShell's `Out-File` writes
    by default (the seed procedure offers `$data | Out-File C:\\Certs\\x.csr`).
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        data = data.decode("utf-16").encode("ascii", errors="replace")
    elif data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data.strip())
        stripped = data.strip()
        if stripped and re.fullmatch(rb"[A-Za-z0-9+/=\s]+", stripped):
            return x509.load_der_x509_csr(base64.b64decode(b"".join(stripped.split()), validate=True))
        return x509.load_der_x509_csr(data)
    except (ValueError, binascii.Error) as exc:
        raise CSRRejected(f"not a PKCS#10 certificate request: {exc}") from exc


def request_signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    """Whether the request's self-signature verifies, SHA-1 included: cryptography's is_signature_valid no
    longer accepts SHA-1, but Exchange signs its requests with SHA-1 and an AD CS CA takes them."""
    if csr.is_signature_valid:
        return True
    public_key = csr.public_key()
    algorithm = csr.signature_hash_algorithm
    if not isinstance(public_key, rsa.RSAPublicKey) or not isinstance(algorithm, hashes.SHA1):
        return False
    try:
        public_key.verify(csr.signature, csr.tbs_certrequest_bytes, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True


def _names_from_csr(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names: list[x509.GeneralName] = list(san)
    except x509.ExtensionNotFound:
        names = []
    for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        cn = attr.value if isinstance(attr.value, str) else attr.value.decode()
        general: x509.GeneralName
        try:
            general = x509.IPAddress(ipaddress.ip_address(cn))
        except ValueError:
            general = x509.DNSName(cn)
        if general not in names:
            # Clients ignore the CN when a SAN is present, so a CN missing from the SANs would be dead weight.
            names.insert(0, general)
    return names


class LabCA:
    """Root and issuing intermediate, loaded from (or created in) a directory."""

    # Public CAs stopped issuing for RSA keys under 2048 bits in 2013; Exchange still offers -KeySize 1024.
    min_rsa_key_size: int = 2048

    def __init__(
        self,
        directory: Path,
        root_cert: x509.Certificate,
        intermediate_cert: x509.Certificate,
        intermediate_key: rsa.RSAPrivateKey,
    ) -> None:
        self.directory = directory
        self.root_cert = root_cert
        self.intermediate_cert = intermediate_cert
        self._intermediate_key = intermediate_key

    def __repr__(self) -> str:
        return f"LabCA({str(self.directory)!r}, root={self.root_cert.subject.rfc4514_string()!r})"

    # ------------------------------------------------------------------ persistence

    @classmethod
    def load_or_create(cls, directory: Path, name: str = "exmig Lab") -> LabCA:
        """Load the CA kept in `directory`, creating it on first use. `name` only matters at creation."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _directory_lock(directory):
            present = [f for f in _CA_FILES if (directory / f).exists()]
            if not present:
                cls._create(directory, name)
            elif len(present) != len(_CA_FILES):
                missing = sorted(set(_CA_FILES) - set(present))
                raise LabCAError(f"{directory} holds a partial lab CA (missing {', '.join(missing)})")
            return cls._load(directory)

    @classmethod
    def _load(cls, directory: Path) -> LabCA:
        root = x509.load_pem_x509_certificate((directory / ROOT_CRT).read_bytes())
        inter = x509.load_pem_x509_certificate((directory / INTERMEDIATE_CRT).read_bytes())
        key = serialization.load_pem_private_key((directory / INTERMEDIATE_KEY).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise LabCAError(f"{directory / INTERMEDIATE_KEY} is not an RSA key")
        if _spki(key.public_key()) != _spki(inter.public_key()):
            raise LabCAError(f"{INTERMEDIATE_KEY} does not belong to {INTERMEDIATE_CRT} in {directory}")
        try:
            inter.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise LabCAError(f"{INTERMEDIATE_CRT} is not issued by {ROOT_CRT} in {directory}") from exc
        return cls(directory, root, inter, key)

    @classmethod
    def _create(cls, directory: Path, name: str) -> None:
        now = _now()
        root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        root_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Root Certificate Authority - G2"),
            ]
        )
        root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CA_BACKDATE)
            .not_valid_after(now - _CA_BACKDATE + _ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(root_ski, critical=False)
            .sign(root_key, hashes.SHA256())
        )

        inter_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        inter_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Secure Certificate Authority - G2"),
            ]
        )
        inter = (
            x509.CertificateBuilder()
            .subject_name(inter_name)
            .issuer_name(root_name)
            .public_key(inter_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CA_BACKDATE)
            .not_valid_after(now - _CA_BACKDATE + _INTERMEDIATE_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False
            )
            .sign(root_key, hashes.SHA256())
        )
        # Keys first, certificates last: a crash midway leaves a directory load_or_create reports as partial
        # instead of a certificate whose key is gone.
        _write_private(directory / ROOT_KEY, _key_pem(root_key))
        _write_private(directory / INTERMEDIATE_KEY, _key_pem(inter_key))
        _write_atomic(directory / ROOT_CRT, _cert_pem(root))
        _write_atomic(directory / INTERMEDIATE_CRT, _cert_pem(inter))

    # ------------------------------------------------------------------ accessors

    @property
    def root_pem(self) -> bytes:
        return _cert_pem(self.root_cert)

    @property
    def intermediate_pem(self) -> bytes:
        return _cert_pem(self.intermediate_cert)

    def write_ca_file(self, path: Path) -> Path:
        """Write the root certificate (PEM) for clients' `verify=` / `cafile=`.

        The intermediate is left out on purpose: a server that forgets to send it then fails verification,
        as it would for real clients."""
        path = Path(path)
        _write_atomic(path, self.root_pem)
        return path

    # ------------------------------------------------------------------ issuing

    def sign_csr(
        self,
        csr_pem_or_der: bytes,
        days: int = 365,
        not_before: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Issue a server certificate for a PKCS#10 request.

        Subject and SANs come from the request (the CN is added to the SANs when missing); the CA adds
        serverAuth, digitalSignature+keyEncipherment and key identifiers. `not_before`/`days` let tests make
        expired (`not_before` in the past, small `days`) or not-yet-valid (`not_before` in the future) leaves.
        """
        csr = load_csr(csr_pem_or_der)
        if not request_signature_valid(csr):
            raise CSRRejected("the request's signature does not verify (altered or corrupt request)")
        public_key = csr.public_key()
        if isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < self.min_rsa_key_size:
                raise CSRRejected(
                    f"RSA key of {public_key.key_size} bits; "
                    f"this CA requires at least {self.min_rsa_key_size}"
                )
        elif not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CSRRejected(f"unsupported key type {type(public_key).__name__}")
        if days < 1:
            raise ValueError("days must be at least 1")
        names = _names_from_csr(csr)
        if not names:
            raise CSRRejected("the request names no host (no CN and no subject alternative names)")

        if not_before is None:
            start = _now() - _LEAF_BACKDATE
        elif not_before.tzinfo is None:  # a naive time is taken as UTC, as certificates store it
            start = not_before.replace(tzinfo=dt.UTC)
        else:
            start = not_before.astimezone(dt.UTC)
        inter_ski = self.intermediate_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.intermediate_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            # RFC 5280: the SAN extension must be critical when the subject is empty.
            .add_extension(x509.SubjectAlternativeName(names), critical=len(csr.subject) == 0)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(inter_ski), critical=False
            )
        )
        return builder.sign(self._intermediate_key, hashes.SHA256())

    def issue_server_cert(self, names: list[str], key_size: int = 2048) -> tuple[bytes, bytes]:
        """Key and certificate for the lab's own HTTPS listener: (leaf+intermediate PEM, key PEM).

        `names` may hold DNS names or IP literals; 127.0.0.1 is always included so clients connecting by
        address verify too.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        general: list[x509.GeneralName] = []
        for n in [*names, "127.0.0.1"]:
            try:
                g: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(n))
            except ValueError:
                g = x509.DNSName(n)
            if g not in general:
                general.append(g)
        cn = names[0] if names else "127.0.0.1"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .add_extension(x509.SubjectAlternativeName(general), critical=False)
            .sign(key, hashes.SHA256())
        )
        leaf = self.sign_csr(csr.public_bytes(serialization.Encoding.DER))
        return _cert_pem(leaf) + self.intermediate_pem, _key_pem(key)

    def write_delivery(self, cert: x509.Certificate, directory: Path, basename: str) -> Delivery:
        """Write the CA's answer for `cert` (see module-level `write_delivery`)."""
        return write_delivery(cert, directory, basename, intermediate=self.intermediate_cert)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def write_delivery(
    cert: x509.Certificate,
    directory: Path,
    basename: str,
    *,
    intermediate: x509.Certificate,
) -> Delivery:
    """Write what a commercial CA delivers for an issued certificate.

    `<basename>.crt` (leaf PEM), `intermediate.crt` (PEM), `<basename>.p7b` (PKCS#7 certs-only, DER; the
    certificates sit in a DER SET, so their order is canonical rather than leaf-first) and `<basename>.zip`
    holding `<basename>.crt` and `intermediate.crt`, as the seed's CA did. Existing files of the same names
    are replaced.
    """
    if not _BASENAME_RE.fullmatch(basename):
        raise ValueError(f"basename {basename!r} must be 1-64 characters of letters, digits, '.', '_', '-'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    leaf_pem, inter_pem = _cert_pem(cert), _cert_pem(intermediate)
    leaf_path = directory / f"{basename}.crt"
    inter_path = directory / INTERMEDIATE_CRT
    p7b_path = directory / f"{basename}.p7b"
    zip_path = directory / f"{basename}.zip"
    _write_atomic(leaf_path, leaf_pem)
    _write_atomic(inter_path, inter_pem)
    _write_atomic(p7b_path, pkcs7.serialize_certificates([cert, intermediate], serialization.Encoding.DER))

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(leaf_path.name, leaf_pem)
        zf.writestr(inter_path.name, inter_pem)
    _write_atomic(zip_path, archive.getvalue())
    return Delivery(directory, leaf_path, inter_path, p7b_path, zip_path, thumbprint(cert))


def sign_request_file(
    csr_path: Path,
    out_dir: Path,
    ca_dir: Path,
    *,
    days: int = 365,
    basename: str | None = None,
) -> Delivery:
    """Play the third-party CA for a request file: sign it with the lab CA in `ca_dir` (created on first
    use) and write the delivery into `out_dir`. The default basename is an 11-digit hex order id taken from
    the serial number, like the seed's `458c16fd3f3.crt`."""
    ca = LabCA.load_or_create(Path(ca_dir))
    cert = ca.sign_csr(Path(csr_path).read_bytes(), days=days)
    if basename is None:
        basename = f"{cert.serial_number:040x}"[-11:]
    return ca.write_delivery(cert, Path(out_dir), basename)
