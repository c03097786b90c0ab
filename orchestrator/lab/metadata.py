"""GET_COMMAND_METADATA answers: what implicit remoting (Import-PSSession) learns about an endpoint's commands.

PowerShell's server answers the message by running `Get-Command -Name <names> -CommandType <types> -Module
<namespaces> | Measure-Object | Select-Object Count` and then `Get-Command ... | Select-Object Name,
Namespace, HelpUri, CommandType, ResolvedCommandName, OutputType, Parameters` (HandleGetCommandMetadata in
PowerShell's ServerRunspacePoolDriver). The objects built here have the shape pypsrp recorded from a real
host (jborean93/pypsrp tests/tests_pypsrp/responses/test_psrp_get_command_metadata.yml, a PowerShell 5.1
host): a `Selected.Microsoft.PowerShell.Commands.GenericMeasureInfo` with Count, then one
`Selected.System.Management.Automation.CmdletInfo` per command whose Parameters dictionary holds
ParameterMetadata objects (Name, ParameterType, Aliases, IsDynamic, SwitchParameter as adapted properties).

The commands are the ones the session can run (the registry's visibility rules: configuration, snap-ins),
with the parameter tables of the emulated Exchange version, and the common parameters of the emulated
PowerShell version. Parameter sets do not travel: a serialized ParameterMetadata carries only the five
properties above (the recording), so versions differ in the parameters' names and types. UNCONFIRMED: a
PowerShell 2.0 server is assumed to select the same properties (no 2.0 recording); the generic type names
carry 2.0's assembly versions (mscorlib 2.0.0.0, System.Management.Automation 1.0.0.0). Lab limits:
native programs (Application) are not listed; OutputType is empty.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from psrpcore.types import PSDict, PSList, PSNoteProperty, PSObject, add_note_property

from orchestrator.lab import serialize
from orchestrator.lab.objects import LabEnum
from orchestrator.lab.registry import CommandSpec, Kind, LabError, Parameter, Registry, Session

CMDLET = 8  # System.Management.Automation.CommandTypes.Cmdlet


@dataclass(frozen=True)
class _Common:
    name: str
    type_name: str
    alias: str
    since: tuple[int, int]  # the PowerShell version that added it


_ACTION = "System.Management.Automation.ActionPreference"
_SWITCH = Kind.SWITCH.value
# PowerShell's common parameters in the order Get-Command lists them (test_psrp_get_command_metadata.yml,
# PowerShell 5.1); PipelineVariable came with 4.0, the Information pair with 5.0.
COMMON_PARAMETERS = (
    _Common("Verbose", _SWITCH, "vb", (2, 0)),
    _Common("Debug", _SWITCH, "db", (2, 0)),
    _Common("ErrorAction", _ACTION, "ea", (2, 0)),
    _Common("WarningAction", _ACTION, "wa", (2, 0)),
    _Common("InformationAction", _ACTION, "infa", (5, 0)),
    _Common("ErrorVariable", "System.String", "ev", (2, 0)),
    _Common("WarningVariable", "System.String", "wv", (2, 0)),
    _Common("InformationVariable", "System.String", "iv", (5, 0)),
    _Common("OutVariable", "System.String", "ov", (2, 0)),
    _Common("OutBuffer", "System.Int32", "ob", (2, 0)),
    _Common("PipelineVariable", "System.String", "pv", (4, 0)),
)
SHOULD_PROCESS_PARAMETERS = (_Common("WhatIf", _SWITCH, "wi", (2, 0)), _Common("Confirm", _SWITCH, "cf", (2, 0)))
_RESERVED = {c.name.lower() for c in (*COMMON_PARAMETERS, *SHOULD_PROCESS_PARAMETERS)}

# The module (snap-in) Get-Command shows as Namespace for the Windows cmdlets the lab emulates.
_CORE_MODULES = {
    "add-pssnapin": "Microsoft.PowerShell.Core", "get-pssnapin": "Microsoft.PowerShell.Core",
    "get-filehash": "Microsoft.PowerShell.Utility",
}
# Exchange 2010's remote runspace loads its cmdlets from this snap-in (UNCONFIRMED: how Exchange's RBAC
# proxy names the cmdlets' module is not in a capture).
EXCHANGE_2010_SNAPIN = "Microsoft.Exchange.Management.PowerShell.E2010"


def _version(powershell: str) -> tuple[int, int]:
    major, _, minor = powershell.partition(".")
    return int(major), int(minor or 0)


def _assemblies(powershell: str) -> tuple[str, str]:
    """(mscorlib, System.Management.Automation) qualifiers in generic type names: PowerShell 2.0 runs on
    CLR 2 with SMA 1.0.0.0; 3.0 and later on CLR 4 with SMA 3.0.0.0 (the 5.1 recording)."""
    if _version(powershell) < (3, 0):
        return ("mscorlib, Version=2.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089",
                "System.Management.Automation, Version=1.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35")
    return ("mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089",
            "System.Management.Automation, Version=3.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35")


def namespace(spec: CommandSpec) -> str:
    """The Namespace (module or snap-in name) Get-Command reports for a lab command."""
    if spec.snapin:
        return spec.snapin
    if spec.implementing_type.startswith("Microsoft.Exchange."):
        return EXCHANGE_2010_SNAPIN
    if spec.name.lower() in _CORE_MODULES:
        return _CORE_MODULES[spec.name.lower()]
    if spec.implementing_type.startswith("Microsoft.PowerShell.Commands."):
        return "Microsoft.PowerShell.Management"
    return ""


def _matches(value: str, patterns: list[str] | None) -> bool:
    # PowerShell wildcards (* ? [..]) compared case-insensitively; no patterns = everything.
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(value.lower(), str(p).lower()) for p in patterns)


def _patterns(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def visible_commands(registry: Registry, session: Session) -> list[CommandSpec]:
    out = []
    for name in registry.names():
        try:
            out.append(registry.command(name, session))
        except LabError:
            continue
    return out


def find_commands(registry: Registry, session: Session, request: Any, powershell: str) -> list[PSObject]:
    """The CommandMetadata objects for a GET_COMMAND_METADATA request (psrpcore's GetMetadata)."""
    names = _patterns(getattr(request, "name", None)) or ["*"]
    namespaces = _patterns(getattr(request, "namespace", None))
    types = getattr(request, "command_type", None)
    type_mask = int(types.value if hasattr(types, "value") else types) if types is not None else 0xFFFF
    if not type_mask & CMDLET:
        return []
    found = [s for s in visible_commands(registry, session)
             if _matches(s.name, names) and _matches(namespace(s), namespaces)]
    found.sort(key=lambda s: s.name.lower())
    return [command_metadata(s, powershell) for s in found]


def count_object(count: int) -> PSObject:
    obj = PSObject()
    obj.PSObject.type_names = ["Selected.Microsoft.PowerShell.Commands.GenericMeasureInfo",
                               "System.Management.Automation.PSCustomObject", "System.Object"]
    add_note_property(obj, "Count", count)
    return obj


def _parameter(name: str, type_name: str, aliases: list[str], switch: bool, powershell: str) -> PSObject:
    mscorlib, _ = _assemblies(powershell)
    meta = PSObject()
    meta.PSObject.type_names = ["System.Management.Automation.ParameterMetadata", "System.Object"]
    meta.PSObject.to_string = "System.Management.Automation.ParameterMetadata"
    alias_list = PSList(aliases)
    alias_list.PSObject.type_names = [f"System.Collections.ObjectModel.Collection`1[[System.String, {mscorlib}]]",
                                      "System.Object"]
    for prop, value in (("Name", name), ("ParameterType", type_name), ("Aliases", alias_list),
                        ("IsDynamic", False), ("SwitchParameter", switch)):
        meta.PSObject.adapted_properties.append(PSNoteProperty(prop, value))
    return meta


def parameters(spec: CommandSpec, powershell: str) -> list[tuple[str, PSObject]]:
    """The command's own parameters in declared order, then the common ones of this PowerShell version,
    then WhatIf/Confirm for a command that declares them (ShouldProcess), as Get-Command lists them."""
    version = _version(powershell)
    own: list[Parameter] = [p for p in spec.parameters if p.name.lower() not in _RESERVED]
    declared = {p.name.lower() for p in spec.parameters}
    out = [(p.name, _parameter(p.name, p.kind.value, [], p.kind is Kind.SWITCH, powershell)) for p in own]
    extra = [c for c in COMMON_PARAMETERS if c.since <= version]
    if {"whatif", "confirm"} <= declared:
        extra += list(SHOULD_PROCESS_PARAMETERS)
    out += [(c.name, _parameter(c.name, c.type_name, [c.alias], c.type_name == _SWITCH, powershell)) for c in extra]
    return out


def command_metadata(spec: CommandSpec, powershell: str) -> PSObject:
    mscorlib, sma = _assemblies(powershell)
    obj = PSObject()
    obj.PSObject.type_names = ["Selected.System.Management.Automation.CmdletInfo",
                               "System.Management.Automation.PSCustomObject", "System.Object"]
    add_note_property(obj, "Name", spec.name)
    add_note_property(obj, "Namespace", namespace(spec))
    # HelpUri came with PowerShell 3.0 (updatable help); on 2.0 Select-Object yields $null for it
    # (UNCONFIRMED: no 2.0 recording). The lab's commands have no online help link.
    add_note_property(obj, "HelpUri", "" if _version(powershell) >= (3, 0) else None)
    add_note_property(obj, "CommandType", serialize.to_ps(
        LabEnum(["System.Management.Automation.CommandTypes"], CMDLET, "Cmdlet")))
    add_note_property(obj, "ResolvedCommandName", None)
    output_type = PSList([])
    output_type.PSObject.type_names = [
        f"System.Collections.ObjectModel.ReadOnlyCollection`1[[System.Management.Automation.PSTypeName, {sma}]]",
        "System.Object"]
    add_note_property(obj, "OutputType", output_type)
    table = PSDict()
    table.PSObject.type_names = [
        f"System.Collections.Generic.Dictionary`2[[System.String, {mscorlib}],"
        f"[System.Management.Automation.ParameterMetadata, {sma}]]", "System.Object"]
    for name, meta in parameters(spec, powershell):
        table[name] = meta
    add_note_property(obj, "Parameters", table)
    return obj
