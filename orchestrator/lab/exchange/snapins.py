"""Add-PSSnapin / Get-PSSnapin: the session's snap-ins decide whether Exchange 2007's cmdlets exist."""

from __future__ import annotations

import fnmatch

from orchestrator.lab.exchange.cmdlets import EMS_2007_SNAPIN
from orchestrator.lab.exchange.pserrors import cmdlet_error
from orchestrator.lab.objects import LabObject
from orchestrator.lab.registry import CommandCall, ErrorCategory

SNAPINS = {
    "2007": {
        EMS_2007_SNAPIN: "Admin Tasks for the Exchange Server",
        "Microsoft.Exchange.Management.Powershell.Support": "Support Tasks for the Exchange Server",
    },
    "2010": {
        "Microsoft.Exchange.Management.PowerShell.E2010": "Admin Tasks for the Exchange Server",
        "Microsoft.Exchange.Management.PowerShell.Setup": "Setup Tasks for the Exchange Server",
        "Microsoft.Exchange.Management.Powershell.Support": "Support Tasks for the Exchange Server",
    },
}
CORE_SNAPINS = (
    "Microsoft.PowerShell.Diagnostics", "Microsoft.WSMan.Management", "Microsoft.PowerShell.Core",
    "Microsoft.PowerShell.Utility", "Microsoft.PowerShell.Host", "Microsoft.PowerShell.Management",
    "Microsoft.PowerShell.Security",
)


class Snapins:
    def __init__(self, version: str) -> None:
        self.version = version

    def _snapin_object(self, name: str, description: str) -> LabObject:
        return LabObject(
            ["System.Management.Automation.PSSnapInInfo", "System.Object"],
            adapted={"Name": name, "PSVersion": "1.0", "Description": description},
            to_string=name,
        )

    def add_pssnapin(self, call: CommandCall) -> None:
        registered = SNAPINS[self.version]
        for pattern in call.params["Name"]:
            matches = [n for n in registered if fnmatch.fnmatch(n.lower(), pattern.lower())]
            if not matches:
                call.write_error(cmdlet_error(
                    call.name,
                    f"The Windows PowerShell snap-in '{pattern}' is not installed on this machine.",
                    "AddPSSnapInRead",
                    ErrorCategory.InvalidArgument, "System.Management.Automation.PSArgumentException", pattern,
                ))
                continue
            for name in matches:
                if name.lower() in {s.lower() for s in call.session.snapins}:
                    call.write_error(cmdlet_error(
                        call.name,
                        f"Cannot add Windows PowerShell snap-in {name} because it is already added. "
                        "Verify the name of the snap-in, and then try again.",
                        "AddPSSnapInRead",
                        ErrorCategory.InvalidArgument, "System.Management.Automation.PSArgumentException", name,
                    ))
                    continue
                call.session.snapins.add(name)
                if call.params.get("PassThru"):
                    call.write(self._snapin_object(name, registered[name]))

    def get_pssnapin(self, call: CommandCall) -> None:
        registered = SNAPINS[self.version]
        if call.params.get("Registered"):
            pool = dict(registered)
        else:
            pool = {n: "" for n in CORE_SNAPINS}
            loaded = {s.lower() for s in call.session.snapins}
            pool.update({n: d for n, d in registered.items() if n.lower() in loaded})
        for pattern in call.params.get("Name", ["*"]):
            matches = [n for n in pool if fnmatch.fnmatch(n.lower(), pattern.lower())]
            if not matches and not any(ch in pattern for ch in "*?["):
                call.write_error(cmdlet_error(
                    call.name,
                    f"No Windows PowerShell snap-ins matching the pattern '{pattern}' were found. "
                    "Check the pattern and then try the command again.",
                    "NoPSSnapInsFound",
                    ErrorCategory.InvalidArgument, "System.Management.Automation.PSArgumentException", pattern,
                ))
            for name in matches:
                call.write(self._snapin_object(name, pool[name]))

