"""Roll back: re-enable, per server and service, the certificate recorded as serving before this run
(orchestrator/previous.py). Pure: the decision from the server's facts now and the record.

A previous certificate still on the server is enabled again for exactly the services it had, with -Force (the
SMTP overwrite prompt would otherwise stop a non-interactive session, reference §3.1); one that was retired comes
back from its backup first (orchestrator/backups.py), and without a backup the rollback stops with one line
saying so, before anything is sent. What serves now is read as for the record (TLS endpoints first), so a
rollback after an Enable that answered success without moving the IIS binding still sees IIS on the old
certificate and leaves it be.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.commands import Blob, Command, Flag, LocalFile, Param, Pending, Thumbprint, text
from orchestrator.decision import Decision, Noop, Send
from orchestrator.dialects import Dialect, ensure_folder, remote_path, remove_file, write_file
from orchestrator.errors import ExmigError
from orchestrator.playbook import Server, Service
from orchestrator.previous import SERVICES, Held, previous_services, serving
from orchestrator.retire import BACKUP_SECRET, backup_file_name


class RollbackImpossible(ExmigError):
    """What served before cannot be brought back; nothing was sent."""


def restore_backup(server: Server, thumbprint: str, backup: Path | None) -> tuple[Command, ...]:
    """Import the backup PFX (exportable again on 2010, as it was when it was exported). `backup` None: the plan's
    placeholder (which certificate, and so which file, is a fact of the run)."""
    origin = LocalFile(str(backup)) if backup is not None else Pending("the backup PFX beside the journal")
    data = Blob(f"backup:{thumbprint.upper()}", origin)
    if server.version == 2010:
        return (Command("Import-ExchangeCertificate",
                        (Param("FileData", data), Param("Password", BACKUP_SECRET),
                         Param("PrivateKeyExportable", Flag(True)), text("Server", server.name)),
                        capture="Restored"),)
    path = remote_path(server, backup_file_name(thumbprint))
    return (ensure_folder(server), write_file(server, path, data),
            Command("Import-ExchangeCertificate", (text("Path", path), Param("Password", BACKUP_SECRET)),
                    capture="Restored"),
            remove_file(server, path))


def rollback(server: Server, held_now: Iterable[Held], before: Mapping[str, Any],
             presented_now: Mapping[str, str | None], backups: Mapping[str, Path] | None = None,
             default_smtp: str | None = None, services: Iterable[Service] = SERVICES) -> Decision:
    """Enable each previous thumbprint for the services it had, where any of them is served otherwise now.

    `held_now`: the server's certificates now (previous.held_certificates).
    `backups`: thumbprint -> the backup PFX on the workstation (backups.backup_path), for retired certificates."""
    facts = list(held_now)
    certs = {c.thumbprint for c in facts}
    now = serving(facts, presented_now, default_smtp)
    backups = {k.upper(): v for k, v in (backups or {}).items()}
    pipelines: list[tuple[Command, ...]] = []
    done: list[str] = []
    back: list[str] = []
    for thumb, had in previous_services(before, services).items():
        names = ", ".join(s.value for s in had)
        if all(now[s][0] == thumb for s in had):
            done.append(f"{thumb} serves {names} as before")
            continue
        if thumb not in certs:
            backup = backups.get(thumb)
            if backup is None:
                raise RollbackImpossible(
                    f"{server.name}: certificate {thumb}, which served {names} before, is no longer on the server "
                    "and has no backup; import it by hand (or a new certificate) and enable it")
            pipelines += [(c,) for c in restore_backup(server, thumb, backup)]
        pipelines.append((Dialect(server.version).enable(server, Thumbprint(thumb), list(had)),))
        back.append(f"re-enabled {thumb} for {names}" + ("" if thumb in certs else " from its backup"))
    if not pipelines:
        return Noop("; ".join(done) if done else "nothing recorded as serving before this run")
    return Send(tuple(pipelines), "; ".join(back + done))
