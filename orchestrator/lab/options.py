"""The lab's behaviour switches of `exmig lab serve` and `exmig rehearse`, as LabSettings changes.

Each switch rehearses a way real servers differ from the lab's default (sources in
orchestrator/lab/exchange/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchestrator.errors import UsageError
from orchestrator.lab.exchange.settings import LabSettings


@dataclass(frozen=True)
class LabBehaviour:
    # The lab CA's root is not in the servers' \Root (a private CA, or a root Windows has not fetched).
    untrusted_root: bool = False
    # Certificate objects arrive with RawData only (Exchange types not on the client).
    rawdata_only: bool = False
    # Get-ExchangeCertificate output without Services.
    no_services: bool = False
    # The servers cannot reach the CA's revocation list: Status RevocationCheckFailure.
    revocation_offline: bool = False
    # The servers start with a previous commercial certificate serving IIS, SMTP, POP and IMAP (previous.py).
    previous_certificate: bool = False
    # These servers' Enable-ExchangeCertificate answers success without changing the IIS binding (a fault).
    enable_keeps_iis_binding: tuple[str, ...] = ()

    def check(self, servers: list[str]) -> None:
        """Per-server switches must name the playbook's servers."""
        known = {name.lower() for name in servers}
        for name in self.enable_keeps_iis_binding:
            if name.lower() not in known:
                raise UsageError(f"--enable-keeps-iis-binding {name}: the playbook has no server {name}; "
                                 f"use one of {', '.join(servers)}")

    def apply(self, settings: LabSettings) -> LabSettings:
        changes: dict[str, object] = {}
        if self.untrusted_root:
            changes["install_third_party_roots"] = False
        if self.rawdata_only:
            changes["rawdata_only_output"] = True
        if self.no_services:
            changes["omit_services_in_remote_output"] = True
        if self.revocation_offline:
            changes["revocation_offline"] = True
        if self.previous_certificate:
            changes["previous_certificate"] = True
        if self.enable_keeps_iis_binding:
            changes["enable_keeps_iis_binding"] = frozenset(self.enable_keeps_iis_binding)
        return replace(settings, **changes)  # type: ignore[arg-type]
