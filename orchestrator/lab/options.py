"""The lab's behaviour switches of `exmig lab serve` and `exmig rehearse`, as LabSettings changes.

Each switch rehearses a way real servers differ from the lab's default (sources in
orchestrator/lab/exchange/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace

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

    def apply(self, settings: LabSettings) -> LabSettings:
        changes: dict[str, bool] = {}
        if self.untrusted_root:
            changes["install_third_party_roots"] = False
        if self.rawdata_only:
            changes["rawdata_only_output"] = True
        if self.no_services:
            changes["omit_services_in_remote_output"] = True
        if self.revocation_offline:
            changes["revocation_offline"] = True
        return replace(settings, **changes)
