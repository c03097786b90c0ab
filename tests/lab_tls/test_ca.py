"""The lab CA issues chains that real verifiers (cryptography's, OpenSSL's) accept, like a commercial CA."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from orchestrator.lab.ca import (
    CSRRejected,
    LabCA,
    LabCAError,
    load_csr,
    sign_request_file,
    thumbprint,
)

from .conftest import SEED_NAMES, make_csr, write

OPENSSL = "/usr/bin/openssl"


def _verify(ca: LabCA, leaf: x509.Certificate, name: str, when: dt.datetime | None = None) -> None:
    subject: x509.DNSName | x509.IPAddress
    try:
        subject = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    builder = PolicyBuilder().store(Store([ca.root_cert]))
    if when is not None:
        builder = builder.time(when)
    builder.build_server_verifier(subject).verify(leaf, [ca.intermediate_cert])


def _spki(key: CertificatePublicKeyTypes | PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_chain_verifies_for_every_requested_name(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey) -> None:
    leaf = lab_ca.sign_csr(make_csr(rsa_key, sans=SEED_NAMES))
    for name in SEED_NAMES:
        _verify(lab_ca, leaf, name)
    with pytest.raises(VerificationError):
        _verify(lab_ca, leaf, "other.example.test")


def test_chain_needs_the_intermediate(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey) -> None:
    leaf = lab_ca.sign_csr(make_csr(rsa_key, sans=SEED_NAMES))
    verifier = (
        PolicyBuilder().store(Store([lab_ca.root_cert])).build_server_verifier(x509.DNSName(SEED_NAMES[0]))
    )
    with pytest.raises(VerificationError):
        verifier.verify(leaf, [])


def test_openssl_verifies_chain_strictly(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    leaf = lab_ca.sign_csr(make_csr(rsa_key, sans=SEED_NAMES))
    root = lab_ca.write_ca_file(tmp_path / "root.pem")
    inter = write(tmp_path / "inter.pem", lab_ca.intermediate_pem)
    leaf_path = write(tmp_path / "leaf.pem", _pem(leaf))
    base = [OPENSSL, "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(root)]
    ok = subprocess.run(
        [*base, "-untrusted", str(inter), "-verify_hostname", "legacy.example.test", str(leaf_path)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert root.read_bytes() == lab_ca.root_pem  # the CA file holds the root only
    missing = subprocess.run([*base, str(leaf_path)], capture_output=True, text=True, timeout=20, check=False)
    assert missing.returncode != 0


def test_subject_and_sans_copied_and_cn_added(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey) -> None:
    csr_pem = make_csr(
        rsa_key, cn="mail.example.test", sans=["autodiscover.example.test", "legacy.example.test"]
    )
    leaf = lab_ca.sign_csr(csr_pem)
    assert leaf.subject == load_csr(csr_pem).subject
    assert leaf.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == "Albany"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == SEED_NAMES


def test_cn_already_in_sans_is_not_duplicated(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey) -> None:
    leaf = lab_ca.sign_csr(make_csr(rsa_key, sans=SEED_NAMES))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == SEED_NAMES


def test_cn_only_request_gets_a_san(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey) -> None:
    leaf = lab_ca.sign_csr(make_csr(rsa_key, cn="mail.example.test", sans=None))
    _verify(lab_ca, leaf, "mail.example.test")


def test_leaf_extensions_look_like_a_commercial_server_cert(
    lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey
) -> None:
    leaf = lab_ca.sign_csr(make_csr(rsa_key, sans=SEED_NAMES))
    ext = leaf.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    inter_ski = lab_ca.intermediate_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == inter_ski.digest
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(rsa_key.public_key())
    assert leaf.issuer == lab_ca.intermediate_cert.subject
    assert leaf.signature_hash_algorithm is not None and leaf.signature_hash_algorithm.name == "sha256"
    assert _spki(leaf.public_key()) == _spki(rsa_key.public_key())
    leaf.verify_directly_issued_by(lab_ca.intermediate_cert)
    assert lab_ca.intermediate_cert.issuer == lab_ca.root_cert.subject
    assert thumbprint(leaf) == leaf.fingerprint(hashes.SHA1()).hex().upper()


def test_altered_request_is_rejected(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey) -> None:
    der = load_csr(make_csr(rsa_key, sans=SEED_NAMES)).public_bytes(serialization.Encoding.DER)
    tampered = der.replace(b"legacy", b"evilxx")  # same length keeps the DER well-formed
    assert tampered != der
    assert not load_csr(tampered).is_signature_valid
    with pytest.raises(CSRRejected, match="signature"):
        lab_ca.sign_csr(tampered)


def test_garbage_and_weak_requests_are_rejected(lab_ca: LabCA) -> None:
    with pytest.raises(CSRRejected):
        lab_ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(CSRRejected):
        lab_ca.sign_csr(b"\x00\x01binary junk")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CSRRejected, match="1024"):
        lab_ca.sign_csr(make_csr(weak, sans=SEED_NAMES))
    nameless = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(CSRRejected, match="names no host"):
        lab_ca.sign_csr(make_csr(nameless, cn=None, sans=None))


def test_accepts_the_encodings_windows_produces(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = make_csr(rsa_key, sans=SEED_NAMES)
    exchange_style = pem.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST").replace(b"\n", b"\r\n")
    out_file_utf16 = b"\xff\xfe" + exchange_style.decode().encode("utf-16-le")  # Windows PowerShell Out-File
    der = load_csr(pem).public_bytes(serialization.Encoding.DER)
    bare_b64 = base64.encodebytes(der)
    for variant in (exchange_style, out_file_utf16, der, bare_b64):
        leaf = lab_ca.sign_csr(variant)
        assert leaf.subject == load_csr(pem).subject


def test_expired_and_not_yet_valid_leaves(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey) -> None:
    now = dt.datetime.now(dt.UTC)
    csr = make_csr(rsa_key, sans=SEED_NAMES)
    expired = lab_ca.sign_csr(csr, days=30, not_before=now - dt.timedelta(days=60))
    future = lab_ca.sign_csr(csr, days=365, not_before=now + dt.timedelta(days=10))
    assert expired.not_valid_after_utc < now < future.not_valid_before_utc
    for leaf in (expired, future):
        with pytest.raises(VerificationError):
            _verify(lab_ca, leaf, "mail.example.test")
    # Both were properly issued: they verify at a time inside their validity.
    _verify(lab_ca, expired, "mail.example.test", when=now - dt.timedelta(days=45))
    _verify(lab_ca, future, "mail.example.test", when=now + dt.timedelta(days=11))
    naive = lab_ca.sign_csr(csr, days=1, not_before=dt.datetime(2026, 1, 1, 12, 0, 0))
    assert naive.not_valid_before_utc == dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def test_delivery_files_parse_back(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    leaf = lab_ca.sign_csr(make_csr(rsa_key, sans=SEED_NAMES))
    d = lab_ca.write_delivery(leaf, tmp_path / "out", "458c16fd3f3")
    assert d.leaf.name == "458c16fd3f3.crt" and d.intermediate.name == "intermediate.crt"
    assert x509.load_pem_x509_certificate(d.leaf.read_bytes()) == leaf
    assert x509.load_pem_x509_certificate(d.intermediate.read_bytes()) == lab_ca.intermediate_cert
    # PKCS#7 holds a DER SET, so the order on disk is canonical, not leaf-first; importers do not care.
    p7 = pkcs7.load_der_pkcs7_certificates(d.p7b.read_bytes())
    assert len(p7) == 2 and set(p7) == {leaf, lab_ca.intermediate_cert}
    with zipfile.ZipFile(d.zip) as zf:
        assert zf.namelist() == ["458c16fd3f3.crt", "intermediate.crt"]
        assert x509.load_pem_x509_certificate(zf.read("458c16fd3f3.crt")) == leaf
        assert x509.load_pem_x509_certificate(zf.read("intermediate.crt")) == lab_ca.intermediate_cert
    assert d.thumbprint == thumbprint(leaf) and len(d.thumbprint) == 40
    # OpenSSL reads the .p7b too (it is what Windows' certificate import wizard would get).
    out = subprocess.run(
        [OPENSSL, "pkcs7", "-inform", "DER", "-in", str(d.p7b), "-print_certs", "-noout"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.count("subject=") == 2, out.stderr
    with pytest.raises(ValueError):
        lab_ca.write_delivery(leaf, tmp_path, "../escape")


def test_sign_request_file(lab_ca: LabCA, rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    csr_path = write(tmp_path / "mitserv.csr", make_csr(rsa_key, sans=SEED_NAMES))
    d = sign_request_file(csr_path, tmp_path / "delivered", lab_ca.directory)
    assert len(d.leaf.stem) == 11 and int(d.leaf.stem, 16) >= 0
    leaf = x509.load_pem_x509_certificate(d.leaf.read_bytes())
    _verify(lab_ca, leaf, "legacy.example.test")
    assert d.thumbprint == thumbprint(leaf)


def test_load_or_create_is_idempotent_and_tidy(tmp_path: Path) -> None:
    first = LabCA.load_or_create(tmp_path / "ca", name="Contoso Lab")
    second = LabCA.load_or_create(tmp_path / "ca", name="ignored once created")
    assert first.root_pem == second.root_pem and first.intermediate_pem == second.intermediate_pem
    assert "Contoso Lab" in second.root_cert.subject.rfc4514_string()
    for name in ("root.key", "intermediate.key"):
        assert stat.S_IMODE(os.stat(tmp_path / "ca" / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ca").st_mode) == 0o700
    assert "PRIVATE" not in repr(second)


def test_partial_or_mismatched_directory_is_refused(tmp_path: Path) -> None:
    a = LabCA.load_or_create(tmp_path / "a")
    LabCA.load_or_create(tmp_path / "b")
    (tmp_path / "a" / "intermediate.crt").unlink()
    with pytest.raises(LabCAError, match="partial"):
        LabCA.load_or_create(tmp_path / "a")
    (tmp_path / "a" / "intermediate.crt").write_bytes(a.intermediate_pem)
    (tmp_path / "a" / "intermediate.key").unlink()
    (tmp_path / "a" / "intermediate.key").write_bytes((tmp_path / "b" / "intermediate.key").read_bytes())
    with pytest.raises(LabCAError, match="does not belong"):
        LabCA.load_or_create(tmp_path / "a")


def test_concurrent_creation_yields_one_ca(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from orchestrator.lab.ca import LabCA; "
        "sys.stdout.write(LabCA.load_or_create(Path(sys.argv[1])).root_pem.decode())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ca")], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=30)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outputs)) == 1


def test_issue_server_cert_for_the_lab_listener(lab_ca: LabCA) -> None:
    chain_pem, key_pem = lab_ca.issue_server_cert(["ex2010.lab.test"])
    certs = x509.load_pem_x509_certificates(chain_pem)
    assert certs[1] == lab_ca.intermediate_cert and len(certs) == 2
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert _spki(key.public_key()) == _spki(certs[0].public_key())
    _verify(lab_ca, certs[0], "127.0.0.1")
    _verify(lab_ca, certs[0], "ex2010.lab.test")
