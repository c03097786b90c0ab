"""The run journal: what has been done, per server and step, and what must never be lost.

One JSON file per playbook (default `.exmig/<playbook>.journal.json` beside it). It is rewritten
atomically after every step (temp file, fsync, rename, fsync of the folder), so a crash leaves
either the old or the new journal, never half of one. It holds the CSR and the issued
certificate (public data) and never a secret: no passwords, no PFX, no private key.

Targets run side by side and each step saves twice (start and end), so saves use group commit:
`save()` returns only once the caller's change is on disk, but callers that arrive while a write
is running share the next write instead of queueing one write each (50 targets finishing a step
at once cost two or three fsyncs, not fifty).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.errors import ExmigError
from orchestrator.fileio import write_atomic

FORMAT = 1

# A save waits at most this long for the write that covers it (another caller's, then its own).
# Far above any healthy fsync; reached only when the disk hangs, and then the run must stop rather
# than carry on with steps it cannot record.
SAVE_TIMEOUT = 120.0


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class StepRecord:
    step: str
    server: str
    outcome: str  # ok | changed | skipped | failed | running
    started: str
    finished: str | None = None
    message: str | None = None
    attempts: int = 1
    # What the server warned about during the step ("Cmdlet: text"), as the server wrote it.
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # Fields by hand, not dataclasses.asdict: asdict deep-copies recursively and was most of
        # the cost of a save with 500 steps (3.3 ms of 4.1 ms); every field here is a plain value.
        return {"step": self.step, "server": self.server, "outcome": self.outcome, "started": self.started,
                "finished": self.finished, "message": self.message, "attempts": self.attempts,
                "warnings": list(self.warnings)}


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
    # What a step changed, recorded before it sent the change (the coexistence step's URLs before), per step key:
    # what `exmig rollback` restores.
    changes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The names in use on the servers as read before the request, judged against the certificate (names_in_use.py).
    names_in_use: list[dict[str, str]] = field(default_factory=list)
    # What served each server before the first run changed anything (orchestrator/previous.py served_before),
    # by server name; recorded once, so a resumed run keeps the first run's record. Absent in older journals.
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Targets run side by side. `_lock` guards the data above (changes and the snapshot a write
    # takes); `_commit` guards the group-commit counters below. Never both held at once, so a
    # caller holding `_lock` may call save() without deadlocking against a writer.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _commit: threading.Condition = field(default_factory=lambda: threading.Condition(threading.Lock()),
                                         init=False, repr=False, compare=False)
    _requested: int = field(default=0, init=False, repr=False, compare=False)  # save() calls so far, numbered
    _durable: int = field(default=0, init=False, repr=False, compare=False)  # saves up to here are on disk
    _writing: bool = field(default=False, init=False, repr=False, compare=False)  # one writer at a time

    # -- queries ----------------------------------------------------------------------------

    def record_previous(self, server: str, record: dict[str, Any]) -> bool:
        """Keep what served `server` before, unless a record is there already (the first run's). Saved."""
        with self._lock:
            if server in self.previous:
                return False
            self.previous[server] = record
        self.save()
        return True

    def done(self, key: str) -> bool:
        record = self.steps.get(key)
        return record is not None and record.outcome in ("ok", "changed", "skipped")

    # -- changes (each followed by save()) ----------------------------------------------------

    def begin(self, key: str, step: str, server: str) -> StepRecord:
        with self._lock:
            record = StepRecord(step=step, server=server, outcome="running", started=now())
            self.steps[key] = record
        self.save()  # outside the data lock: other targets keep changing while this one waits
        return record

    def warn(self, key: str, text: str) -> None:
        """Noted with the step's record; on disk with the step's next save (its finish)."""
        with self._lock:
            record = self.steps.get(key)
            if record is not None:
                record.warnings.append(text)

    def record_changes(self, key: str, changes: list[dict[str, Any]]) -> None:
        """Before a change is sent: what it changes, with the value before. A change recorded by an earlier attempt
        keeps its value before (the first one is the server's own; a later read may see the lost attempt's)."""
        with self._lock:
            kept = self.changes.setdefault(key, [])
            known = {(c.get("server"), c.get("service"), c.get("property")) for c in kept}
            kept += [c for c in changes if (c.get("server"), c.get("service"), c.get("property")) not in known]
        self.save()

    def finish(self, key: str, outcome: str, message: str | None = None, attempts: int = 1) -> None:
        with self._lock:
            record = self.steps[key]
            record.outcome = outcome
            record.finished = now()
            record.message = message
            record.attempts = attempts
        self.save()

    def to_json(self) -> dict[str, Any]:
        """A snapshot that shares nothing mutable with the journal (so it can be encoded unlocked)."""
        with self._lock:
            return {
                "format": FORMAT,
                "playbook": self.playbook,
                "csr_pem": self.csr_pem,
                "request_thumbprint": self.request_thumbprint,
                "issued_thumbprint": self.issued_thumbprint,
                "issued_pem": self.issued_pem,
                "chain_pems": list(self.chain_pems),
                "steps": {k: v.to_json() for k, v in self.steps.items()},
                "runs": [dict(run) for run in self.runs],
                "changes": {k: [dict(c) for c in v] for k, v in self.changes.items()},
                "names_in_use": [dict(n) for n in self.names_in_use],
                "previous": json.loads(json.dumps(self.previous)),  # plain data, copied
            }

    def save(self) -> None:
        """Return once every change made before this call is on disk (atomic rename, fsync'd).

        Each call takes a number. The writer notes the highest number handed out, then snapshots
        the journal: every change numbered up to there was made before its save() call, so the
        snapshot holds it. Callers that arrive while a write runs wait for it; if it covers their
        number they return, otherwise one of them writes next, for all of them. A failed write
        raises in its writer only; the waiters then try again themselves.
        """
        deadline = time.monotonic() + SAVE_TIMEOUT
        with self._commit:
            self._requested += 1
            mine = self._requested
            # wait_for re-checks after every wake-up and gives up at the deadline: bounded.
            if not self._commit.wait_for(lambda: self._durable >= mine or not self._writing,
                                         timeout=max(0.0, deadline - time.monotonic())):
                raise ExmigError(f"{self.path}: the journal could not be written within {SAVE_TIMEOUT:.0f} s "
                                 "(another write is still running); stopping rather than run unrecorded steps")
            if self._durable >= mine:
                return
            self._writing = True
            upto = self._requested
        written = False
        try:
            write_atomic(self.path, encode(self.to_json()))
            written = True
        finally:
            with self._commit:
                self._writing = False
                if written:
                    # Writers never overlap and each snapshots later than the one before: monotonic.
                    self._durable = upto
                self._commit.notify_all()


def encode(data: dict[str, Any]) -> bytes:
    """The journal's text: one line per step record, so `grep SERVER01 x.journal.json` stays useful.

    Not `indent=`: with an indent the json module leaves its C encoder for the pure-Python one
    (about 3x slower, on the path of every step). Instead the compact text gets a line break after
    each `}, "`: inside a JSON string every `"` is escaped as `\\"`, so that sequence only occurs
    between values, where whitespace is allowed. 500 steps: 1.0 ms, against 0.97 ms for one line.
    """
    return (json.dumps(data).replace('}, "', '},\n "') + "\n").encode()


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
            changes={k: list(v) for k, v in (data.get("changes") or {}).items()},  # absent in older journals
            names_in_use=list(data.get("names_in_use") or []),
            previous=dict(data.get("previous") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExmigError(
            f"{path}: the journal is unreadable ({exc}); it is left as it is. Move it away to start over "
            "(the servers keep their state; exmig re-reads it)"
        ) from None
