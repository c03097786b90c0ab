"""What real servers cost and allow: a cost profile (server-side work as sleeps) and the WinRM/Exchange limits.

The lab answers in microseconds, a real Exchange server does not: on real hosts the time goes to opening
sessions, starting processes and the cmdlets' own work, not to round trips. No measured figures for
these were found in public material; the defaults are issue 19's estimates and every one is a setting:

- Exchange 2010's `/PowerShell` pool open 3 s (Exchange builds the user's runspace with its cmdlets and
  RBAC scope; Exchange Online, the same design, is reported at 10-15 s), a `Microsoft.PowerShell` pool
  1.5 s, a `powershell.exe` start 2 s, the Exchange 2007 snap-in load 4 s (per process, or per
  Add-PSSnapin in a PSRP session);
- Get-ExchangeCertificate 0.5 s, New-ExchangeCertificate 1 s (2048-bit key generation), Import 1 s,
  Enable 2 s (IIS binding, service restarts), Export 0.5 s, file cmdlets 0.1 s, certutil 0.5 s.

Costs are sleeps, so a lab with fifty slow servers still costs no CPU; `scale` shrinks them all
(tests run them at 1/100). `NO_COSTS` is the lab's historical behaviour.

Limits (documented values; each settable per server):
- WinRM 2.0, the WinRM of every stock Windows 2008 R2 and of 2003/2008 with WMF 2.0: 5 shells per user
  (MaxShellsPerUser), 15 concurrent operations per user (MaxConcurrentOperationsPerUser), 25
  connections, and a shell idle for 180 s is deleted (PowerShell team, "Configuring WSMAN Limits",
  2010; MS-WSMV 3.1.4.5.2.1 for the QuotaLimit fault).
- Exchange 2010's default throttling policy: 18 concurrent PowerShell sessions per user
  (PowerShellMaxConcurrency), refused with "This user is allowed a maximum of 18 concurrent shells,
  which has been exceeded." (quoted from an Exchange 2010 server at cloudiffic.com).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.lab.registry import CommandCall, CommandSpec, NativeCommandSpec, NativeResult, Registry, Session

FILE_CMDLETS = ("New-Item", "Set-Content", "Get-Content", "Remove-Item", "Test-Path", "Get-ChildItem",
                "Get-FileHash", "Get-Item")


def _cmdlet_costs() -> dict[str, float]:
    costs = {"Get-ExchangeCertificate": 0.5, "New-ExchangeCertificate": 1.0, "Import-ExchangeCertificate": 1.0,
             "Enable-ExchangeCertificate": 2.0, "Export-ExchangeCertificate": 0.5}
    costs.update(dict.fromkeys(FILE_CMDLETS, 0.1))
    return costs


@dataclass(frozen=True)
class LabCosts:
    """Seconds of server-side work per operation, before `scale`."""

    exchange_pool_open: float = 3.0
    powershell_pool_open: float = 1.5
    process_start: float = 2.0  # powershell.exe
    snapin_load: float = 4.0  # Exchange 2007's snap-in, per process or per Add-PSSnapin
    certutil: float = 0.5
    cmdlets: dict[str, float] = field(default_factory=_cmdlet_costs)
    scale: float = 1.0

    def seconds(self, base: float) -> float:
        return max(0.0, base * self.scale)

    def cmdlet(self, name: str) -> float:
        if name.lower() == "add-pssnapin":
            return self.seconds(self.snapin_load)
        for known, cost in self.cmdlets.items():
            if known.lower() == name.lower():
                return self.seconds(cost)
        return 0.0

    def pool_open(self, configuration: str) -> float:
        base = self.exchange_pool_open if configuration.lower() == "microsoft.exchange" else self.powershell_pool_open
        return self.seconds(base)

    def native(self, name: str, args: list[str]) -> float:
        program = name.lower().removesuffix(".exe")
        if program == "certutil":
            return self.seconds(self.certutil)
        if program == "powershell":
            console = any(a.lower() == "-psconsolefile" for a in args)  # the Exchange shell loads its snap-in
            return self.seconds(self.process_start + (self.snapin_load if console else 0.0))
        return 0.0

    @property
    def free(self) -> bool:
        return self.scale == 0.0


NO_COSTS = LabCosts(scale=0.0)
REALISTIC = LabCosts()
PROFILES = {"none": NO_COSTS, "realistic": REALISTIC}


@dataclass(frozen=True)
class LabLimits:
    """Per-server quotas; None = unlimited."""

    max_shells_per_user: int | None = 5  # WinRM 2.0 MaxShellsPerUser (WinRM-hosted shells: /wsman)
    max_operations_per_user: int | None = 15  # WinRM 2.0 MaxConcurrentOperationsPerUser
    idle_timeout: float = 180.0  # WinRM 2.0 deletes a shell idle this long (unless the client asked for another)
    exchange_max_sessions: int | None = 18  # Exchange 2010 throttling: PowerShellMaxConcurrency


UNLIMITED = LabLimits(max_shells_per_user=None, max_operations_per_user=None, idle_timeout=7200.0,
                      exchange_max_sessions=None)


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def apply_costs(registry: Registry, costs: LabCosts) -> None:
    """Make every command of `registry` take its cost before it runs (nothing for NO_COSTS)."""
    if costs.free:
        return

    def cmdlet(spec: CommandSpec) -> CommandSpec:
        seconds = costs.cmdlet(spec.name)
        if not seconds:
            return spec
        inner = spec.handler

        def handler(call: CommandCall) -> Any:
            _sleep(seconds)
            return inner(call)

        return replace(spec, handler=handler)

    def native(spec: NativeCommandSpec) -> NativeCommandSpec:
        inner = spec.handler

        def handler(args: list[str], session: Session) -> NativeResult:
            _sleep(costs.native(spec.name, args))
            return inner(args, session)

        return replace(spec, handler=handler)

    registry.rewrite(cmdlet, native)
