"""The names of the run's secrets (the executor holds their values, orchestrator/secrets_store.py), and where the
backups' password comes from. Pure: the decisions refer to secrets by these keys, never by value."""

from __future__ import annotations

from orchestrator.playbook import Playbook, SecretRef

PFX_PASSWORD = "pfx-password"
# The retired certificates' backups (orchestrator/backups.py): backup_password, else a pfx_password the admin knows.
BACKUP_PASSWORD = "backup-password"
# The issuer's secrets (issuer type acme): the EAB HMAC key and the TSIG secret for dns-01.
ACME_EAB_HMAC = "acme-eab-hmac"
ACME_TSIG_SECRET = "acme-tsig-secret"


def backup_password_source(playbook: Playbook) -> SecretRef | None:
    """Where the backups' password comes from: `backup_password`, else `pfx_password`; None when that is generated
    (never shown, so a backup could never be opened: the --save-pfx rule of orchestrator/execute.py; the playbook
    refuses retire_previous without a known password unless retire_without_backup says so)."""
    ref = playbook.backup_password or playbook.pfx_password
    return None if ref.generate else ref
