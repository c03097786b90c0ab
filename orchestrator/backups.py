"""Backups of retired certificates: PFX files beside the journal that open with a password the admin knows.

A certificate is only removed once its backup is on the workstation's disk and opens (`check_backup`), so a
crash between export and removal leaves the certificate on the server and a backup on disk, never neither.
Files are written 0600 (a PFX holds a private key) and never overwritten: a backup exmig wrote once stays the
one the admin may already have put away.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from cryptography.hazmat.primitives.serialization import pkcs12

from orchestrator.certs import thumbprint as sha1_thumbprint
from orchestrator.errors import ExmigError
from orchestrator.fileio import write_atomic
from orchestrator.secret_keys import backup_password_source

__all__ = ["backup_folder", "backup_password_source", "backup_path", "check_backup", "write_backup"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def backup_folder(journal: Path) -> Path:
    """Beside the journal: journal.json -> journal.backups/."""
    return journal.with_name(journal.stem + ".backups")


def backup_path(journal: Path, server: str, thumbprint: str) -> Path:
    return backup_folder(journal) / f"{_SAFE.sub('_', server)}-{thumbprint.upper()}.pfx"


def backed_up(journal: Path) -> dict[str, Path]:
    """Thumbprint -> a backup of that certificate beside the journal, from whichever server it was exported on
    (the same certificate on a 2007 target, whose key cannot be exported, is backed up by its source's copy)."""
    folder = backup_folder(journal)
    found: dict[str, Path] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*-*.pfx")):
            found.setdefault(path.stem.rsplit("-", 1)[1].upper(), path)
    return found


def check_backup(data: bytes, password: str, thumbprint: str) -> None:
    """The backup opens with `password` and holds the certificate `thumbprint` with its private key."""
    try:
        key, cert, _ = pkcs12.load_key_and_certificates(data, password.encode())
    except ValueError:
        raise ExmigError(f"the backup of certificate {thumbprint} does not open with the backup password; "
                         "nothing was removed") from None
    if cert is None or key is None or sha1_thumbprint(cert) != thumbprint.upper():
        raise ExmigError(f"the backup of certificate {thumbprint} does not hold that certificate with its private "
                         "key; nothing was removed")


def write_backup(journal: Path, server: str, thumbprint: str, data: bytes) -> tuple[Path, bool]:
    """Write the backup 0600, atomically, never over an existing file. Returns (path, written): an existing
    backup (an earlier run exported it) is kept and `written` is False."""
    path = backup_path(journal, server, thumbprint)
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        return path, False
    partial = folder / f".{path.name}.partial"
    write_atomic(partial, data, 0o600)
    try:
        os.link(partial, path)  # fails if the name exists: no window in which another writer's file is replaced
    except FileExistsError:
        return path, False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(partial)
    return path, True
