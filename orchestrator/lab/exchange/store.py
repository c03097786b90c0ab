"""On-disk state of one emulated server: state.json plus content-addressed blob files.

Layout under the server's state directory (mode 0700):
  state.json            stores, services, file-system index (no secrets, no key material)
  certs/<sha1>.der      certificates and request stubs
  csrs/<sha256>.der     PKCS#10 requests
  keys/<sha256>.pem     private keys (PKCS#8 PEM, mode 0600)
  files/<sha256>.bin    contents of the emulated Windows file system (PFX files among them)
Every write goes to a temporary file in the same directory and is moved in with os.replace, so
a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from orchestrator.fileio import write_atomic

STATE_FILE = "state.json"
FORMAT_VERSION = 1


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, data, mode)


def ensure_private_dir(path: Path) -> None:
    """Create the state directory readable by its owner only (it holds private keys)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)


class BlobWriter:
    """Writes content-addressed blobs once and remembers which ones the current state references."""

    def __init__(self, root: Path) -> None:
        ensure_private_dir(root)
        self.root = root
        self.referenced: set[Path] = set()

    def put(self, folder: str, data: bytes, suffix: str) -> str:
        name = f"{folder}/{hashlib.sha256(data).hexdigest()}{suffix}"
        path = self.root / name
        if not path.exists():
            atomic_write(path, data, 0o600)
        self.referenced.add(path)
        return name

    def prune(self, folders: tuple[str, ...]) -> None:
        """Delete blobs no longer referenced (e.g. the key of a removed certificate)."""
        for folder in folders:
            directory = self.root / folder
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                if path.is_file() and path not in self.referenced and not path.name.startswith("."):
                    path.unlink()


def write_state(root: Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT_VERSION, **state}
    atomic_write(root / STATE_FILE, json.dumps(state, indent=2, sort_keys=True).encode("utf-8"), 0o600)


def read_state(root: Path) -> dict[str, Any] | None:
    path = root / STATE_FILE
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text("utf-8"))
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported state format {state.get('format')!r}")
    return state


def read_blob(root: Path, name: str) -> bytes:
    # Names come from our own state.json; refuse anything that would leave the state directory.
    path = (root / name).resolve()
    if root.resolve() not in path.parents:
        raise ValueError(f"blob name {name!r} escapes the state directory")
    return path.read_bytes()
