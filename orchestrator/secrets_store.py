"""Secrets of one run, resolved from their references and held only in memory.

The PFX password is generated per run by default: the PFX travels in memory between servers, so
nobody needs to know it. Nothing here is ever printed, logged or written.
"""

from __future__ import annotations

import getpass
import os
import secrets
import sys

from orchestrator.errors import UsageError
from orchestrator.playbook import LAB_DEFAULT_PASSWORD, Playbook, SecretRef, Server


class SecretStore:
    def __init__(self, playbook: Playbook, interactive: bool | None = None) -> None:
        self._playbook = playbook
        self._values: dict[str, str] = {}
        self._interactive = sys.stdin.isatty() if interactive is None else interactive

    def _resolve(self, ref: SecretRef, what: str, field: str) -> str:
        if ref.generate:
            return secrets.token_urlsafe(24)
        if ref.env is not None:
            value = os.environ.get(ref.env)
            if value:
                return value
            if ref.lab_default:
                return LAB_DEFAULT_PASSWORD
            raise UsageError(f"{field}: environment variable {ref.env} is not set; export it with {what}")
        if not self._interactive:
            raise UsageError(f"{field}: {what} is to be asked at a prompt, but there is no terminal; "
                             "use `env: VARIABLE` instead")
        value = getpass.getpass(f"{what}: ")
        if not value:
            raise UsageError(f"{field}: no {what} given")
        return value

    def secret(self, key: str) -> str:
        if key not in self._values:
            if key != "pfx-password":
                raise KeyError(key)
            self._values[key] = self._resolve(self._playbook.pfx_password, "the PFX password", "pfx_password")
        return self._values[key]

    def username(self, server: Server) -> str:
        user = server.credentials.username
        if isinstance(user, str):
            return user
        return self._resolve(user, f"the user name for {server.name}", f"servers[{server.name}].credentials.username")

    def password(self, server: Server) -> str | None:
        """None: no password in the playbook (auth: kerberos with the admin's ticket cache)."""
        if server.credentials.password is None:
            return None
        key = f"password:{server.name}"
        if key not in self._values:
            self._values[key] = self._resolve(server.credentials.password, f"the password for {server.name}",
                                              f"servers[{server.name}].credentials.password")
        return self._values[key]

    def all_values(self) -> list[str]:
        """For redaction checks only."""
        return list(self._values.values())
