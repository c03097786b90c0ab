"""Lab settings: behaviours that differ between real servers or that the reference leaves UNCONFIRMED.

Every error text the Exchange emulation produces that is not a generic PowerShell binding text
lives in `ERROR_TEXTS`, one row per situation, so a text seen on a real server can be dropped in
without touching the cmdlet code. `confirmed=False` rows are the lab's own plausible choice.

Where the lab follows real servers (issue 16), and from what:
* Import of a CA response whose root is not trusted fails: Exchange 2013's certificate code (as issue 16
  reports it); 2010 UNCONFIRMED -> `import_requires_trusted_root` (on). Wording of the error: the lab's.
* "A special Rpc error occurs on server <server>: <inner>" wrapping of certificate-service errors: reference
  §3.2 [S9] (2013+ capture; the prefix appears with -Server); 2010 UNCONFIRMED -> `rpc_error_wrapping` (on).
* Inner texts "The source data cannot be imported or the wrong password was specified.", "Cannot import
  certificate. A certificate with the thumbprint <T> already exists.", "The private key couldn't be exported as
  PKCS-12. It either couldn't be accessed or isn't exportable.": server output quoted in Microsoft Q&A threads
  (collected in issue 16; the threads are not in the stored references); 2010 UNCONFIRMED.
* Export of a keyed certificate without -Password is an error: 2013's code (issue 16); 2010 UNCONFIRMED ->
  `export_keyed_needs_password` (on).
* Status/RootCAType (certificate.status_of): self-signed outside \\Root Valid/None, untrusted root Untrusted/
  Unknown, broken chain Invalid, pending request PendingRequest/Unknown (reference §1.5, §1.7 [S1h]); RootCAType
  numbers in the documentation's order, Registry = 3 (issue 16), others UNCONFIRMED.
* RevocationCheckFailure when the CA's lists are out of reach (Status value set, reference §1.5 [S1]); when a
  2010 server reports it instead of Valid is UNCONFIRMED -> `revocation_offline` (off).
* Services as a computed view (model.services_of), Enable without -Force binding IIS/POP/IMAP before the SMTP
  prompt, Remove-ExchangeCertificate refusing only the default SMTP certificate: issue 16's account of real
  servers; which configured name 2010's POP/IMAP use after Enable is UNCONFIRMED (the lab uses the CN).
* A prompt meeting a client that offers a host UI is a PromptForChoice host call (reference §3.1's emulator rule;
  pypsrp's PSHostUserInterface.PromptForChoice [S13]); the caption "Confirm" and the Yes/No choices of
  ShouldContinue are the lab's rendering, UNCONFIRMED for Exchange 2010.
* RawData-only objects: the CSS-Exchange Get-ExchangeCertificate CLIXML captures (2016/2019: Props hold only
  RawData, MS holds PSComputerName, RunspaceId, PSShowComputerName, SerializationData); 2010 UNCONFIRMED ->
  `rawdata_only_output` (off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.lab.registry import ErrorCategory, LabError


@dataclass(frozen=True)
class ErrorText:
    """One error row. `message` is a str.format template; `error_id` gets ",<implementing type>"."""

    message: str
    error_id: str
    category: ErrorCategory
    exception_type: str
    confirmed: bool
    source: str = ""
    # Raised by Exchange's certificate service rather than the task: on 2010 with -Server the text comes
    # wrapped as "A special Rpc error occurs on server <server>: <text>" in an InvalidOperationException.
    service: bool = False


# Keys are stable names used by the cmdlet code; values can be swapped per lab.
ERROR_TEXTS: dict[str, ErrorText] = {
    # Generic PowerShell text when a ShouldContinue/ShouldProcess prompt meets a host that cannot prompt.
    "prompt_unsupported": ErrorText(
        "A command that prompts the user failed because the host program or the command type does not "
        "support user interaction. The host was attempting to request confirmation with the following "
        "message: {prompt}",
        "HostFunctionNotImplemented",
        ErrorCategory.NotImplemented,
        "System.Management.Automation.Host.HostException",
        confirmed=True,
        source="reference §3.1 [S30]; error id is PowerShell's",
    ),
    # The prompt bodies themselves (inserted into prompt_unsupported).
    "smtp_overwrite_prompt": ErrorText(
        "Overwrite the existing default SMTP certificate?\r\n\r\n"
        "Current certificate: '{current}' (expires {current_expiry})\r\n"
        "Replace it with certificate: '{new}' (expires {new_expiry})",
        "",
        ErrorCategory.NotSpecified,
        "",
        confirmed=True,
        source="reference §3.1 [S7]",
    ),
    "remove_prompt": ErrorText(
        "Are you sure you want to perform this action?\r\n"
        'Removing certificate with thumbprint "{thumbprint}".',
        "",
        ErrorCategory.NotSpecified,
        "",
        confirmed=False,
    ),
    "should_process_prompt": ErrorText(
        "Are you sure you want to perform this action?\r\n"
        'Performing operation "{command}" on Target "{target}".',
        "",
        ErrorCategory.NotSpecified,
        "",
        confirmed=False,
        source="PowerShell ShouldProcess wording; Exchange's own target text UNCONFIRMED",
    ),
    # Enable on a certificate without private key. 2010 wording UNCONFIRMED (2013+ text from [S9]).
    "private_key_missing": ErrorText(
        "The certificate with thumbprint {thumbprint} was found but is not valid for use with "
        "Exchange Server (reason: PrivateKeyMissing).",
        "DA6D9EA1",
        ErrorCategory.InvalidOperation,
        "System.InvalidOperationException",
        confirmed=False,
        source="reference §3.2 [S9] (2013+ wording, with the Rpc prefix)",
        service=True,
    ),
    "thumbprint_not_found": ErrorText(
        "The certificate with thumbprint {thumbprint} was not found.",
        "9E4F2A17",
        ErrorCategory.ObjectNotFound,
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        confirmed=False,
    ),
    "server_not_found": ErrorText(
        "The operation couldn't be performed because object '{server}' couldn't be found on "
        "'{domain_controller}'.",
        "8FF9A1E3",
        ErrorCategory.ObjectNotFound,
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        confirmed=False,
    ),
    "federation_not_allowed": ErrorText(
        "You can't use the Enable-ExchangeCertificate cmdlet to enable a certificate for federation.",
        "4C1B06D2",
        ErrorCategory.InvalidArgument,
        "System.ArgumentException",
        confirmed=False,
        source="doc sentence [S1], used as the error text",
    ),
    "already_exists": ErrorText(
        "Cannot import certificate. A certificate with the thumbprint {thumbprint} already exists.",
        "3A2C8D9B",
        ErrorCategory.ResourceExists,
        "System.InvalidOperationException",
        confirmed=False,
        source="inner text as quoted from servers in issue 16 (Microsoft Q&A threads); 2010 UNCONFIRMED",
        service=True,
    ),
    # A PFX Windows cannot decrypt (wrong password, or AES/PBES2 it cannot read) is reported as a password
    # error; both rows use that text by default but stay separately editable.
    "pfx_wrong_password": ErrorText(
        "The source data cannot be imported or the wrong password was specified.",
        "1E4A7B33",
        ErrorCategory.InvalidData,
        "System.Security.Cryptography.CryptographicException",
        confirmed=False,
        source="inner text as quoted from servers in issue 16 (Microsoft Q&A threads); 2010 UNCONFIRMED",
        service=True,
    ),
    "pfx_unsupported_encryption": ErrorText(
        "The source data cannot be imported or the wrong password was specified.",
        "1E4A7B34",
        ErrorCategory.InvalidData,
        "System.Security.Cryptography.CryptographicException",
        confirmed=False,
        source="pre-2016 Windows cannot decrypt PBES2/AES PKCS#12 and reports a password error",
        service=True,
    ),
    "unknown_format": ErrorText(
        "Cannot find the requested object.",
        "7D0C5E61",
        ErrorCategory.InvalidData,
        "System.Security.Cryptography.CryptographicException",
        confirmed=False,
        source="Windows CRYPT_E_NOT_FOUND text for unrecognised certificate data",
    ),
    "export_not_exportable": ErrorText(
        "The private key couldn't be exported as PKCS-12. It either couldn't be accessed or isn't exportable.",
        "B3E2F0A4",
        ErrorCategory.InvalidOperation,
        "System.InvalidOperationException",
        confirmed=False,
        source="inner text as quoted from servers in issue 16 (Microsoft Q&A threads); 2010 UNCONFIRMED",
        service=True,
    ),
    "export_no_private_key": ErrorText(
        "The certificate with thumbprint {thumbprint} doesn't have a private key, so it can't be exported "
        "with a password.",
        "B3E2F0A5",
        ErrorCategory.InvalidOperation,
        "System.InvalidOperationException",
        confirmed=False,
        service=True,
    ),
    # Export of a certificate that has a private key, without -Password: 2013's code refuses rather than
    # export the bare certificate. Text and 2010 behaviour UNCONFIRMED (setting export_keyed_needs_password).
    "export_needs_password": ErrorText(
        "The certificate with thumbprint {thumbprint} has a private key; specify the Password parameter "
        "to export it.",
        "B3E2F0A6",
        ErrorCategory.InvalidArgument,
        "System.InvalidOperationException",
        confirmed=False,
        source="Exchange 2013 certificate code (per issue 16); wording the lab's",
        service=True,
    ),
    # Import of a CA response whose chain ends at a root the server does not trust: Exchange 2013's
    # certificate code refuses it. Text and 2010 behaviour UNCONFIRMED (setting import_requires_trusted_root).
    "untrusted_root": ErrorText(
        "The certificate with thumbprint {thumbprint} can't be imported: its chain doesn't end at a root "
        "certificate in the Trusted Root Certification Authorities store ({root}).",
        "C41D7E02",
        ErrorCategory.InvalidOperation,
        "System.InvalidOperationException",
        confirmed=False,
        source="Exchange 2013 certificate code refuses it (issue 16); wording the lab's",
        service=True,
    ),
    "cert_in_use": ErrorText(
        "You can't remove the certificate with thumbprint {thumbprint} because it's being used "
        "(services: {services}).",
        "5F61C2D8",
        ErrorCategory.InvalidOperation,
        "System.InvalidOperationException",
        confirmed=False,
        source="doc sentence [S1] \"You can't remove the certificate that's being used.\"; real servers refuse only "
        "the default SMTP (internal transport) certificate (issue 16)",
        service=True,
    ),
    "invalid_domain_name": ErrorText(
        "The domain name '{domain}' isn't valid. Domain names may contain only the characters a through z, "
        "0 through 9, the hyphen (-) and periods, and can't be longer than 255 characters.",
        "ParameterArgumentValidationError",
        ErrorCategory.InvalidArgument,
        "System.Management.Automation.ParameterBindingException",
        confirmed=False,
    ),
    "invalid_subject_name": ErrorText(
        "Cannot bind parameter 'SubjectName'. Cannot convert value \"{subject}\" to type "
        "\"System.Security.Cryptography.X509Certificates.X500DistinguishedName\". Error: \"{reason}\"",
        "CannotConvertArgumentNoMessage",
        ErrorCategory.InvalidArgument,
        "System.Management.Automation.ParameterBindingException",
        confirmed=False,
    ),
    "invalid_key_size": ErrorText(
        "Cannot validate argument on parameter 'KeySize'. The argument \"{value}\" does not belong to the "
        "set \"1024,2048,4096\" specified by the ValidateSet attribute. Supply an argument that is in the "
        "set and then try the command again.",
        "ParameterArgumentValidationError",
        ErrorCategory.InvalidData,
        "System.Management.Automation.ParameterBindingValidationException",
        confirmed=False,
        source="PowerShell ValidateSet text; whether Exchange validates KeySize this way is UNCONFIRMED",
    ),
    "invalid_services": ErrorText(
        "Cannot bind parameter 'Services'. Cannot convert value \"{value}\" to type "
        "\"Microsoft.Exchange.Data.Directory.SystemConfiguration.AllowedServices\". Error: \"Unable to "
        "match the identifier name {name} to a valid enumerator name.  Specify one of the following "
        "enumerator names and try again: {allowed}\"",
        "CannotConvertArgumentNoMessage",
        ErrorCategory.InvalidArgument,
        "System.Management.Automation.ParameterBindingException",
        confirmed=True,
        source="PowerShell enum conversion text",
    ),
    "file_not_found": ErrorText(
        "Could not find file '{path}'.",
        "0F3B5C21",
        ErrorCategory.ObjectNotFound,
        "System.IO.FileNotFoundException",
        confirmed=False,
        source=".NET FileNotFoundException text; Exchange 2007 wrapping UNCONFIRMED",
    ),
    "directory_not_found": ErrorText(
        "Could not find a part of the path '{path}'.",
        "0F3B5C22",
        ErrorCategory.ObjectNotFound,
        "System.IO.DirectoryNotFoundException",
        confirmed=False,
        source=".NET DirectoryNotFoundException text; Exchange 2007 wrapping UNCONFIRMED",
    ),
    # Client access (issue 17). A virtual directory, Rpc directory or connector named by -Identity that is not there:
    # the ManagementObjectNotFoundException form of server_not_found (2010 wording; 2007's UNCONFIRMED).
    "object_not_found": ErrorText(
        "The operation couldn't be performed because object '{identity}' couldn't be found on "
        "'{domain_controller}'.",
        "8FF9A1E4",
        ErrorCategory.ObjectNotFound,
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        confirmed=False,
    ),
    # ExternalUrl/InternalUrl/AutoDiscoverServiceInternalUri must be absolute http(s) URLs: a relative value binds
    # (PowerShell's [Uri] takes it) and the task's property validation refuses it. Exchange's wording UNCONFIRMED.
    "url_not_absolute": ErrorText(
        "The value \"{value}\" of property \"{property}\" isn't valid. The URL must be an absolute URL, for example "
        "https://mail.contoso.com/owa.",
        "5E2B7A10",
        ErrorCategory.InvalidArgument,
        "Microsoft.Exchange.Data.DataValidationException",
        confirmed=False,
        source="the rule (absolute http/https) per the cmdlet docs' examples; wording the lab's",
    ),
    "url_bad_scheme": ErrorText(
        "The value \"{value}\" of property \"{property}\" isn't valid. The URL scheme \"{scheme}\" isn't "
        "supported; use http or https.",
        "5E2B7A11",
        ErrorCategory.InvalidArgument,
        "Microsoft.Exchange.Data.DataValidationException",
        confirmed=False,
        source="wording the lab's",
    ),
    "outlook_anywhere_enabled": ErrorText(
        "Outlook Anywhere is already enabled on server {server}.",
        "6C1D3B20",
        ErrorCategory.InvalidOperation,
        "System.InvalidOperationException",
        confirmed=False,
    ),
    "file_exists": ErrorText(
        "The file '{path}' already exists. Use the Force parameter to overwrite it.",
        "6A0E7F12",
        ErrorCategory.ResourceExists,
        "System.IO.IOException",
        confirmed=False,
    ),
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class LabSettings:
    """Optional behaviours of an emulated Exchange server (one instance may serve several servers).

    Defaults describe the lab's best guess of a stock Exchange 2010 SP3 / 2007 SP3 server.
    """

    # Remote Get-ExchangeCertificate output lacks Services (reported for 2013+, UNCONFIRMED on 2010) [§2].
    omit_services_in_remote_output: bool = False
    # Only RawData comes back for certificate objects (CSS-Exchange serialization-signing case) [§2].
    rawdata_only_output: bool = False
    # PEM armour of the 2010 -GenerateRequest text: "NEW CERTIFICATE REQUEST" (seed blog's file) or
    # "CERTIFICATE REQUEST". UNCONFIRMED which one Exchange emits [§9].
    request_pem_header: str = "NEW CERTIFICATE REQUEST"
    # The hash New-ExchangeCertificate -GenerateRequest signs the request with: SHA-1 ("sha1WithRSAEncryption"),
    # which Exchange's legacy CryptoAPI request path always used. Seen on Exchange 2019 (chris2511/xca issue
    # #491: a New-ExchangeCertificate -GenerateRequest request shows "sha1WithRSAEncryption") and 2013 ("Exchange
    # 2013 doesn't seem to have a mechanism built into it that generates a SHA-2 cert request", thomasrayner.ca,
    # "Renewing Exchange 2013 Certificates SHA-256 Style"); for 2010, which is older, UNCONFIRMED by a capture.
    # CAs that refuse SHA-1 requests (Let's Encrypt since 2022, letsencrypt/boulder#6374) refuse these.
    request_signature_hash: str = "sha1"
    # Whether the restricted Microsoft.Exchange endpoint also exposes Get-/Set-Content etc. (UNCONFIRMED).
    exchange_endpoint_has_file_cmdlets: bool = False
    # Lab CA roots installed into \Root of every server as *third-party* roots (RootCAType ThirdParty),
    # like a commercial CA present in Windows' root program.
    third_party_roots: tuple[bytes, ...] = ()
    install_third_party_roots: bool = True
    # Exchange 2007 Import-ExchangeCertificate has no -PrivateKeyExportable; whether a PFX import keeps
    # the key exportable is UNCONFIRMED. The lab chooses not exportable.
    pfx_import_exportable_2007: bool = False
    # Export of a certificate with -Password includes the issuing chain (intermediates, not the root).
    export_includes_chain: bool = True
    # Exchange 2007's Enable-ExchangeCertificate parameters beyond Thumbprint/Services are UNCONFIRMED.
    enable_2007_has_force: bool = True
    enable_2007_has_donotrequiressl: bool = True
    # Get-FileHash needs PowerShell 4.0; Windows 2008/2008 R2 ship 2.0. On by default because exmig's
    # rehearsal uses it; turn off to rehearse against a PS 2.0 server.
    has_get_filehash: bool = True
    # Windows PowerShell behind Microsoft.PowerShell (/wsman): "2.0" as Windows 2008 R2 ships it and KB 968929
    # installs it on 2003/2008 (§5); "3.0", "4.0" or "5.1" rehearse a host upgraded with a later WMF. It sets the
    # PSRP protocol version the endpoint advertises (2.0 -> 2.1, 3.0/4.0 -> 2.2, 5.1 -> 2.3), and with it whether
    # one pipeline may carry several statements (2.2 and later).
    windows_powershell: str = "2.0"
    # PowerShell behind Exchange 2010's IIS-hosted Microsoft.Exchange endpoint. UNCONFIRMED: the lab assumes 2.0
    # (Exchange 2010 is built on PowerShell 2.0) whatever WMF the host has.
    exchange_powershell: str = "2.0"
    # In a lab with a Kerberos realm, Exchange 2010's /PowerShell (IIS, Windows authentication with Kerberos)
    # refuses NTLM: a handshake that ends in NTLM gets an HTTP 500 SOAP fault with no details, which pypsrp
    # reports as "Received a WSManFault message. (No details returned by the server)" (jborean93/pypsrp
    # issue #187, Exchange 2019; the maintainer: "Exchange only really supports Kerberos auth and not NTLM").
    # The exact response on 2010 is UNCONFIRMED. /wsman and 2007 keep Negotiate with NTLM and Kerberos.
    exchange_kerberos_only: bool = True
    # PBKDF iteration count of exported PKCS#12 files (3DES/SHA1, readable by Windows 2008).
    pfx_kdf_rounds: int = 2000
    # Import of a CA response whose chain does not end at a root in \\Root fails (Exchange 2013's certificate
    # code refuses it; 2010 likely, UNCONFIRMED). On by default: the lab must not be kinder than a server.
    import_requires_trusted_root: bool = True
    # Export-ExchangeCertificate of a certificate with a private key and no -Password is an error (2013's
    # code; 2010 UNCONFIRMED), never the bare certificate.
    export_keyed_needs_password: bool = True
    # 2010 certificate-service errors come as "A special Rpc error occurs on server <server>: <inner text>"
    # when -Server was given (reference §3.2 [S9]; issue 16). 2007 has no -Server and no wrapping.
    rpc_error_wrapping: bool = True
    # The server cannot reach the CA's revocation list (no internet access, common for Exchange servers): a
    # CA-issued certificate whose chain is otherwise good reports Status RevocationCheckFailure. Off by default.
    revocation_offline: bool = False
    # Enable-ExchangeCertificate without -Force binds IIS/POP/IMAP before it asks the SMTP overwrite question, so
    # a session that cannot answer is left half-changed (issue 16; 2010 UNCONFIRMED).
    enable_applies_before_smtp_prompt: bool = True
    # Servers (names, any case) whose Enable-ExchangeCertificate answers success but leaves the Default Web Site's
    # binding as it was: the failure only a binding check catches (issue 18's community script). A fault, off.
    enable_keeps_iis_binding: frozenset[str] = frozenset()
    # New servers start with a previous commercial certificate beside the self-signed one (previous.py). Off.
    previous_certificate: bool = False
    # Client access (issue 17, sources in webconfig.py): the external host name given to setup, which makes every
    # virtual directory's ExternalUrl https://<host>/<path> on a fresh install (None: ExternalUrl empty, as when setup
    # was not asked); whether the OAB's InternalUrl is http (2010 default; 2007 UNCONFIRMED).
    external_host_at_setup: str | None = None
    oab_internal_http: bool = True
    # Time source for certificate validity and Status; tests move it.
    clock: Callable[[], datetime] = _utcnow
    error_texts: dict[str, ErrorText] = field(default_factory=lambda: dict(ERROR_TEXTS))

    def error(self, key: str, command: str, implementing_type: str, rpc_server: str | None = None,
              **fmt: Any) -> LabError:
        """Build the LabError of table row `key` raised by `command` (implemented by `implementing_type`).

        `rpc_server`: the -Server a 2010 cmdlet was given; a certificate-service row is then wrapped in
        the "A special Rpc error occurs on server" text (reference §3.2 [S9]; issue 16)."""
        row = self.error_texts[key]
        error_id = f"{row.error_id},{implementing_type}" if row.error_id else implementing_type
        message = row.message.format(**fmt)
        exception_type = row.exception_type
        if row.service and rpc_server and self.rpc_error_wrapping:
            message = f"A special Rpc error occurs on server {rpc_server}: {message}"
            exception_type = "System.InvalidOperationException"
        return LabError(
            message=message,
            error_id=error_id,
            category=row.category,
            exception_type=exception_type,
            target=fmt.get("thumbprint"),
            activity=command,
        )

    def keeps_iis_binding(self, server: str) -> bool:
        return server.lower() in {name.lower() for name in self.enable_keeps_iis_binding}

    def text(self, key: str, **fmt: Any) -> str:
        return self.error_texts[key].message.format(**fmt)
