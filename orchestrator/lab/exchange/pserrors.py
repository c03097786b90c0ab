"""Error records of PowerShell's own cmdlets (Set-Content, New-Item, Add-PSSnapin...) as Windows words them."""

from __future__ import annotations

from typing import Any

from orchestrator.lab.registry import ErrorCategory, LabError

PS = "Microsoft.PowerShell.Commands."


def cmdlet_error(command: str, message: str, reason: str, category: ErrorCategory, exception_type: str,
                 target: Any = None) -> LabError:
    """FullyQualifiedErrorId is `<reason>,Microsoft.PowerShell.Commands.<Verb><Noun>Command`."""
    return LabError(
        message=message,
        error_id=f"{reason},{PS}{command.replace('-', '')}Command",
        category=category,
        exception_type=exception_type,
        target=target,
        activity=command,
    )
