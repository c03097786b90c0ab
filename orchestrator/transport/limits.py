"""Per-server budgets the transports draw from, so exmig never holds more shells, Exchange sessions or
concurrent operations on a server than it allows one user (`playbook.ServerLimits`).

A budget is per (host, port, user): the server counts per user, and every session exmig opens to the same
place as the same user draws from one budget, whichever playbook entry (an alias, a second role) it comes
from. WinRM-hosted shells (/wsman, WinRS's cmd shell) count against MaxShellsPerUser; Exchange 2010's
/PowerShell sessions (IIS-hosted) against PowerShellMaxConcurrency; every request in progress against
MaxConcurrentOperationsPerUser. Waiting for room is bounded in time: past it the request is a transient
failure (retried by the executor), never an extra shell.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orchestrator.transport.base import TransientError


@dataclass(frozen=True)
class Limits:
    shells: int = 5
    operations: int = 15
    exchange_sessions: int = 18
    idle_timeout: float = 180.0


class _Pool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self.peak = 0
        self.cond = threading.Condition()

    def take(self, server: str, what: str, wait: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.used < self.size, timeout=wait):
                raise TransientError(server, f"all {self.size} {what} this server allows are in use")
            self.used += 1
            self.peak = max(self.peak, self.used)

    def give(self) -> None:
        with self.cond:
            self.used = max(0, self.used - 1)
            self.cond.notify()


_LOCK = threading.Lock()
_POOLS: dict[tuple[str, str, int, str], _Pool] = {}


def _pool(kind: str, host: str, port: int, user: str, size: int) -> _Pool:
    key = (kind, host.lower(), port, user.lower())
    with _LOCK:
        pool = _POOLS.get(key)
        if pool is None or pool.size != size:
            # A run has one playbook, so one size per key; a new size (another run in this process) starts afresh.
            pool = _POOLS[key] = _Pool(size)
        return pool


class Budget:
    """One session's view of its server's budgets."""

    def __init__(self, server: str, host: str, user: str, limits: Limits, wait: float) -> None:
        self.server = server
        self._host = host
        self._user = user
        self.limits = limits
        self._wait = wait

    def _shells(self, port: int, exchange: bool) -> _Pool:
        if exchange:
            return _pool("exchange", self._host, port, self._user, self.limits.exchange_sessions)
        return _pool("shells", self._host, port, self._user, self.limits.shells)

    def open_shell(self, port: int, exchange: bool) -> None:
        """Take room for one shell (call close_shell when it is deleted or given up)."""
        self._shells(port, exchange).take(self.server, "Exchange sessions" if exchange else "shells", self._wait)

    def close_shell(self, port: int, exchange: bool) -> None:
        self._shells(port, exchange).give()

    @contextmanager
    def operation(self, port: int) -> Iterator[None]:
        pool = _pool("operations", self._host, port, self._user, self.limits.operations)
        pool.take(self.server, "concurrent operations", self._wait)
        try:
            yield
        finally:
            pool.give()


def peaks() -> dict[tuple[str, str, int, str], int]:
    """The most of each budget in use at once so far (tests, benchmarks)."""
    with _LOCK:
        return {key: pool.peak for key, pool in _POOLS.items()}
