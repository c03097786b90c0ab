"""The migration playbook: what the admin writes, validated with errors that point at the line.

A playbook names the certificate to request, the servers (exactly one `source` where the
request is made, any number of `target`s that receive the PFX), how the signed certificate is
obtained (`issuer`) and where the PFX password comes from. It never holds a password: secrets
are references (environment variable, prompt, generated).
"""

from __future__ import annotations

import re
import unicodedata
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from orchestrator.errors import PlaybookError
from orchestrator.hostnames import any_covers
from orchestrator.kerberos import DEFAULT_SPN_SERVICE, check_username
from orchestrator.yamlsource import SourceMap, load_yaml

EXCHANGE_2007_SNAPIN = "Microsoft.Exchange.Management.PowerShell.Admin"


class Service(str, Enum):
    """Services Enable-ExchangeCertificate accepts on both 2007 and 2010 (Federation is 2010-only and
    cannot be enabled with that cmdlet, so it is not offered)."""

    IIS = "IIS"
    SMTP = "SMTP"
    POP = "POP"
    IMAP = "IMAP"
    UM = "UM"


class Role(str, Enum):
    SOURCE = "source"
    TARGET = "target"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --- secrets by reference ----------------------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


LAB_DEFAULT_PASSWORD = "exmig-Lab-2010!"  # noqa: S105 - the documented password of the rehearsal lab, not a secret


class SecretRef(_Model):
    """Where a secret comes from: an environment variable, a prompt, or (PFX only) generated.

    `lab_default: true` (lab playbooks only) falls back to the lab's documented password when the
    variable is unset, so a rehearsal needs no set-up."""

    env: StrictStr | None = Field(None, description="The environment variable that holds the secret.")
    prompt: StrictBool = Field(False, description="Ask for the secret at a prompt when the run starts.")
    generate: StrictBool = Field(False, description="PFX password only: a random password generated per run.")
    lab_default: StrictBool = Field(False, description="Lab playbooks only (issuer type lab): the lab's documented "
                                    "password when the variable is unset.")

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        chosen = [name for name, on in (("env", self.env is not None), ("prompt", self.prompt),
                                          ("generate", self.generate)) if on]
        if len(chosen) != 1:
            raise ValueError("give exactly one of `env: VARIABLE`, `prompt: true` or `generate: true`")
        if self.env is not None and not _ENV_NAME.fullmatch(self.env):
            raise ValueError(f"'{self.env}' is not an environment variable name (letters, digits, _)")
        if self.lab_default and self.env is None:
            raise ValueError("`lab_default: true` goes with `env: VARIABLE`")
        return self

    def describe(self) -> str:
        if self.env is not None:
            return f"environment variable {self.env}"
        return "prompt" if self.prompt else "generated for this run"


def _reject_inline_secret(value: Any, field_name: str) -> Any:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        raise ValueError(
            f"a password must not be written in the playbook; use `{field_name}: {{env: VARIABLE}}` "
            f"or `{field_name}: {{prompt: true}}`"
        )
    return value


class Credentials(_Model):
    username: StrictStr | SecretRef = Field(description="The account; with Kerberos its principal user@REALM, e.g. "
                                            "administrator@EXAMPLE.COM; or {env: VARIABLE}.")
    # None: with `auth: kerberos`, the admin's Kerberos ticket (kinit, or a domain logon) is used.
    password: SecretRef | None = Field(None, description="Where the password comes from: {env: VARIABLE} or "
                                       "{prompt: true}, never the password itself; leave it out with auth: "
                                       "kerberos to use the admin's ticket (kinit).")

    @field_validator("password", mode="before")
    @classmethod
    def _no_inline_password(cls, value: Any) -> Any:
        return _reject_inline_secret(value, "password")

    @field_validator("password")
    @classmethod
    def _not_generated(cls, value: SecretRef | None) -> SecretRef | None:
        if value is not None and value.generate:
            raise ValueError("a server password cannot be generated; use `env: VARIABLE` or `prompt: true`")
        return value


# --- certificate -------------------------------------------------------------------------------

# Exchange's DomainName rule: a-z, 0-9 and hyphen per label, at most 255 characters.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_hostname(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    if not name or len(name) > 255:
        raise ValueError(f"'{name}' is not a host name (1 to 255 characters)")
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            raise ValueError(f"'{name}': a wildcard needs a domain below it, e.g. *.example.com")
    if len(labels) < 2:
        raise ValueError(f"'{name}' is not a fully qualified host name (e.g. mail.example.com)")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"'{name}' is not a valid host name: labels use a-z, 0-9 and '-' only, "
                "1 to 63 characters, not starting or ending with '-'"
            )
    return name


Hostname = Annotated[StrictStr, AfterValidator(check_hostname)]

def has_control(value: str) -> bool:
    """Control characters (C0, DEL, C1 such as NEL) and line/paragraph separators: invisible in a
    playbook, and YAML itself folds some of them into spaces."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)


_COUNTRY = re.compile(r"^[A-Z]{2}$")


class Subject(_Model):
    """The X.500 subject of the request, as in the seed's `c=.., s=.., l=.., o=.., CN=..`."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, populate_by_name=True)

    C: StrictStr | None = Field(None, description="Country: the two-letter ISO code, e.g. US.")
    S: StrictStr | None = Field(None, description="State or province.")
    L: StrictStr | None = Field(None, description="Locality (city).")
    O: StrictStr | None = Field(None, description="Organization.")  # noqa: E741 - the X.500 attribute is called O
    OU: StrictStr | None = Field(None, description="Organizational unit.")
    CN: StrictStr = Field(description="Common name: the main host name, e.g. mail.example.com; also listed in "
                          "certificate.domains.")

    @field_validator("C")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is not None and not _COUNTRY.fullmatch(value.upper()):
            raise ValueError(f"'{value}' is not a two-letter ISO country code (e.g. US, DE)")
        return value.upper() if value is not None else None

    @field_validator("CN")
    @classmethod
    def _cn(cls, value: str) -> str:
        return check_hostname(value)

    @field_validator("S", "L", "O", "OU")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        if value is not None and (not value or has_control(value)):
            raise ValueError("must be non-empty text without control characters")
        return value

    def x500(self) -> str:
        """The -SubjectName string in the order Exchange's examples use (c, s, l, o, ou, cn)."""
        parts = []
        for key, value in (("C", self.C), ("S", self.S), ("L", self.L), ("O", self.O), ("OU", self.OU),
                           ("CN", self.CN)):
            if value is not None:
                parts.append(f"{key}={_escape_rdn(value)}")
        return ", ".join(parts)


def _escape_rdn(value: str) -> str:
    """Quote a value the way Windows' X500DistinguishedName (CertStrToName) reads it: inside double
    quotes a `"` is doubled and a backslash is an ordinary character, so `O=Smith, Jones` stays in O."""
    if any(ch in value for ch in ',+="<>;#\n\r') or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def check_name_in_use(name: str) -> str:
    """A name exmig may find in use: a host name as in certificate.domains, or a server's single-label (NetBIOS) name,
    which Exchange settings such as X509CertificateName can hold."""
    name = name.strip().lower().rstrip(".")
    if "." not in name and _LABEL.fullmatch(name):
        return name
    return check_hostname(name)


class UncoveredOk(_Model):
    """A name in use on a server that the new certificate need not cover (certificate.uncovered_ok)."""

    name: Annotated[StrictStr, AfterValidator(check_name_in_use)] = Field(
        description="The host name in use (e.g. ex2007.mitserv.net, or a wildcard such as *.mitserv.local).")
    reason: StrictStr = Field(description="Why clients of this name need no certificate covering it (shown in the "
                              "plan's table of names in use).")

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if not value or has_control(value):
            raise ValueError("must be a non-empty reason without control characters")
        return value


class CertificateSpec(_Model):
    subject: Subject = Field(description="The X.500 subject of the request (New-ExchangeCertificate -SubjectName).")
    domains: Annotated[list[Hostname], Field(min_length=1, description="The names on the certificate "
                                             "(-DomainName), the subject CN among them, e.g. mail., autodiscover., "
                                             "legacy.")]
    key_size: Literal[1024, 2048, 4096] = Field(2048, description="RSA key size in bits: 1024, 2048 or 4096.")
    private_key_exportable: StrictBool = Field(True, description="Must be true: the certificate is exported from the "
                                               "source to the targets.")
    friendly_name: StrictStr | None = Field(None, description="The certificate's friendly name (fewer than 64 "
                                            "characters).")
    services: Annotated[list[Service], Field(min_length=1, description="The services the certificate is enabled for "
                                             "(Enable-ExchangeCertificate -Services); a server's `services` "
                                             "overrides it.")] = [Service.IIS, Service.SMTP, Service.POP,
                                                                   Service.IMAP]
    # Whether the key stays exportable on the 2010 servers that import the PFX (2007 has no such
    # parameter). Off by default: the source keeps the one exportable copy.
    exportable_on_targets: StrictBool = Field(False, description="Exchange 2010 targets: import with "
                                              "-PrivateKeyExportable (off: the source keeps the one exportable copy).")
    uncovered_ok: list[UncoveredOk] = Field([], description="Names in use on the servers (virtual directory URLs, "
                                            "receive connector FQDNs...) that certificate.domains need not cover, "
                                            "each with the reason; any other uncovered name stops the run before "
                                            "the request.")

    @field_validator("key_size", mode="before")
    @classmethod
    def _key_size(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value not in (1024, 2048, 4096):
            raise ValueError(f"{value} is not a key size Exchange accepts; use 1024, 2048 or 4096")
        return value

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        names = value
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"'{name}' is listed twice")
            seen.add(name)
        return names

    @field_validator("friendly_name")
    @classmethod
    def _friendly(cls, value: str | None) -> str | None:
        if value is not None and len(value) >= 64:
            raise ValueError(f"is {len(value)} characters; Exchange requires fewer than 64")
        if value is not None and has_control(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("services")
    @classmethod
    def _unique_services(cls, value: list[Service]) -> list[Service]:
        if len(set(value)) != len(value):
            raise ValueError("a service is listed twice")
        return value

    @field_validator("uncovered_ok")
    @classmethod
    def _unique_accepted(cls, value: list[UncoveredOk]) -> list[UncoveredOk]:
        names = [a.name for a in value]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ValueError(f"'{twice}' is listed twice")
        return value

    @model_validator(mode="after")
    def _cn_in_domains(self) -> CertificateSpec:
        if self.subject.CN not in self.domains:
            raise ValueError(
                f"domains must include the subject CN '{self.subject.CN}' (clients check the names list, "
                "not the CN); add it to certificate.domains"
            )
        return self


# --- servers -----------------------------------------------------------------------------------


class Endpoint(_Model):
    """Where a PowerShell session is opened: the URL parts and the PSRP configuration."""

    scheme: Literal["http", "https"]
    port: int
    path: str
    configuration: str

    def url(self, host: str) -> str:
        return f"{self.scheme}://{host}:{self.port}{self.path}"


class Connection(_Model):
    host: StrictStr = Field(description="The server's host name or address.")
    scheme: Literal["http", "https"] | None = Field(None, description="http or https; default http.")
    port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = Field(None, description="The Exchange endpoint's "
                                                                     "port; default 2010: 80 (https 443), "
                                                                     "2007: 5985 (https 5986).")
    path: StrictStr | None = Field(None, description="The Exchange endpoint's URL path; default 2010: /PowerShell, "
                                   "2007: /wsman.")
    configuration: StrictStr | None = Field(None, description="The PowerShell session configuration; default 2010: "
                                            "Microsoft.Exchange, 2007: Microsoft.PowerShell.")
    auth: Literal["basic", "ntlm", "negotiate", "kerberos", "credssp"] | None = Field(
        None, description="WinRM authentication; default 2010: kerberos, 2007: negotiate.")
    transport: Literal["psrp", "winrs"] = Field("psrp", description="psrp (PowerShell remoting), or winrs for "
                                                "Exchange 2007 hosts without PowerShell remoting.")
    verify_tls: StrictBool = Field(True, description="Check the server's TLS certificate (https).")
    ca_file: StrictStr | None = Field(None, description="A CA bundle (PEM) for https, relative to the playbook.")
    # Exchange 2007: the snap-in added to the Microsoft.PowerShell session.
    snapin: StrictStr | None = Field(None, description="Exchange 2007: the snap-in added to the session; default "
                                     "Microsoft.Exchange.Management.PowerShell.Admin.")
    # Exchange 2007 over WinRS: the Exchange shell's console file on the server (its shortcut's -PSConsoleFile).
    console_file: StrictStr | None = Field(None, description="Exchange 2007 over WinRS: the Exchange shell's console "
                                           "file (.psc1) on the server.")
    # Exchange 2010: the standard WinRM listener used for Windows-level steps (files, certutil),
    # which the restricted Microsoft.Exchange endpoint cannot do.
    system_scheme: Literal["http", "https"] | None = Field(None, description="Exchange 2010: the Windows-level "
                                                           "endpoint's scheme (files, certutil); default: scheme.")
    system_port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = Field(None, description="Exchange 2010: the "
                                                                            "Windows-level endpoint's port; default "
                                                                            "5985 (https 5986).")
    system_path: StrictStr | None = Field(None, description="Exchange 2010: the Windows-level endpoint's path; "
                                          "default /wsman.")
    # Kerberos: the SPN exmig asks a ticket for is <spn_service>/<spn_hostname>. By default the client
    # library's service class (pypsrp: host, pywinrm: HTTP) and the host name connected to; set
    # spn_hostname for a load-balanced or aliased name (the one registered with setspn).
    spn_service: StrictStr | None = Field(None, description="Kerberos: the SPN's service class (HTTP, host, WSMAN); "
                                          "default the client's: host (psrp), HTTP (winrs).")
    spn_hostname: StrictStr | None = Field(None, description="Kerberos: the SPN's host name, e.g. the alias "
                                           "registered with setspn; default: host.")

    @field_validator("spn_service")
    @classmethod
    def _spn_service(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,31}", value):
            raise ValueError(f"'{value}' is not an SPN service class such as HTTP, host or WSMAN")
        return value

    @field_validator("spn_hostname")
    @classmethod
    def _spn_hostname(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})", value):
            raise ValueError(f"'{value}' is not a host name for an SPN (letters, digits, '-' and '.')")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value or any(ch in value for ch in "/ @?#") or any(ord(ch) < 33 for ch in value):
            raise ValueError(f"'{value}' is not a host name or address")
        return value

    @field_validator("path", "system_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            return "/" + value
        return value


class TlsPorts(_Model):
    """Where the server's TLS services answer (exmig verify; the lab listens there)."""

    https: Annotated[StrictInt, Field(ge=1, le=65535, description="HTTPS (IIS: OWA, Autodiscover).")] = 443
    smtp: Annotated[StrictInt, Field(ge=1, le=65535, description="SMTP with STARTTLS.")] = 25
    imaps: Annotated[StrictInt, Field(ge=1, le=65535, description="IMAP over TLS.")] = 993
    pop3s: Annotated[StrictInt, Field(ge=1, le=65535, description="POP3 over TLS.")] = 995

    def items(self) -> list[tuple[str, int]]:
        return [("https", self.https), ("smtp", self.smtp), ("imaps", self.imaps), ("pop3s", self.pop3s)]


_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
_WINDOWS_DIR = re.compile(r"^[A-Za-z]:\\(?:[^<>:\"/\\|?*\x00-\x1f]+\\?)*$")


class Server(_Model):
    name: StrictStr = Field(description="The server's (NetBIOS) name, passed to -Server on Exchange 2010.")
    version: Literal[2007, 2010] = Field(description="The Exchange version: 2007 or 2010.")
    role: Role = Field(description="source (exactly one: where the request is made) or target (receives the PFX).")
    connection: Connection = Field(description="How exmig reaches the server (WinRM).")
    credentials: Credentials = Field(description="The account exmig signs in with.")
    workdir: StrictStr = Field("C:\\Certs", description="The remote working folder (an absolute Windows path).")
    services: list[Service] | None = Field(None, description="The services enabled on this server; default: "
                                           "certificate.services.")
    tls_ports: TlsPorts = Field(TlsPorts(), description="Where this server's TLS services answer (exmig verify).")
    # The certificate names clients use to reach this server (for verify's SNI checks); default: all.
    client_names: list[Hostname] | None = Field(None, description="The names clients use for this server (verify's "
                                                "SNI); default: all of certificate.domains.")

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if value not in (2007, 2010):
            raise ValueError(f"{value!r} is not supported; use 2007 or 2010")
        return value

    @model_validator(mode="after")
    def _kerberos_credentials(self) -> Server:
        user, password = self.credentials.username, self.credentials.password
        if self.auth == "kerberos" and isinstance(user, str):
            problem = check_username(user)
            if problem is not None:
                raise ValueError(f"credentials.username: {problem}")
        if password is None and self.auth != "kerberos":
            raise ValueError(f"credentials.password is needed with auth: {self.auth}; give `password: {{env: "
                             "VARIABLE}` or `{prompt: true}` (only auth: kerberos can use a ticket from kinit)")
        c = self.connection
        if (c.spn_service or c.spn_hostname) and self.auth not in ("kerberos", "negotiate"):
            raise ValueError(f"connection.spn_service/spn_hostname are for Kerberos; auth is {self.auth}")
        return self

    @model_validator(mode="after")
    def _transport_fits_version(self) -> Server:
        if self.connection.transport == "winrs" and self.version != 2007:
            raise ValueError(
                "connection.transport winrs is for Exchange 2007 hosts without PowerShell remoting; "
                "Exchange 2010 cmdlets run over PowerShell remoting (transport: psrp)"
            )
        if self.connection.console_file is not None and self.connection.transport != "winrs":
            raise ValueError("connection.console_file goes with transport: winrs")
        c = self.connection
        if self.version == 2007:
            # 2007 has no Exchange endpoint: one Microsoft.PowerShell session does everything.
            extra = [name for name, value in (("system_port", c.system_port), ("system_path", c.system_path),
                                              ("system_scheme", c.system_scheme)) if value is not None]
            if extra:
                raise ValueError(f"connection.{extra[0]} is for Exchange 2010 (its second, Windows-level endpoint); "
                                 "Exchange 2007 uses one session: remove it")
            if c.configuration is not None and c.configuration.lower() == "microsoft.exchange":
                raise ValueError("connection.configuration Microsoft.Exchange does not exist on Exchange 2007; "
                                 "leave it out (Microsoft.PowerShell with the Exchange snap-in)")
            if c.path is not None and c.path.lower().rstrip("/") == "/powershell":
                raise ValueError("connection.path /PowerShell is Exchange 2010's endpoint; Exchange 2007 is reached "
                                 "at /wsman (leave path out)")
        elif c.snapin is not None:
            raise ValueError("connection.snapin is for Exchange 2007; Exchange 2010 cmdlets come from the "
                             "Microsoft.Exchange endpoint")
        plain = [ep for ep in (self.exchange_endpoint, self.system_endpoint) if ep.scheme == "http"]
        if self.auth == "basic" and plain:
            # Basic has no message encryption: the password (and over WinRS the PFX password on stdin) would
            # cross the network in clear. Windows refuses it too (WinRM AllowUnencrypted=false by default):
            # https://learn.microsoft.com/en-us/windows/win32/winrm/installation-and-configuration-for-windows-remote-management
            where = "system_scheme" if self.exchange_endpoint.scheme == "https" else "scheme"
            raise ValueError(
                f"server {self.name}: auth basic over connection.{where} http sends the credentials in clear; "
                "use scheme: https (and system_scheme: https on 2010), or auth ntlm/kerberos, which encrypt "
                "the messages"
            )
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SERVER_NAME.fullmatch(value):
            raise ValueError(
                f"'{value}' is not a server (NetBIOS/host) name: letters, digits and '-', up to 63 characters"
            )
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        if not _WINDOWS_DIR.fullmatch(value):
            raise ValueError(f"'{value}' is not an absolute Windows folder such as C:\\Certs")
        return value.rstrip("\\") if len(value) > 3 else value

    # Derived connection facts, with per-version defaults -------------------------------------

    @property
    def auth(self) -> str:
        if self.connection.auth:
            return self.connection.auth
        return "kerberos" if self.version == 2010 else "negotiate"

    @property
    def spn_service(self) -> str:
        return self.connection.spn_service or DEFAULT_SPN_SERVICE[self.connection.transport]

    @property
    def spn_hostname(self) -> str:
        return self.connection.spn_hostname or self.connection.host

    @property
    def exchange_endpoint(self) -> Endpoint:
        """The session the Exchange cmdlets run in."""
        c = self.connection
        if self.version == 2010:
            scheme = c.scheme or "http"
            return Endpoint(scheme=scheme, port=c.port or (80 if scheme == "http" else 443),
                            path=c.path or "/PowerShell", configuration=c.configuration or "Microsoft.Exchange")
        scheme = c.scheme or "http"
        return Endpoint(scheme=scheme, port=c.port or (5985 if scheme == "http" else 5986),
                        path=c.path or "/wsman", configuration=c.configuration or "Microsoft.PowerShell")

    @property
    def system_endpoint(self) -> Endpoint:
        """The full-language session for files and certutil (the same one on 2007)."""
        if self.version == 2007:
            return self.exchange_endpoint
        c = self.connection
        scheme = c.system_scheme or c.scheme or "http"
        return Endpoint(scheme=scheme, port=c.system_port or (5985 if scheme == "http" else 5986),
                        path=c.system_path or "/wsman", configuration="Microsoft.PowerShell")

    @property
    def snapin(self) -> str | None:
        if self.version == 2007:
            return self.connection.snapin or EXCHANGE_2007_SNAPIN
        return None

    def services_for(self, certificate: CertificateSpec) -> list[Service]:
        return list(self.services) if self.services is not None else list(certificate.services)

    def names_for(self, certificate: CertificateSpec) -> list[str]:
        return list(self.client_names) if self.client_names is not None else list(certificate.domains)


# --- issuer and PFX password -------------------------------------------------------------------


class _IssuerBase(_Model):
    # Exchange refuses to import a certificate whose root it does not trust.
    install_root: StrictBool = Field(False, description="Install the CA's root into each server's LocalMachine\\Root "
                                     "(certutil -addstore Root) where a server does not trust it.")
    root: StrictStr | None = Field(None, description="The CA's root certificate file, relative to the playbook, "
                                   "when the CA's files do not include it.")


class ManualIssuer(_IssuerBase):
    type: Literal["manual"] = Field(description="manual: exmig writes the CSR; run again with --certificate FILE.")
    # Where the CSR is written for the admin, relative to the playbook.
    csr_file: StrictStr | None = Field(None, description="Where the CSR is written, relative to the playbook; "
                                       "default <CN>.csr.")


class FilesIssuer(_IssuerBase):
    type: Literal["files"] = Field(description="files: the CA's answer is on disk already.")
    certificate: StrictStr | None = Field(None, description="The CA's certificate, relative to the playbook.")
    chain: list[StrictStr] = Field([], description="The CA's intermediate certificate(s), relative to the playbook.")
    bundle: StrictStr | None = Field(None, description="The CA's .zip, .p7b or PEM bundle holding leaf and chain.")

    @model_validator(mode="after")
    def _something(self) -> FilesIssuer:
        if self.certificate is None and self.bundle is None:
            raise ValueError("give `certificate:` (with `chain:`) or `bundle:` (the CA's zip/p7b/pem)")
        return self


class LabIssuer(_IssuerBase):
    type: Literal["lab"] = Field(description="lab: the rehearsal lab's CA signs the request.")
    ca_dir: StrictStr | None = Field(None, description="The lab CA's folder; default .exmig/<playbook>.lab/ca beside "
                                     "the playbook.")


_EMAIL = re.compile(r"^[^@\s:,<>\"']+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$")
_DNS_NAME = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}"
                       r"[A-Za-z0-9])?\.?$")
_DNS_SERVER = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")


def _secret_from_env_or_prompt(value: SecretRef, what: str) -> SecretRef:
    if value.generate or value.lab_default:
        raise ValueError(f"{what} comes from `env: VARIABLE` or `prompt: true`")
    return value


class AcmeEab(_Model):
    """External account binding (RFC 8555 §7.3.4): the key id and HMAC key the CA's account page shows."""

    kid: StrictStr = Field(min_length=1, description="The EAB key identifier the CA gave.")
    hmac: SecretRef = Field(description="The EAB HMAC key (base64url, as the CA shows it): {env: VARIABLE} or "
                            "{prompt: true}, never the key itself.")

    @field_validator("hmac", mode="before")
    @classmethod
    def _no_inline_hmac(cls, value: Any) -> Any:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            raise ValueError("the HMAC key must not be written in the playbook; use `hmac: {env: VARIABLE}`")
        return value

    @field_validator("hmac")
    @classmethod
    def _hmac_source(cls, value: SecretRef) -> SecretRef:
        return _secret_from_env_or_prompt(value, "the HMAC key")

    @field_validator("kid")
    @classmethod
    def _kid(cls, value: str) -> str:
        if has_control(value) or " " in value:
            raise ValueError("must be the key id without spaces or control characters")
        return value


class AcmeDns(_Model):
    """dns-01 through RFC 2136 dynamic updates to the zone's primary, signed with a TSIG key."""

    server: StrictStr = Field(description="The zone's primary DNS server that takes the updates: host, host:port "
                              "or [v6]:port (port 53 by default).")
    zone: StrictStr = Field(description="The zone holding the names' _acme-challenge records, e.g. example.com.")
    tsig_name: StrictStr = Field(description="The TSIG key's name, as the DNS server knows it.")
    tsig_secret: SecretRef = Field(description="The TSIG key's secret (base64): {env: VARIABLE} or {prompt: true}.")
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5"] = Field(
        "hmac-sha256", description="The TSIG algorithm: hmac-sha256 (default), hmac-sha384, hmac-sha512, ...")
    propagation_seconds: Annotated[StrictInt, Field(ge=1, le=900)] = Field(
        60, description="How long to wait for every authoritative server of the zone to answer the record.")

    @field_validator("tsig_secret", mode="before")
    @classmethod
    def _no_inline_secret(cls, value: Any) -> Any:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            raise ValueError("the TSIG secret must not be written in the playbook; use `tsig_secret: {env: VARIABLE}`")
        return value

    @field_validator("tsig_secret")
    @classmethod
    def _secret_source(cls, value: SecretRef) -> SecretRef:
        return _secret_from_env_or_prompt(value, "the TSIG secret")

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        if not _DNS_SERVER.fullmatch(value):
            raise ValueError(f"'{value}' is not a DNS server (host, host:port or [v6]:port)")
        port = value.rsplit(":", 1)[1] if ":" in value.rsplit("]", 1)[-1] else "53"
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port} is out of range")
        return value

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_hostname(value)

    @field_validator("tsig_name")
    @classmethod
    def _tsig_name(cls, value: str) -> str:
        if not _DNS_NAME.fullmatch(value):
            raise ValueError(f"'{value}' is not a TSIG key name (a DNS name such as exmig-acme or exmig.example.com)")
        return value


class AcmeIssuer(_IssuerBase):
    type: Literal["acme"] = Field(description="acme: the request is finalized over ACME (RFC 8555).")
    directory: StrictStr = Field(description="The CA's ACME directory URL (https), e.g. "
                                 "https://acme-v02.api.letsencrypt.org/directory.")
    contact: StrictStr | None = Field(None, description="The account's contact e-mail address.")
    eab: AcmeEab | None = Field(None, description="External account binding, for CAs that require it (most "
                                "commercial ones): {kid, hmac: {env: VARIABLE}}.")
    challenge: Literal["dns-01", "http-01"] = Field(description="How the names are proven: dns-01 (TXT records "
                                                    "through RFC 2136) or http-01 (a token on each server's IIS).")
    dns: AcmeDns | None = Field(None, description="dns-01: the zone's DNS server, zone and TSIG key.")
    client_names: dict[Hostname, StrictStr | list[StrictStr]] | None = Field(
        None, description="http-01: which server(s) each name points at, {name: server}; default: every server whose "
        "client_names include the name.")
    ca_bundle: StrictStr | None = Field(None, description="A CA file (PEM) that verifies the ACME server's HTTPS, "
                                        "relative to the playbook; default: the system's trust store.")
    timeout: Annotated[StrictInt, Field(ge=10, le=3600)] = Field(180, description="Seconds the ACME step may wait "
                                                                 "for validation and issuance.")

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        if not re.fullmatch(r"https://[^\s/?#]+(/[^\s]*)?", value):
            raise ValueError(f"'{value}' is not an https URL; RFC 8555 servers are reached over HTTPS")
        return value

    @field_validator("contact")
    @classmethod
    def _contact(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.removeprefix("mailto:")
            if not _EMAIL.fullmatch(value):
                raise ValueError(f"'{value}' is not an e-mail address")
        return value

    @model_validator(mode="after")
    def _challenge_settings(self) -> AcmeIssuer:
        if self.challenge == "dns-01" and self.dns is None:
            raise ValueError("challenge dns-01 needs `dns: {server, zone, tsig_name, tsig_secret: {env: VARIABLE}}`")
        if self.challenge == "http-01" and self.dns is not None:
            raise ValueError("`dns:` is for challenge dns-01; remove it, or set challenge: dns-01")
        if self.challenge == "dns-01" and self.client_names is not None:
            raise ValueError("`client_names:` is for challenge http-01 (which server serves each name's token)")
        return self

    def servers_for(self, name: str, servers: list[Server], certificate: CertificateSpec) -> list[str]:
        """http-01: the servers that get the token for `name` (each a server's name, in playbook order)."""
        if self.client_names is not None and name in self.client_names:
            given = self.client_names[name]
            return [given] if isinstance(given, str) else list(given)
        return [s.name for s in servers if name in s.names_for(certificate)]


Issuer = Annotated[ManualIssuer | FilesIssuer | LabIssuer | AcmeIssuer, Field(discriminator="type")]


class RetryPolicy(_Model):
    attempts: Annotated[StrictInt, Field(ge=1, le=20, description="Tries per request (transient failures only).")] = 5
    max_seconds: Annotated[float, Field(gt=0, le=3600, description="Seconds one request may take with its "
                                        "retries.")] = 120.0
    initial_backoff: Annotated[float, Field(gt=0, le=60, description="Seconds before the first retry; doubled each "
                                            "time, with jitter.")] = 0.5
    max_backoff: Annotated[float, Field(gt=0, le=300, description="The longest wait between tries (seconds).")] = 10.0
    operation_timeout: Annotated[StrictInt, Field(ge=1, le=600, description="WSMan OperationTimeout: seconds the "
                                                  "server holds a Receive.")] = 20
    read_timeout: Annotated[StrictInt, Field(ge=2, le=900, description="HTTP read timeout (seconds); longer than "
                                             "operation_timeout.")] = 30

    @model_validator(mode="after")
    def _read_after_operation(self) -> RetryPolicy:
        if self.read_timeout <= self.operation_timeout:
            raise ValueError(
                f"read_timeout ({self.read_timeout}) must be longer than operation_timeout ({self.operation_timeout}): "
                "the server holds a Receive for up to operation_timeout before answering"
            )
        return self


class CoexistenceService(str, Enum):
    """The Exchange 2007 virtual directories the coexistence step moves to the legacy host."""

    OWA = "owa"
    EWS = "ews"
    OAB = "oab"
    ACTIVESYNC = "activesync"


class Coexistence(_Model):
    """2007-2010 coexistence (issue 17; sources in orchestrator/coexistence.py): each Exchange 2007 target's
    ExternalUrls move to the legacy host, while mail./autodiscover. move to Exchange 2010."""

    legacy_host: Hostname = Field(description="The legacy host name of the Exchange 2007 servers, e.g. "
                                  "legacy.example.com; must be in certificate.domains.")
    services: list[CoexistenceService] = Field(
        [CoexistenceService.OWA, CoexistenceService.EWS, CoexistenceService.OAB, CoexistenceService.ACTIVESYNC],
        min_length=1, description="The 2007 virtual directories whose ExternalUrl moves: owa, ews, oab, activesync.")
    activesync: Literal["legacy_url", "proxy"] = Field(
        "legacy_url", description="legacy_url: ActiveSync's ExternalUrl moves to the legacy host (Exchange 2010 "
        "redirects devices that can follow, proxies the others); proxy: it is cleared ($null) so 2010 proxies every "
        "device.")
    on_source: StrictBool = Field(False, description="Also change the source server (off: never).")

    @field_validator("legacy_host")
    @classmethod
    def _not_wildcard(cls, value: str) -> str:
        if value.startswith("*."):
            raise ValueError(f"'{value}' is a wildcard; the legacy host is one name, e.g. legacy.example.com")
        return value

    @field_validator("services")
    @classmethod
    def _unique(cls, value: list[CoexistenceService]) -> list[CoexistenceService]:
        if len(set(value)) != len(value):
            raise ValueError("a service is listed twice")
        return value

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(s.value for s in self.services)


class ServerLimits(_Model):
    """What each server allows one user; exmig stays within it. Defaults: WinRM 2.0 (every stock 2008 R2, and
    2003/2008 with WMF 2.0; PowerShell team, "Configuring WSMAN Limits", 2010) and Exchange 2010's default
    throttling policy (PowerShellMaxConcurrency 18)."""

    max_shells_per_user: Annotated[StrictInt, Field(ge=1, le=1000, description="WinRM MaxShellsPerUser: "
                                                    "sessions (shells) open at /wsman at once.")] = 5
    max_operations_per_user: Annotated[StrictInt, Field(ge=1, le=1000, description="WinRM "
                                                        "MaxConcurrentOperationsPerUser: requests in progress at "
                                                        "once.")] = 15
    exchange_max_sessions: Annotated[StrictInt, Field(ge=1, le=1000, description="Exchange 2010 "
                                                      "PowerShellMaxConcurrency: /PowerShell sessions at once.")] = 18
    idle_timeout: Annotated[float, Field(gt=0, le=86400, description="WinRM IdleTimeout (seconds): a shell idle "
                                         "this long is deleted by the server; exmig opens a new one first.")] = 180.0


class Playbook(_Model):
    certificate: CertificateSpec = Field(description="The certificate to request.")
    servers: Annotated[list[Server], Field(min_length=2, description="The Exchange servers: one source (2010) and "
                                           "the targets.")]
    issuer: Issuer = Field(description="How the signed certificate is obtained: manual, files, lab or acme.")
    pfx_password: SecretRef = Field(SecretRef(generate=True), description="The PFX password: {generate: true} "
                                    "(default), {env: VARIABLE} or {prompt: true}.")
    retry: RetryPolicy = Field(RetryPolicy(), description="Retries of transient failures, and the timeouts.")
    # Field order matters: each retire option's validator reads the ones above it (pydantic's info.data).
    retire_previous: StrictBool = Field(False, description="After the new certificate is enabled and verified on a "
                                        "server, remove each certificate that served one of its services before and "
                                        "serves none now (backed up first).")
    retire_self_signed: StrictBool = Field(False, description="With retire_previous: also remove Exchange's "
                                           "self-signed certificate when it served before.")
    retire_without_backup: StrictBool = Field(False, description="With retire_previous: remove a certificate that "
                                              "cannot be backed up (key not exportable, or no password you know); it "
                                              "can then never be rolled back.")
    backup_password: SecretRef | None = Field(None, validate_default=True, description="The password of the retired "
                                              "certificates' backups: {env: VARIABLE} or {prompt: true}; default: "
                                              "pfx_password when that is not generated.")
    rollback_on_failure: StrictBool = Field(False, description="When verification after enable fails on a server, "
                                            "re-enable there what served before.")
    coexistence: Coexistence | None = Field(None, description="Exchange 2007-2010 coexistence: the 2007 targets' "
                                            "ExternalUrls move to a legacy host name.")
    limits: ServerLimits = Field(ServerLimits(), description="What each server allows one user (shells, concurrent "
                                 "operations, Exchange sessions, idle time); exmig never exceeds it.")

    @field_validator("pfx_password", mode="before")
    @classmethod
    def _no_inline_pfx_password(cls, value: Any) -> Any:
        return _reject_inline_secret(value, "pfx_password")

    @field_validator("backup_password", mode="before")
    @classmethod
    def _no_inline_backup_password(cls, value: Any) -> Any:
        return _reject_inline_secret(value, "backup_password")

    @field_validator("retire_self_signed", "retire_without_backup")
    @classmethod
    def _with_retire_previous(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not info.data.get("retire_previous", False):
            raise ValueError(f"only applies with `retire_previous: true`; set that too, or remove {info.field_name}")
        return value

    @field_validator("backup_password")
    @classmethod
    def _backup_password_known(cls, value: SecretRef | None, info: ValidationInfo) -> SecretRef | None:
        # The --save-pfx rule (orchestrator/execute.py): a generated password is never shown or kept.
        if value is not None and value.generate:
            raise ValueError("a generated password is never shown, so nobody could open the backups; use "
                             "`backup_password: {env: VARIABLE}` or `backup_password: {prompt: true}`")
        pfx = info.data.get("pfx_password")
        if (value is None and info.data.get("retire_previous") and not info.data.get("retire_without_backup")
                and isinstance(pfx, SecretRef) and pfx.generate):
            raise ValueError("retire_previous backs up each certificate it removes, and pfx_password is generated "
                             "for the run and never shown, so nobody could open the backups; set "
                             "`backup_password: {env: VARIABLE}` or `backup_password: {prompt: true}` (or "
                             "`retire_without_backup: true`)")
        return value

    @model_validator(mode="after")
    def _roles(self) -> Playbook:
        sources = [s for s in self.servers if s.role is Role.SOURCE]
        if len(sources) != 1:
            raise ValueError(
                f"exactly one server must have `role: source` (the one where the request is made); "
                f"found {len(sources)}"
            )
        names = [s.name.lower() for s in self.servers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"server names must be unique; '{duplicates[0]}' is used twice")
        lab_defaults = [s.name for s in self.servers
                        if s.credentials.password is not None and s.credentials.password.lab_default]
        if lab_defaults and not isinstance(self.issuer, LabIssuer):
            raise ValueError(
                f"server {lab_defaults[0]}: `lab_default: true` is only for lab playbooks (issuer type lab); "
                "a real server's password comes from `env:` or `prompt:`"
            )
        for server in self.servers:
            unknown = [n for n in server.client_names or [] if n not in self.certificate.domains]
            if unknown:
                raise ValueError(f"server {server.name}: client_names {unknown[0]} is not in certificate.domains")
        if not self.certificate.private_key_exportable:
            raise ValueError(
                "certificate.private_key_exportable must be true: the certificate goes to other servers, "
                "and a key that cannot be exported cannot be moved (the seed's -privatekeyExportable:$true)"
            )
        return self

    @property
    def source(self) -> Server:
        return next(s for s in self.servers if s.role is Role.SOURCE)

    @property
    def targets(self) -> list[Server]:
        return [s for s in self.servers if s.role is Role.TARGET]

    def server(self, name: str) -> Server:
        for s in self.servers:
            if s.name.lower() == name.lower():
                return s
        raise KeyError(name)


class LoadedPlaybook(BaseModel):
    """A validated playbook together with where it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    playbook: Playbook
    path: Path
    source_map: SourceMap

    @property
    def directory(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A file named in the playbook, relative to the playbook's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.directory / p


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    msg = str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown key; check the spelling (see README: playbook reference)"
    if kind == "missing":
        return "is required"
    if kind.startswith("literal_error"):
        expected = error.get("ctx", {}).get("expected", "")
        return f"{error.get('input')!r} is not allowed; use {expected}"
    if kind in ("string_type", "int_type", "bool_type", "list_type", "dict_type", "model_type",
                "float_type", "model_attributes_type"):
        wanted = {"string_type": "text", "int_type": "a whole number", "bool_type": "true or false",
                  "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
                  "model_attributes_type": "a mapping", "float_type": "a number"}[kind]
        return f"must be {wanted}, not {type(error.get('input')).__name__} {error.get('input')!r}"
    if kind == "union_tag_invalid":
        return f"{error.get('ctx', {}).get('tag')!r} is not an issuer type; use manual, files, lab or acme"
    if kind == "union_tag_not_found":
        return "needs `type:` (manual, files, lab or acme)"
    if kind == "enum":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{error.get('input')!r} is not allowed; use {expected}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg


def _first_error(exc: ValidationError, source: SourceMap) -> PlaybookError:
    errors = exc.errors()
    # Union branches (strict str | model) report once per branch; the model branch says more.
    error = max(errors, key=lambda e: (len(e["loc"]), e["type"] != "string_type"))
    loc = [part for part in error["loc"] if not (isinstance(part, str) and part in ("manual", "files", "lab", "acme",
                                                                                     "SecretRef", "str"))]
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = [*loc, "type"] if error["type"] == "union_tag_invalid" else loc
    return source.error(loc, _message(error))


def acme_problem(playbook: Playbook) -> tuple[tuple[str | int, ...], str] | None:
    """(field, problem) where an acme issuer does not fit the playbook's names and servers; None when it fits."""
    issuer = playbook.issuer
    if not isinstance(issuer, AcmeIssuer):
        return None
    domains = playbook.certificate.domains
    if issuer.challenge == "dns-01" and issuer.dns is not None:
        zone = issuer.dns.zone
        outside = [d for d in domains if d.removeprefix("*.") != zone and not d.removeprefix("*.").endswith("." + zone)]
        if outside:
            return (("issuer", "dns", "zone"), f"{zone} does not hold {outside[0]}; name the zone its _acme-challenge "
                    "record is in (one zone for all certificate.domains)")
        return None
    wildcards = [i for i, d in enumerate(domains) if d.startswith("*.")]
    if wildcards:
        return (("certificate", "domains", wildcards[0]), f"the wildcard {domains[wildcards[0]]} cannot be proven over "
                "issuer.challenge http-01 (RFC 8555 §7.1.3: wildcards only over dns-01); use challenge: dns-01")
    known = {s.name.lower() for s in playbook.servers}
    for name, given in (issuer.client_names or {}).items():
        if name not in domains:
            return (("issuer", "client_names", name), f"{name} is not in certificate.domains")
        for server in [given] if isinstance(given, str) else given:
            if server.lower() not in known:
                return (("issuer", "client_names", name), f"there is no server '{server}' in servers")
    for name in domains:
        if not issuer.servers_for(name, playbook.servers, playbook.certificate):
            return (("issuer", "client_names"), f"no server answers http://{name}/ for http-01; say which one with "
                    f"`client_names: {{{name}: SERVER}}`")
    return None


def parse_playbook(data: Any, source: SourceMap) -> Playbook:
    if not isinstance(data, dict):
        raise source.error((), "a playbook is a YAML mapping with certificate, servers and issuer")
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, source) from None
    problem = acme_problem(playbook)
    if problem is not None:
        raise source.error(*problem)
    _check_names(playbook, source)
    return playbook


def _check_names(playbook: Playbook, source: SourceMap) -> None:
    """Rules between certificate.domains and the sections that name hosts, reported at the naming field's line."""
    domains = playbook.certificate.domains
    for index, accepted in enumerate(playbook.certificate.uncovered_ok):
        if any_covers(domains, accepted.name):
            raise source.error(("certificate", "uncovered_ok", index, "name"),
                               f"'{accepted.name}' is covered by certificate.domains; remove it from uncovered_ok")
    coexistence = playbook.coexistence
    if coexistence is not None and not any_covers(domains, coexistence.legacy_host):
        raise source.error(("coexistence", "legacy_host"),
                           f"{coexistence.legacy_host} is not in certificate.domains; add it there (the Exchange 2007 "
                           "servers present this certificate under that name)")


def load_playbook(path: Path | str) -> LoadedPlaybook:
    p = Path(path)
    data, source = load_yaml(p)
    playbook = parse_playbook(data, source)
    loaded = LoadedPlaybook(playbook=playbook, path=p.resolve(), source_map=source)
    _check_files(loaded)
    return loaded


def _check_files(loaded: LoadedPlaybook) -> None:
    """Files the playbook names must exist now, not halfway through a run."""
    issuer = loaded.playbook.issuer
    named: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(issuer, FilesIssuer):
        if issuer.certificate:
            named.append((("issuer", "certificate"), issuer.certificate))
        if issuer.bundle:
            named.append((("issuer", "bundle"), issuer.bundle))
        named += [(("issuer", "chain", i), c) for i, c in enumerate(issuer.chain)]
    if issuer.root:
        named.append((("issuer", "root"), issuer.root))
    if isinstance(issuer, AcmeIssuer) and issuer.ca_bundle:
        named.append((("issuer", "ca_bundle"), issuer.ca_bundle))
    for loc, name in named:
        if not loaded.resolve(name).is_file():
            raise loaded.source_map.error(loc, f"file '{name}' not found (relative to the playbook's folder)")
    for index, server in enumerate(loaded.playbook.servers):
        if server.connection.ca_file and not loaded.resolve(server.connection.ca_file).is_file():
            raise loaded.source_map.error(
                ("servers", index, "connection", "ca_file"), f"file '{server.connection.ca_file}' not found"
            )
