"""The run journal: what has been done, per server and step, and what must never be lost.

One JSON file per playbook (default `.exmig/<playbook>.journal.json` beside it). It is rewritten
atomically after every step (temp file, fsync, rename, fsync of the folder), so a crash leaves
either the old or the new journal, never half of one. It holds the CSR and the issued
certificate (public data) and never a secret: no passwords, no PFX, no private key.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator.errors import ExmigError
from orchestrator.fileio import write_atomic

FORMAT = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class StepRecord:
    step: str
    server: str
    outcome: str  # ok | changed | skipped | failed | running
    started: str
    finished: str | None = None
    message: str | None = None
    attempts: int = 1


@dataclass
class Journal:
    path: Path
    playbook: str
    csr_pem: str | None = None
    # The pending request on the source, as the server reported it (thumbprint of the request).
    request_thumbprint: str | None = None
    issued_thumbprint: str | None = None
    issued_pem: str | None = None
    chain_pems: list[str] = field(default_factory=list)
    steps: dict[str, StepRecord] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    # Targets run side by side: one writer at a time, each write a whole, consistent file.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    # -- queries ----------------------------------------------------------------------------

    def done(self, key: str) -> bool:
        record = self.steps.get(key)
        return record is not None and record.outcome in ("ok", "changed", "skipped")

    # -- changes (each followed by save()) ----------------------------------------------------

    def begin(self, key: str, step: str, server: str) -> StepRecord:
        with self._lock:
            record = StepRecord(step=step, server=server, outcome="running", started=now())
            self.steps[key] = record
            self.save()
            return record

    def finish(self, key: str, outcome: str, message: str | None = None, attempts: int = 1) -> None:
        with self._lock:
            record = self.steps[key]
            record.outcome = outcome
            record.finished = now()
            record.message = message
            record.attempts = attempts
            self.save()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "playbook": self.playbook,
            "csr_pem": self.csr_pem,
            "request_thumbprint": self.request_thumbprint,
            "issued_thumbprint": self.issued_thumbprint,
            "issued_pem": self.issued_pem,
            "chain_pems": self.chain_pems,
            "steps": {k: asdict(v) for k, v in self.steps.items()},
            "runs": self.runs,
        }

    def save(self) -> None:
        with self._lock:
            write_atomic(self.path, (json.dumps(self.to_json(), indent=2) + "\n").encode())


def default_path(playbook: Path) -> Path:
    return playbook.resolve().parent / ".exmig" / f"{playbook.stem}.journal.json"


def load(path: Path, playbook: Path) -> Journal:
    """The journal at `path`, or a new empty one. An unreadable journal is an error, never replaced."""
    if not path.exists():
        return Journal(path=path, playbook=str(playbook))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        return Journal(
            path=path,
            playbook=data["playbook"],
            csr_pem=data.get("csr_pem"),
            request_thumbprint=data.get("request_thumbprint"),
            issued_thumbprint=data.get("issued_thumbprint"),
            issued_pem=data.get("issued_pem"),
            chain_pems=list(data.get("chain_pems") or []),
            steps={k: StepRecord(**v) for k, v in (data.get("steps") or {}).items()},
            runs=list(data.get("runs") or []),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExmigError(
            f"{path}: the journal is unreadable ({exc}); it is left as it is. Move it away to start over "
            "(the servers keep their state; exmig re-reads it)"
        ) from None
