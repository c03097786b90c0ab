"""Retire the certificate that served before: the decision, pure, from the server's facts now and the record of
what served before (orchestrator/previous.py).

Tools in this field got it wrong by matching: one removed certificates by "same services" and took Exchange's own
with them (Posh-ACME.Deploy #19), another picked certificates by splitting the CN out of the subject text
(win-acme ImportExchange). Here a candidate is a thumbprint recorded as serving one of the playbook's services
before this run, and it is removed only when all of these hold:

- it is not the new certificate;
- nothing serves with it now: no TLS endpoint presents it, IIS is not bound to it (IIS in Services is the Default
  Web Site's binding; a real server removes a certificate IIS still uses, and every browser then fails), and it is
  not the default SMTP certificate (Remove refuses that one; it is known from Active Directory or from this run's
  Enable -Services SMTP -Force, never from Services, see previous.py); an unknown default SMTP certificate keeps
  every candidate;
- it is not Exchange's self-signed certificate, unless `retire_self_signed: true` (it secures transport between
  Exchange servers; CSS-Exchange's Health Checker recommends keeping it);
- it can be backed up first (exportable key, and a password the admin knows), or the admin said
  `retire_without_backup: true`; otherwise the run stops with one line naming server, thumbprint and fix, before
  anything is sent.

The backup is exported in its own request(s) before the removal's: the executor writes it to disk
(orchestrator/backups.py: write_backup, check_backup) between them, so a certificate is never removed before its
backup is kept. Without a backup the decision's reason says so: rolling back to it will be impossible.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.commands import Command, Param, Secret, Switch, Text, Thumbprint, Value, text
from orchestrator.decision import Decision, Noop, Send
from orchestrator.dialects import CERTIFICATES, FILES_ONLY, ensure_folder, read_file, remote_path, remove_file
from orchestrator.errors import ExmigError
from orchestrator.playbook import Playbook, Server, Service
from orchestrator.previous import SERVICES, Held, previous_services, serving
from orchestrator.secret_keys import BACKUP_PASSWORD, backup_password_source

BACKUP_SECRET = Secret(BACKUP_PASSWORD, "the backup password")


class RetireRefused(ExmigError):
    """A certificate that should go cannot go safely as configured; nothing was sent."""


@dataclass(frozen=True)
class RetireOptions:
    retire_self_signed: bool = False
    # Remove a certificate that cannot be backed up (key not exportable, or no password the admin knows).
    without_backup: bool = False
    # A backup password the admin knows is at hand (backup_password, or a pfx_password that is not generated).
    backup_possible: bool = True

    @classmethod
    def from_playbook(cls, playbook: Playbook) -> RetireOptions:
        return cls(playbook.retire_self_signed, playbook.retire_without_backup,
                   backup_password_source(playbook) is not None)


BACKUP_CAPTURE = "Backup_"


def backup_capture(thumbprint: str) -> str:
    """The dry-run's variable for a backup's bytes, and the executor's key for them."""
    return f"{BACKUP_CAPTURE}{thumbprint.upper()}"


def backup_file_name(thumbprint: str) -> str:
    return f"exmig-backup-{thumbprint.upper()}.pfx"


# The plan shows the retire step's commands before the thumbprints are known (they are facts of the server).
PREVIOUS = Thumbprint(None, "thumbprint of a certificate that served before")


def _thumb(thumbprint: str | Thumbprint) -> Value:
    return Text(thumbprint) if isinstance(thumbprint, str) else thumbprint


def _name(thumbprint: str | Thumbprint) -> str:
    return thumbprint if isinstance(thumbprint, str) else thumbprint.value or "PREVIOUS"


def _server_param(server: Server) -> tuple[Param, ...]:
    # 2010: every cmdlet names its server (the reference's rule; orchestrator/dialects.py).
    return (text("Server", server.name),) if server.version == 2010 else ()


def export_backup(server: Server, thumbprint: str | Thumbprint) -> tuple[Command, ...]:
    """Export-ExchangeCertificate -BinaryEncoded -Password: 2010 answers the bytes (FileData); 2007 writes a file,
    which is read back and deleted (2007 has no FileData output, see dialects.Dialect.export)."""
    params = (Param("Thumbprint", _thumb(thumbprint)), Param("BinaryEncoded", Switch()),
              Param("Password", BACKUP_SECRET))
    capture = backup_capture(_name(thumbprint))
    if server.version == 2010:
        return (Command("Export-ExchangeCertificate", (*params, *_server_param(server)), capture=capture,
                        changes=False),)
    path = remote_path(server, backup_file_name(_name(thumbprint)))
    return (ensure_folder(server),
            Command("Export-ExchangeCertificate", (*params, text("Path", path)), affects=FILES_ONLY),
            read_file(server, path, capture=capture),
            remove_file(server, path))


def remove_certificate(server: Server, thumbprint: str | Thumbprint) -> Command:
    # -Confirm:$false: Remove has ConfirmImpact High and prompts otherwise (reference §1.6, §3.1).
    return Command("Remove-ExchangeCertificate",
                   (Param("Thumbprint", _thumb(thumbprint)), Param("Confirm", Switch(False)), *_server_param(server)),
                   affects=CERTIFICATES)


def _why_kept(cert: Held, new: str, now: dict[Service, tuple[str | None, str]], default_smtp: str | None,
              options: RetireOptions) -> str | None:
    t = cert.thumbprint
    if t == new:
        return f"{t} is the new certificate"
    served = [s.value for s, (thumb, _) in now.items() if thumb == t]
    if served:
        return f"{t} still serves {', '.join(served)}"
    if cert.info.services is not None and Service.IIS.value in cert.info.services:
        return f"{t} is still bound to IIS"
    if cert.info.services is None and now[Service.IIS][0] is None:
        return f"{t}: the server does not report Services and HTTPS presented nothing, so whether IIS uses it is unknown"
    if default_smtp is None:
        return f"{t}: the default SMTP certificate is not known, and exmig never removes one that may be it"
    if default_smtp.upper() == t:
        return f"{t} is the default SMTP certificate"
    if cert.self_signed is not False and not options.retire_self_signed:
        kind = "Exchange's self-signed certificate" if cert.self_signed else "perhaps self-signed (not reported)"
        return f"{t} is {kind}; kept (retire_self_signed: true removes it)"
    return None


def retire(server: Server, held_now: Iterable[Held], before: Mapping[str, Any], new_thumbprint: str,
           presented_now: Mapping[str, str | None], options: RetireOptions, default_smtp: str | None = None,
           services: Iterable[Service] = SERVICES, backed_up: Collection[str] = ()) -> Decision:
    """Remove what served `services` before and serves none now (see the module's rules).

    `held_now`: the server's certificates (previous.held_certificates) after the new one was enabled and verified;
    `presented_now`: what the TLS endpoints present now (TLS probe kind -> leaf thumbprint);
    `default_smtp`: the default SMTP certificate's thumbprint where known (None: unknown)."""
    certs = {c.thumbprint: c for c in held_now}
    now = serving(list(certs.values()), presented_now, default_smtp)
    new = new_thumbprint.upper()
    kept: list[str] = []
    removals: list[tuple[str, bool]] = []  # (thumbprint, backed up first)
    kept_backup: set[str] = set()  # removed without an export: a backup of the same certificate exists
    for thumb in previous_services(before, services):
        cert = certs.get(thumb)
        if cert is None:
            kept.append(f"{thumb} is gone already")
            continue
        why = _why_kept(cert, new, now, default_smtp, options)
        if why is not None:
            kept.append(why)
            continue
        exportable = cert.exportable is not False and cert.info.has_private_key is not False
        if exportable and options.backup_possible:
            removals.append((thumb, True))
        elif thumb in backed_up:
            kept_backup.add(thumb)  # the same certificate, backed up from another server (its source)
            removals.append((thumb, False))
        elif options.without_backup:
            removals.append((thumb, False))
        elif not exportable:
            raise RetireRefused(
                f"{server.name}: certificate {thumb} cannot be backed up (its private key is not exportable); "
                "set `retire_without_backup: true` to remove it without a backup (it can then never be rolled "
                "back), or remove it by hand")
        else:
            raise RetireRefused(
                f"{server.name}: certificate {thumb} would be removed without a backup (no password you know); set "
                "`backup_password: {env: VARIABLE}`, or `retire_without_backup: true`")
    if not removals:
        return Noop("; ".join(kept) if kept else "nothing served before this run")
    pipelines: list[tuple[Command, ...]] = []
    for thumb, backup in removals:
        if backup:
            pipelines += [(c,) for c in export_backup(server, thumb)]
    pipelines += [(remove_certificate(server, thumb),) for thumb, _ in removals]
    said = [f"retired {thumb}" + (" (backed up)" if backup else
                                  " (its backup from another server is kept)" if thumb in kept_backup else
                                  " without a backup: rolling back to it will be impossible")
            for thumb, backup in removals]
    return Send(tuple(pipelines), "; ".join(said + kept))
