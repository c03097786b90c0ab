"""Parameter tables of the certificate cmdlets, per Exchange version (reference §1.0-§1.6).

Positions are 0-based as in PowerShell metadata (the docs' "Position 1" is the first positional).
Parameter set names are the lab's (Exchange's internal names are not documented).
"""

from __future__ import annotations

from orchestrator.lab.exchange.settings import LabSettings
from orchestrator.lab.registry import Kind, Parameter

S, SW, B, I, BY, SS, O, SA = (
    Kind.STRING, Kind.SWITCH, Kind.BOOL, Kind.INT, Kind.BYTES, Kind.SECURE_STRING, Kind.OBJECT, Kind.STRINGS,
)

# PowerShell's common parameters, accepted by every cmdlet.
COMMON = (
    Parameter("Verbose", SW), Parameter("Debug", SW), Parameter("ErrorAction", S),
    Parameter("WarningAction", S), Parameter("ErrorVariable", S), Parameter("WarningVariable", S),
    Parameter("OutVariable", S), Parameter("OutBuffer", I),
)
SHOULD_PROCESS = (Parameter("Confirm", SW), Parameter("WhatIf", SW))


def with_common(*params: Parameter, should_process: bool = True) -> tuple[Parameter, ...]:
    """A cmdlet's parameters with -WhatIf/-Confirm (unless it only reads) and PowerShell's common parameters."""
    return tuple(params) + (SHOULD_PROCESS if should_process else ()) + COMMON


def new_certificate(version: str) -> tuple[tuple[Parameter, ...], str]:
    req, crt = ("Request",), ("Certificate",)
    common = [
        Parameter("DomainController", S), Parameter("DomainName", SA), Parameter("FriendlyName", S),
        Parameter("IncludeAcceptedDomains", SW), Parameter("IncludeAutoDiscover", SW),
        Parameter("Instance", O), Parameter("KeySize", I), Parameter("PrivateKeyExportable", B),
        Parameter("SubjectName", S),
    ]
    if version == "2007":
        specific = [
            Parameter("Services", SA, sets=crt),
            Parameter("BinaryEncoded", SW, sets=req), Parameter("Force", SW, sets=req),
            Parameter("GenerateRequest", SW, sets=req), Parameter("Path", S, sets=req),
        ]
    else:
        common += [
            Parameter("Force", SW), Parameter("IncludeServerFQDN", SW), Parameter("IncludeServerNetBIOSName", SW),
            Parameter("Server", S), Parameter("SubjectKeyIdentifier", S),
        ]
        specific = [
            Parameter("Services", SA, sets=crt),
            Parameter("BinaryEncoded", SW, sets=req), Parameter("GenerateRequest", SW, sets=req),
        ]
    return with_common(*common, *specific), "Certificate"


def import_certificate(version: str) -> tuple[tuple[Parameter, ...], str]:
    common = [Parameter("DomainController", S), Parameter("FriendlyName", S), Parameter("Password", SS)]
    if version == "2007":
        # Microsoft's 2007 procedure runs `Import-ExchangeCertificate C:\filepath`: Path is positional.
        specific = [
            Parameter("Path", S, mandatory=True, position=0, sets=("Path",)),
            Parameter("Instance", SA, sets=("Instance",)),
        ]
        return with_common(*common, *specific), "Path"
    common += [Parameter("PrivateKeyExportable", B), Parameter("Server", S)]
    specific = [
        Parameter("FileData", BY, mandatory=True, sets=("FileData",)),
        Parameter("Instance", SA, mandatory=True, sets=("Instance",)),
    ]
    return with_common(*common, *specific), "FileData"


def _thumbprint(positional: bool) -> Parameter:
    return Parameter(
        "Thumbprint", S, mandatory=True, position=0 if positional else None, from_pipeline_property=True
    )


def export_certificate(version: str) -> tuple[Parameter, ...]:
    if version == "2007":
        return with_common(
            _thumbprint(False), Parameter("BinaryEncoded", SW), Parameter("DomainController", S),
            Parameter("Force", SW), Parameter("Password", SS), Parameter("Path", S),
        )
    return with_common(
        _thumbprint(True), Parameter("BinaryEncoded", SW), Parameter("DomainController", S),
        Parameter("Password", SS), Parameter("Server", S),
    )


def enable_certificate(version: str, settings: LabSettings) -> tuple[Parameter, ...]:
    services = Parameter("Services", SA, mandatory=True)
    if version == "2007":
        # 2007 syntax page unreadable (UNCONFIRMED): Thumbprint/Services per the 2007 procedure,
        # -Force/-DoNotRequireSsl switchable in the settings.
        extra = [Parameter("DomainController", S)]
        if settings.enable_2007_has_force:
            extra.append(Parameter("Force", SW))
        if settings.enable_2007_has_donotrequiressl:
            extra.append(Parameter("DoNotRequireSsl", SW))
        return with_common(_thumbprint(True), services, *extra)
    return with_common(
        _thumbprint(True), services, Parameter("DomainController", S), Parameter("DoNotRequireSsl", SW),
        Parameter("Force", SW), Parameter("NetworkServiceAllowed", SW), Parameter("Server", S),
    )


def get_certificate(version: str) -> tuple[tuple[Parameter, ...], str]:
    sets_t, sets_i = ("Thumbprint",), ("Instance",)
    if version == "2007":
        return (
            with_common(
                Parameter("Thumbprint", S, sets=sets_t), Parameter("DomainName", SA),
                Parameter("Instance", O, sets=sets_i), should_process=False,
            ),
            "Thumbprint",
        )
    return (
        with_common(
            Parameter("Thumbprint", S, position=0, sets=sets_t), Parameter("DomainController", S),
            Parameter("DomainName", SA), Parameter("Instance", O, sets=sets_i), Parameter("Server", S),
            should_process=False,
        ),
        "Thumbprint",
    )


def remove_certificate(version: str) -> tuple[Parameter, ...]:
    if version == "2007":
        return with_common(_thumbprint(False), Parameter("DomainController", S))
    return with_common(_thumbprint(True), Parameter("DomainController", S), Parameter("Server", S))
