"""X.500 names the way Windows reads and prints them.

Windows' X500DistinguishedName takes "c=US, o=Org, CN=host" and encodes the RDNs in *reverse*
order (CN first in DER), so that printing the name (which walks DER backwards) gives the input
string back. The seed's CSR confirms it: its subject DER starts with the CN attribute.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

# Keys Windows accepts in a DN string (case-insensitive) -> OID.
_KEYS: dict[str, x509.ObjectIdentifier] = {
    "cn": NameOID.COMMON_NAME,
    "c": NameOID.COUNTRY_NAME,
    "s": NameOID.STATE_OR_PROVINCE_NAME,
    "st": NameOID.STATE_OR_PROVINCE_NAME,
    "l": NameOID.LOCALITY_NAME,
    "o": NameOID.ORGANIZATION_NAME,
    "ou": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "e": NameOID.EMAIL_ADDRESS,
    "email": NameOID.EMAIL_ADDRESS,
    "dc": NameOID.DOMAIN_COMPONENT,
    "street": NameOID.STREET_ADDRESS,
    "t": NameOID.TITLE,
    "title": NameOID.TITLE,
    "serialnumber": NameOID.SERIAL_NUMBER,
    "postalcode": NameOID.POSTAL_CODE,
}

# How Windows prints each OID.
_SHORT: dict[x509.ObjectIdentifier, str] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "S",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.TITLE: "T",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.POSTAL_CODE: "PostalCode",
}


class DNParseError(ValueError):
    """The DN string cannot be parsed; the message is the reason shown to the user."""


def _split(text: str) -> list[str]:
    """Split on commas/semicolons outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch in ",;" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise DNParseError("Unterminated quoted string.")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_dn(text: str) -> x509.Name:
    """Parse a Windows DN string into a Name whose DER order is the reverse of the string's order."""
    attributes: list[x509.NameAttribute] = []
    for part in _split(text):
        key, sep, value = part.partition("=")
        if not sep:
            raise DNParseError("The string contains an invalid X500 name attribute key, oid, value or delimiter.")
        oid = _KEYS.get(key.strip().lower())
        if oid is None:
            raise DNParseError("The string contains an invalid X500 name attribute key, oid, value or delimiter.")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('""', '"')  # CertStrToName: a doubled quote inside quotes is one
        if oid == NameOID.COUNTRY_NAME and len(value) != 2:
            # Windows would encode it; cryptography refuses and CAs reject it, so fail early and say why.
            raise DNParseError(f"The country code '{value}' must be two letters.")
        attributes.append(x509.NameAttribute(oid, value))
    if not attributes:
        raise DNParseError("The distinguished name is empty.")
    return x509.Name([x509.RelativeDistinguishedName([a]) for a in reversed(attributes)])


def _quote(value: str) -> str:
    if any(ch in value for ch in ',;+="<>#') or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def format_name(name: x509.Name) -> str:
    """Windows' rendering (X509Certificate2.Subject): RDNs last-to-first, short keys, ', ' separated."""
    parts: list[str] = []
    for rdn in reversed(list(name.rdns)):
        for attr in rdn:
            key = _SHORT.get(attr.oid, f"OID.{attr.oid.dotted_string}")
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            parts.append(f"{key}={_quote(value)}")
    return ", ".join(parts)


def common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


_LABEL = re.compile(r"^(\*|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)$", re.IGNORECASE)


def valid_domain(name: str) -> bool:
    """Reference §1.1: a-z, 0-9 and hyphen per label (plus the dots between, and a leading '*.' wildcard)."""
    if not name or len(name) > 255:
        return False
    labels = name.split(".")
    if any(label == "*" for label in labels[1:]):
        return False
    return all(_LABEL.match(label) for label in labels)
