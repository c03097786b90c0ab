"""Secrets of one run, resolved from their references and held only in memory.

The PFX password is generated per run by default: the PFX travels in memory between servers, so
nobody needs to know it. Nothing here is ever printed, logged or written.

A run resolves every secret it needs once, on the main thread, before its first connection and
before the live display starts (`resolve`): a prompt never comes from a worker thread, under the
display, or a second time. After that the store is sealed: a prompt it was not asked for up front is
a bug, reported as such instead of a question in the middle of a run.
"""

from __future__ import annotations

import getpass
import os
import secrets
import sys
import threading
from collections.abc import Iterable

from orchestrator.errors import ExmigError, UsageError
from orchestrator.playbook import LAB_DEFAULT_PASSWORD, AcmeIssuer, Playbook, SecretRef, Server
from orchestrator.secret_keys import ACME_EAB_HMAC, ACME_TSIG_SECRET, BACKUP_PASSWORD, PFX_PASSWORD
from orchestrator.troubleshoot import add_secrets

__all__ = ["ACME_EAB_HMAC", "ACME_TSIG_SECRET", "BACKUP_PASSWORD", "PFX_PASSWORD", "SecretStore"]


class SecretStore:
    def __init__(self, playbook: Playbook, interactive: bool | None = None) -> None:
        self._playbook = playbook
        # A value of None: the reference says there is no secret (e.g. Kerberos from a ticket cache).
        self._values: dict[str, str | None] = {}
        self._usernames: dict[str, str] = {}
        self._interactive = sys.stdin.isatty() if interactive is None else interactive
        self._sealed = False
        self._lock = threading.Lock()  # targets ask from several threads; each secret is resolved once

    def _resolve(self, ref: SecretRef | None, what: str, field: str) -> str | None:
        if ref is None:
            return None
        if ref.generate:
            return secrets.token_urlsafe(24)
        if ref.env is not None:
            value = os.environ.get(ref.env)
            if value:
                return value
            if ref.lab_default:
                return LAB_DEFAULT_PASSWORD
            raise UsageError(f"{field}: environment variable {ref.env} is not set; export it with {what}")
        if self._sealed:
            raise ExmigError(f"{field}: {what} was not asked for before the run started (exmig asks every prompt "
                             "up front); please report this")
        if not self._interactive:
            raise UsageError(f"{field}: {what} is to be asked at a prompt, but there is no terminal; "
                             "use `env: VARIABLE` instead")
        value = getpass.getpass(f"{what}: ")
        if not value:
            raise UsageError(f"{field}: no {what} given")
        return value

    def _cached(self, key: str, ref: SecretRef | None, what: str, field: str) -> str | None:
        with self._lock:
            if key not in self._values:
                value = self._resolve(ref, what, field)
                if value is not None:
                    add_secrets([value])  # --debug's redaction knows it before any client could log it
                self._values[key] = value
            return self._values[key]

    def resolve(self, servers: Iterable[Server], pfx_password: bool, backup_password: bool = False) -> None:
        """Resolve (ask for) every secret of these servers, and the PFX and backup passwords if the run needs them,
        now; then seal the store."""
        for server in servers:
            self.username(server)
            self.password(server)
        if pfx_password:
            self.secret(PFX_PASSWORD)
        if backup_password:
            self.secret(BACKUP_PASSWORD)
        for key in self.issuer_secrets():
            self.secret(key)
        self._sealed = True

    def issuer_secrets(self) -> list[str]:
        """The keys of the secrets the playbook's issuer needs (resolved by `resolve` with the others)."""
        issuer = self._playbook.issuer
        if not isinstance(issuer, AcmeIssuer):
            return []
        return ([ACME_EAB_HMAC] if issuer.eab is not None else []) + ([ACME_TSIG_SECRET] if issuer.dns else [])

    def secret(self, key: str) -> str:
        if key == BACKUP_PASSWORD and self._playbook.backup_password is not None:
            value = self._cached(key, self._playbook.backup_password, "the backup password", "backup_password")
            assert value is not None
            return value
        if key == BACKUP_PASSWORD:
            if self._playbook.pfx_password.generate:
                raise UsageError("backup_password: no password for the backups (pfx_password is generated); set "
                                 "`backup_password: {env: VARIABLE}` or `backup_password: {prompt: true}`")
            key = PFX_PASSWORD  # the one pfx_password, asked for once
        if key == PFX_PASSWORD:
            value = self._cached(key, self._playbook.pfx_password, "the PFX password", "pfx_password")
        elif key in (ACME_EAB_HMAC, ACME_TSIG_SECRET):
            value = self._issuer_secret(key)
        else:
            raise KeyError(key)
        assert value is not None  # each of these always has a source (the PFX password is generated by default)
        return value

    def _issuer_secret(self, key: str) -> str | None:
        issuer = self._playbook.issuer
        if not isinstance(issuer, AcmeIssuer):
            raise KeyError(key)
        if key == ACME_EAB_HMAC:
            if issuer.eab is None:
                raise KeyError(key)
            return self._cached(key, issuer.eab.hmac, f"the ACME EAB HMAC key for {issuer.eab.kid}", "issuer.eab.hmac")
        if issuer.dns is None:
            raise KeyError(key)
        return self._cached(key, issuer.dns.tsig_secret, f"the TSIG secret of {issuer.dns.tsig_name}",
                            "issuer.dns.tsig_secret")

    def username(self, server: Server) -> str:
        user = server.credentials.username
        if isinstance(user, str):
            return user
        with self._lock:
            if server.name not in self._usernames:
                value = self._resolve(user, f"the user name for {server.name}",
                                      f"servers[{server.name}].credentials.username")
                assert value is not None
                self._usernames[server.name] = value
            return self._usernames[server.name]

    def password(self, server: Server) -> str | None:
        """The server's password; None when its credentials name none (a Kerberos ticket from the cache)."""
        ref: SecretRef | None = server.credentials.password
        return self._cached(f"password:{server.name}", ref, f"the password for {server.name}",
                            f"servers[{server.name}].credentials.password")

    def all_values(self) -> list[str]:
        """For redaction checks only."""
        return [v for v in self._values.values() if v is not None]
