"""Certificate, request and PKCS#12 handling for the emulated servers (no Exchange knowledge here)."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

PBES2_OID = "1.2.840.113549.1.5.13"
_PKCS12_PBE_PREFIX = "1.2.840.113549.1.12.1."


def thumbprint(cert: x509.Certificate) -> str:
    """Windows' thumbprint: SHA-1 of the DER encoding, upper-case hex."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def spki(key_or_cert: x509.Certificate | x509.CertificateSigningRequest | rsa.RSAPrivateKey) -> bytes:
    public = key_or_cert.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    return issued_by(cert, cert)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def armour(data: bytes, label: str, newline: str = "\r\n") -> str:
    """PEM armour with 64-column lines, the way certreq/CertEnroll write request files."""
    text = base64.b64encode(data).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return newline.join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + newline


def base64_lines(data: bytes, newline: str = "\r\n") -> str:
    text = base64.b64encode(data).decode("ascii")
    return newline.join(text[i : i + 64] for i in range(0, len(text), 64)) + newline


# sha1WithRSAEncryption (RFC 3279 §2.2.1) with its NULL parameters, and sha256WithRSAEncryption (RFC 4055).
_SIGNATURE_ALGORITHMS = {
    "sha1": bytes.fromhex("300d06092a864886f70d0101050500"),
    "sha256": bytes.fromhex("300d06092a864886f70d01010b0500"),
}


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def resign_request(csr: x509.CertificateSigningRequest, key: rsa.RSAPrivateKey,
                   hash_name: str) -> x509.CertificateSigningRequest:
    """The same request (PKCS#10, RFC 2986) signed with `hash_name` ("sha1" or "sha256").

    cryptography's builder refuses SHA-1 signatures, but Windows' legacy CryptoAPI request path that
    Exchange's New-ExchangeCertificate uses signs requests with SHA-1, so the lab assembles that
    CertificationRequest itself: the builder's CertificationRequestInfo, re-signed."""
    from cryptography.hazmat.primitives.asymmetric import padding

    algorithm = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}[hash_name]
    info = csr.tbs_certrequest_bytes
    signature = key.sign(info, padding.PKCS1v15(), algorithm)
    body = info + _SIGNATURE_ALGORITHMS[hash_name] + _der(0x03, b"\x00" + signature)
    return x509.load_der_x509_csr(_der(0x30, body))


def build_request(
    key: rsa.RSAPrivateKey, subject: x509.Name, domains: list[str], signature_hash: str = "sha256"
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if domains:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ),
        critical=True,
    ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr if signature_hash == "sha256" else resign_request(csr, key, signature_hash)


def self_signed(
    key: rsa.RSAPrivateKey, subject: x509.Name, domains: list[str], not_before: datetime, days: int
) -> x509.Certificate:
    """A self-signed server certificate (Exchange's default certificate, and the request-store stub)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if domains:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.DNSName)


# --- recognising what a blob of bytes is ------------------------------------------------------


class FormatError(ValueError):
    """The bytes are no certificate, chain or PKCS#12 this lab understands."""


class PfxPasswordError(ValueError):
    pass


class PfxEncryptionUnsupported(ValueError):
    """PBES2 (AES) PKCS#12: Windows Server 2008 only knew the PKCS#12 PBE (3DES/RC2) schemes."""


@dataclass
class Parsed:
    certs: list[x509.Certificate]
    key: rsa.RSAPrivateKey | None = None
    is_pfx: bool = False
    friendly_name: str | None = None


def _der_items(data: bytes, pos: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, content start, content end) of the DER items between pos and end; raises ValueError."""
    items: list[tuple[int, int, int]] = []
    while pos < end:
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise ValueError("high tag numbers not used here")
        pos += 1
        if pos >= end:
            raise ValueError("truncated")
        first = data[pos]
        pos += 1
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or pos + count > end:
                raise ValueError("bad length")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > end:
            raise ValueError("truncated")
        items.append((tag, pos, pos + length))
        pos += length
    return items


def _oid_text(raw: bytes) -> str:
    if not raw:
        return ""
    first = raw[0]
    parts = [str(min(first // 40, 2)), str(first - 40 * min(first // 40, 2))]
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(str(value))
            value = 0
    return ".".join(parts)


def collect_oids(data: bytes, depth: int = 0) -> list[str]:
    """Every OID in a DER structure, descending into OCTET STRINGs that hold DER (PKCS#12 nests that way).

    Ciphertext octet strings almost never parse as complete DER, so they are skipped naturally.
    """
    found: list[str] = []
    if depth > 12:
        return found

    def walk(start: int, end: int, level: int) -> None:
        for tag, cstart, cend in _der_items(data, start, end):
            if tag == 0x06:
                found.append(_oid_text(data[cstart:cend]))
            elif tag & 0x20:
                walk(cstart, cend, level + 1)
            elif tag == 0x04 and cend > cstart:
                try:
                    found.extend(collect_oids(data[cstart:cend], depth + 1))
                except ValueError:
                    pass

    walk(0, len(data), 0)
    return found


def looks_like_pfx(data: bytes) -> bool:
    """PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo, macData OPTIONAL }."""
    try:
        top = _der_items(data, 0, len(data))
        if len(top) != 1 or top[0][0] != 0x30:
            return False
        inner = _der_items(data, top[0][1], top[0][2])
    except ValueError:
        return False
    return len(inner) >= 2 and inner[0][0] == 0x02 and data[inner[0][1] : inner[0][2]] == b"\x03"


def pfx_encryption_oids(data: bytes) -> list[str]:
    try:
        oids = collect_oids(data)
    except ValueError:
        return []
    return [o for o in oids if o == PBES2_OID or o.startswith(_PKCS12_PBE_PREFIX)]


def _unarmour(data: bytes) -> bytes | None:
    """Base64 text (with or without PEM armour) -> bytes; None if it is not text of that kind."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    text = text.lstrip("\ufeff")
    if "-----BEGIN" in text:
        body: list[str] = []
        inside = False
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("-----BEGIN"):
                inside = True
                continue
            if line.startswith("-----END"):
                break
            if inside:
                body.append(line)
        text = "".join(body)
    compact = "".join(text.split())
    if not compact:
        return None
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_blob(data: bytes, password: str | None) -> Parsed:
    """Recognise a certificate (DER/PEM), a PKCS#7 chain (.p7b, DER/PEM) or a PKCS#12 file."""
    if b"-----BEGIN" in data[:200] and b"CERTIFICATE-----" in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
            if certs:
                return Parsed(certs)
        except ValueError:
            pass
    raw = data
    decoded = _unarmour(data) if not looks_like_pfx(data) else None
    if decoded is not None:
        raw = decoded
    if looks_like_pfx(raw):
        return _parse_pfx(raw, password)
    try:
        return Parsed([x509.load_der_x509_certificate(raw)])
    except ValueError:
        pass
    try:
        certs = pkcs7.load_der_pkcs7_certificates(raw)
        if certs:
            return Parsed(list(certs))
    except ValueError:
        pass
    raise FormatError("unrecognised certificate data")


@functools.lru_cache(maxsize=16)
def _load_pkcs12(raw: bytes, password: bytes | None) -> pkcs12.PKCS12KeyAndCertificates:
    """Loading a PKCS#12 costs about 40 ms (OpenSSL checks the RSA key), and a fan-out imports the same PFX
    on every target the lab emulates in one process: load it once per (bytes, password). Loading is
    deterministic, so what each emulated server does is unchanged; failures are not cached."""
    return pkcs12.load_pkcs12(raw, password)


def _parse_pfx(raw: bytes, password: str | None) -> Parsed:
    if PBES2_OID in pfx_encryption_oids(raw):
        raise PfxEncryptionUnsupported("PBES2")
    # Windows tries a NULL and an empty password when none is given.
    candidates = [password.encode("utf-8")] if password is not None else [None, b""]
    last: Exception | None = None
    for candidate in candidates:
        try:
            loaded = _load_pkcs12(raw, candidate)
        except ValueError as exc:
            last = exc
            continue
        certs: list[x509.Certificate] = []
        name: str | None = None
        if loaded.cert is not None:
            certs.append(loaded.cert.certificate)
            if loaded.cert.friendly_name:
                name = loaded.cert.friendly_name.decode("utf-8", "replace")
        certs.extend(c.certificate for c in loaded.additional_certs)
        key = loaded.key
        if key is not None and not isinstance(key, rsa.RSAPrivateKey):
            raise FormatError("only RSA keys are used by Exchange 2007/2010 (no CNG)")
        return Parsed(certs, key=key, is_pfx=True, friendly_name=name)
    raise PfxPasswordError(str(last))


def leaf_of(certs: list[x509.Certificate], key: rsa.RSAPrivateKey | None = None) -> x509.Certificate:
    """The end-entity certificate of a bag: the one matching the key, else the one that issued nothing."""
    if key is not None:
        wanted = spki(key)
        for cert in certs:
            if spki(cert) == wanted:
                return cert
    if len(certs) == 1:
        return certs[0]
    subjects_issuing = {c.issuer for c in certs if not is_self_signed(c)}
    for cert in certs:
        if cert.subject not in subjects_issuing and not is_self_signed(cert):
            return cert
    return certs[0]


def build_pfx(
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    password: str,
    friendly_name: str,
    kdf_rounds: int,
) -> bytes:
    """PKCS#12 with 3DES + SHA1 MAC: the legacy scheme Windows Server 2008 can read (not AES)."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(kdf_rounds)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password.encode("utf-8"))
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode("utf-8") or None, key, cert, chain or None, encryption
    )
