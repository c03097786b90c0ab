"""The certificate that served before the migration: a commercial certificate close to expiry.

The seed's Exchange 2007 server "probably already [has] such a certificate" (a third-party certificate for the
names clients use), enabled for IIS, SMTP, POP and IMAP beside Exchange's self-signed one; the migration replaces
it because it lacks the coexistence name and is about to expire. `exmig lab serve --previous-certificate` gives
every new emulated server one: issued by the lab CA (a commercial CA to the servers) to the playbook's names,
expiring in 20 days, with an exportable key (the seed's requests use -PrivateKeyExportable $true), its
intermediate in LocalMachine\\CA as the admin who installed it left it, and bound to all four services.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orchestrator.lab.ca import LabCA
from orchestrator.lab.exchange import pki
from orchestrator.lab.exchange.model import CA, MY, CertEntry, ExchangeServerModel, Services
from orchestrator.lab.exchange.x500 import common_name, parse_dn

PREVIOUS_FRIENDLY_NAME = "Exchange 2007 Certificate"  # the friendly name of Microsoft's 2007 procedure [S3g]
PREVIOUS_SERVICES = Services.IIS | Services.SMTP | Services.POP | Services.IMAP
DAYS_LEFT = 20
LIFETIME_DAYS = 365


def issue_previous(ca: LabCA, subject: str, names: list[str], now: dt.datetime) -> tuple[x509.Certificate, bytes]:
    """(certificate, key PEM): a one-year certificate issued 345 days before `now`, so 20 days are left."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    general = [x509.DNSName(n) for n in names]
    csr = (x509.CertificateSigningRequestBuilder().subject_name(parse_dn(subject))
           .add_extension(x509.SubjectAlternativeName(general), critical=False)
           .sign(key, hashes.SHA256()))
    start = now - dt.timedelta(days=LIFETIME_DAYS - DAYS_LEFT)
    cert = ca.sign_csr(csr.public_bytes(serialization.Encoding.DER), days=LIFETIME_DAYS, not_before=start)
    return cert, pki.key_pem(key)


def install_previous(model: ExchangeServerModel, ca: LabCA, subject: str, names: list[str]) -> CertEntry:
    """Put a previous certificate on `model` and make it serve IIS, SMTP, POP and IMAP, as Enable-ExchangeCertificate
    -Services IIS,SMTP,POP,IMAP -Force left it (the default SMTP certificate included)."""
    cert, key = issue_previous(ca, subject, names, model.clock())
    with model.transaction():
        if model.find(CA, pki.thumbprint(ca.intermediate_cert)) is None:
            model.put(CertEntry(CA, pki.der(ca.intermediate_cert)))
        entry = model.put(CertEntry(MY, pki.der(cert), key, exportable=True, friendly_name=PREVIOUS_FRIENDLY_NAME,
                                    services=int(PREVIOUS_SERVICES)))
        cn = common_name(cert.subject) or model.fqdn
        model.default_smtp = model.iis_binding = model.pop_binding = model.imap_binding = entry.thumbprint
        model.pop_name = model.imap_name = cn
    return entry
