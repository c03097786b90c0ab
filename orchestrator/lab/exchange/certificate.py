"""ExchangeCertificate output objects.

Adapted vs extended: ExchangeCertificate is a .NET class deriving from X509Certificate2, and every
property listed here (Thumbprint, Subject, RawData from X509Certificate2; Services, Status,
CertificateDomains, IsSelfSigned, RootCAType, ... added by the Exchange class itself) is a real
property of that class, not a PowerShell note property. The serializer therefore puts all of
them into <Props> (adapted); nothing goes to <MS>.

Enum numbers of CertificateStatus and the root-CA type are UNCONFIRMED (only names are
documented); AllowedServices numbers are .NET's.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from orchestrator.lab.exchange import pki
from orchestrator.lab.exchange.model import (
    MY,
    ORIGIN_THIRD_PARTY,
    REQUEST,
    SERVICE_NAMES,
    CertEntry,
    ExchangeServerModel,
    Services,
    services_text,
)
from orchestrator.lab.exchange.settings import LabSettings
from orchestrator.lab.exchange.x500 import common_name, format_name
from orchestrator.lab.objects import LabEnum, LabList, LabObject

EXCHANGE_CERTIFICATE_TYPES = [
    "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
    "System.Security.Cryptography.X509Certificates.X509Certificate2",
    "System.Security.Cryptography.X509Certificates.X509Certificate",
    "System.Object",
]
ENUM_BASES = ["System.Enum", "System.ValueType", "System.Object"]
ALLOWED_SERVICES_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.AllowedServices"
STATUS_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.CertificateStatus"
ROOT_CA_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.CertificateAuthorityType"
MULTI_VALUED_DOMAINS = [
    "Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.SmtpDomainWithSubdomains, "
    "Microsoft.Exchange.Data, Version=14.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]",
    "Microsoft.Exchange.Data.MultiValuedPropertyBase",
    "System.Object",
]
# The first bytes of a BinaryFormatter stream (SerializedStreamHeader record), as the captures' SerializationData.
SERIALIZATION_DATA_STUB = bytes.fromhex("0001000000ffffffff01000000000000000c02000000")
BINARY_FILE_DATA_TYPES = ["Microsoft.Exchange.Data.BinaryFileDataObject", "System.Object"]

STATUS_VALUES = {
    "Unknown": 0, "Valid": 1, "Revoked": 2, "DateInvalid": 3, "Untrusted": 4, "Invalid": 5,
    "RevocationCheckFailure": 6, "PendingRequest": 7,
}
# The documentation's order (reference §1.5), which puts Registry at 3 as issue 16 reports it; the other
# numbers are UNCONFIRMED.
ROOT_CA_VALUES = {"None": 0, "ThirdParty": 1, "Enterprise": 2, "Registry": 3, "GroupPolicy": 4, "Unknown": 5}


def services_enum(flags: int) -> LabEnum:
    return LabEnum([ALLOWED_SERVICES_TYPE, *ENUM_BASES], int(flags), services_text(flags))


def services_string_form(flags: int) -> str:
    """The fixed-width column of the default table on 2010: I P U W S F, '.' when absent."""
    letters = {Services.IMAP: "I", Services.POP: "P", Services.UM: "U", Services.IIS: "W",
               Services.SMTP: "S", Services.FEDERATION: "F"}
    return "".join(letter if flags & flag else "." for flag, letter in letters.items())


def status_of(model: ExchangeServerModel, entry: CertEntry) -> tuple[str, str]:
    """(Status, RootCAType) the way Exchange computes them for `entry` on `model` (issue 16; sources in
    settings.py): a self-signed certificate is Valid whether or not it is in \\Root (RootCAType Registry when it
    is, None when not); a CA-issued one whose chain ends at a root Windows knows but does not trust is Untrusted
    (RootCAType Unknown); a chain that cannot be built (an issuer nowhere to be found) is Invalid; a good chain
    whose revocation lists are out of reach is RevocationCheckFailure."""
    if entry.store == REQUEST:
        return "PendingRequest", "Unknown"
    trust = model.trust(entry.cert)
    self_signed = pki.is_self_signed(entry.cert)
    if trust.root_origin:
        root_type = "ThirdParty" if trust.root_origin == ORIGIN_THIRD_PARTY else "Registry"
    else:
        root_type = "None" if self_signed else "Unknown"
    if not trust.date_valid:
        return "DateInvalid", root_type
    if self_signed:
        return "Valid", root_type
    if not trust.root_origin:
        top = trust.chain[-1]
        known = pki.is_self_signed(top) or any(pki.issued_by(top, r) for r in model.known_roots)
        return ("Untrusted" if known else "Invalid"), root_type
    if model.revocation_offline:
        return "RevocationCheckFailure", root_type
    return "Valid", root_type


def certificate_domains(entry: CertEntry) -> list[str]:
    names = pki.dns_names(entry.cert)
    cn = common_name(entry.cert.subject)
    if cn and cn.lower() not in {n.lower() for n in names}:
        names = [cn, *names]
    return names


def _to_string(entry: CertEntry) -> str:
    """X509Certificate.ToString(): the bracketed multi-line form."""
    cert = entry.cert
    return (
        f"[Subject]\r\n  {format_name(cert.subject)}\r\n\r\n"
        f"[Issuer]\r\n  {format_name(cert.issuer)}\r\n\r\n"
        f"[Serial Number]\r\n  {serial_number(entry)}\r\n\r\n"
        f"[Not Before]\r\n  {windows_datetime(cert.not_valid_before_utc)}\r\n\r\n"
        f"[Not After]\r\n  {windows_datetime(cert.not_valid_after_utc)}\r\n\r\n"
        f"[Thumbprint]\r\n  {entry.thumbprint}\r\n"
    )


def serial_number(entry: CertEntry) -> str:
    text = format(entry.cert.serial_number, "X")
    return text if len(text) % 2 == 0 else "0" + text


def windows_datetime(value: Any) -> str:
    """en-US general date/long time, e.g. '12/30/2027 2:39:08 PM' (the prompt's format)."""
    hour = value.hour % 12 or 12
    suffix = "AM" if value.hour < 12 else "PM"
    return f"{value.month}/{value.day}/{value.year} {hour}:{value.minute:02d}:{value.second:02d} {suffix}"


def exchange_certificate(
    model: ExchangeServerModel, entry: CertEntry, settings: LabSettings
) -> LabObject:
    cert = entry.cert
    if settings.rawdata_only_output:
        # The shape of the CSS-Exchange captures (Admin/MonitorExchangeAuthCertificate/DataCollection/Tests/Data/
        # GetExchangeCertificate.xml): Props hold RawData only, beside ToString and Exchange's SerializationData
        # note property (a .NET BinaryFormatter blob only a client with the Exchange types can read; the lab's is
        # an opaque stand-in). PSComputerName/RunspaceId in the captures come from the client's remoting layer.
        return LabObject(list(EXCHANGE_CERTIFICATE_TYPES), adapted={"RawData": entry.der},
                         extended={"SerializationData": SERIALIZATION_DATA_STUB + entry.der[:16]},
                         to_string=_to_string(entry))
    status, root_type = status_of(model, entry)
    public = cert.public_key()
    key_size = public.key_size if isinstance(public, rsa.RSAPublicKey) else 0
    props: dict[str, Any] = {
        "AccessRules": None,
        "CertificateDomains": LabList(list(MULTI_VALUED_DOMAINS), certificate_domains(entry)),
        "HasPrivateKey": entry.has_key,
        "IsSelfSigned": pki.is_self_signed(cert) and entry.store == MY,
        "Issuer": format_name(cert.issuer),
        "NotAfter": cert.not_valid_after_utc,
        "NotBefore": cert.not_valid_before_utc,
        "PublicKeySize": key_size,
        "RootCAType": LabEnum([ROOT_CA_TYPE, *ENUM_BASES], ROOT_CA_VALUES[root_type], root_type),
        "SerialNumber": serial_number(entry),
        "Services": services_enum(model.services_of(entry)),
        "Status": LabEnum([STATUS_TYPE, *ENUM_BASES], STATUS_VALUES[status], status),
        "Subject": format_name(cert.subject),
        "Archived": False,
        "CertificateRequest": (
            pki.base64_lines(entry.csr_der) if entry.store == REQUEST and entry.csr_der else None
        ),
        "FriendlyName": entry.friendly_name,
        "Identity": f"{model.fqdn}\\{entry.thumbprint}",
        "PrivateKeyExportable": entry.exportable if entry.has_key else False,
        "RawData": entry.der,
        "ServicesStringForm": services_string_form(model.services_of(entry)),
        "Thumbprint": entry.thumbprint,
        "Version": cert.version.value + 1,
    }
    if settings.omit_services_in_remote_output:
        for name in ("Services", "ServicesStringForm"):
            props.pop(name)
    return LabObject(list(EXCHANGE_CERTIFICATE_TYPES), adapted=props, to_string=_to_string(entry))


def binary_file_data(data: bytes) -> LabObject:
    return LabObject(list(BINARY_FILE_DATA_TYPES), adapted={"FileData": data})


def parse_services(values: list[str]) -> tuple[int, str | None]:
    """'IIS,SMTP' / ['IIS','SMTP'] -> flags; returns (flags, first unknown name or None)."""
    flags = 0
    by_name = {name.lower(): flag for flag, name in SERVICE_NAMES.items()}
    by_name["none"] = Services.NONE
    for value in values:
        for item in str(value).split(","):
            name = item.strip()
            if not name:
                continue
            flag = by_name.get(name.lower())
            if flag is None:
                return flags, name
            flags |= int(flag)
    return flags, None
