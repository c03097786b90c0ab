"""Per-server request log and counters that tests and benchmarks read.

One record per HTTP request the server answered (or deliberately failed). Thread-safe: the
HTTP server handles connections on several threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    seq: int  # 1-based HTTP request number on this server
    method: str
    path: str
    action: str  # short WSMan action ("Create", "Receive"...), "" for auth-only/empty requests
    status: int  # HTTP status sent; 0 when the connection was reset instead
    bytes_in: int
    bytes_out: int
    duration: float  # seconds, from request line to last byte written
    shell_id: str | None = None
    command_id: str | None = None
    auth: str = ""  # "basic", "negotiate", "" (still unauthenticated)
    mechanism: str = ""  # under negotiate/kerberos: "kerberos" or "ntlm"
    encrypted: bool = False
    ntlm_refused: bool = False  # refused: NTLM on an endpoint that takes Kerberos only
    fault: str | None = None  # the injected fault kind, if any
    wsman_fault: int | None = None  # WSManFault code of a SOAP fault reply
    connection: int = 0  # id of the TCP connection (to see keep-alive and NTLM per-connection auth)


@dataclass
class RequestLog:
    """Keeps the last `max_records` records (a long `lab serve` must not grow without bound);
    `dropped` says how many older ones were discarded. Counters cover the kept records."""

    max_records: int = 100_000
    _records: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0
    dropped: int = 0

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            if len(self._records) > self.max_records:
                excess = len(self._records) - self.max_records // 2
                del self._records[:excess]
                self.dropped += excess

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return sorted(self._records, key=lambda r: r.seq)

    def clear(self) -> None:
        """Forget the records (the request numbering keeps running; fault rules count on)."""
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def count(self, action: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self._records
                if (action is None or r.action == action) and (status is None or r.status == status)
            )

    def by_action(self) -> Counter[str]:
        with self._lock:
            return Counter(r.action or "(auth)" for r in self._records)

    def by_status(self) -> Counter[int]:
        with self._lock:
            return Counter(r.status for r in self._records)

    def faults(self) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._records if r.fault]

    def totals(self) -> dict[str, float]:
        with self._lock:
            return {
                "requests": len(self._records),
                "bytes_in": sum(r.bytes_in for r in self._records),
                "bytes_out": sum(r.bytes_out for r in self._records),
                "duration": sum(r.duration for r in self._records),
                "connections": len({r.connection for r in self._records}),
            }

    def actions(self) -> list[str]:
        """The sequence of actions ('' shown as '(auth)'), handy in assertions."""
        return [r.action or "(auth)" for r in self.records()]
