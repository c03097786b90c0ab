"""Fault plan: deliberate failures a test (or `exmig lab serve`) injects into a lab server.

A rule names a request by its 1-based HTTP request number on the server (`request=k`), or
by the k-th request carrying a WSMan action (`action="Receive", request=k`), and what to do
with it. Rules fire once. The plan is plain data: JSON in, JSON out, so a separate process
can be told through a control file (`FaultPlan.watch_file`).

JSON form: {"rules": [{"kind": "http_500", "request": 3}, {"kind": "stall", "action": "Receive",
"request": 1, "seconds": 2.5}]}
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class FaultKind(Enum):
    RESET_BEFORE = "reset_before"  # close the TCP connection (RST) before executing the request
    RESET_AFTER = "reset_after"  # execute it, then reset instead of replying
    HTTP_500 = "http_500"  # empty HTTP 500 without executing
    HTTP_503 = "http_503"  # HTTP 503 Service Unavailable without executing
    OPERATION_TIMEOUT = "operation_timeout"  # WSMan OperationTimeout fault without executing
    STALL = "stall"  # sleep `seconds`, then execute and reply normally


@dataclass
class FaultRule:
    kind: FaultKind
    request: int  # 1-based: HTTP request number, or k-th request with `action`
    action: str | None = None  # short WSMan action: Create, Command, Send, Receive, Signal, Delete
    seconds: float = 0.0  # for STALL
    # With `cmdlet`: the k-th PSRP pipeline running this cmdlet, at the Receive that delivers its
    # completion (the server has acted; only the reply is at stake). Only RESET_AFTER applies there.
    cmdlet: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FaultRule:
        return cls(
            kind=FaultKind(d["kind"]),
            request=int(d["request"]),
            action=d.get("action"),
            seconds=float(d.get("seconds", 0.0)),
            cmdlet=d.get("cmdlet"),
        )


@dataclass
class FaultPlan:
    """Thread-safe set of pending rules with the counters they match against."""

    rules: list[FaultRule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _action_counts: Counter[str] = field(default_factory=Counter, repr=False)
    _cmdlet_counts: Counter[str] = field(default_factory=Counter, repr=False)
    _http_count: int = 0
    _watch: Path | None = None
    _watch_mtime: float | None = None

    def set_rules(self, rules: list[FaultRule]) -> None:
        """Replace the pending rules; counting continues from the requests already served."""
        with self._lock:
            self.rules = list(rules)

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self.rules.append(rule)

    def clear(self) -> None:
        self.set_rules([])

    @property
    def http_count(self) -> int:
        """HTTP requests counted so far (rule numbers are absolute: next request = this + 1)."""
        with self._lock:
            return self._http_count

    def action_count(self, action: str) -> int:
        with self._lock:
            return self._action_counts[action]

    def to_json(self) -> str:
        with self._lock:
            return json.dumps({"rules": [r.to_json() for r in self.rules]})

    @classmethod
    def from_json(cls, text: str) -> FaultPlan:
        plan = cls()
        plan.set_rules(_rules_from_json(text))
        return plan

    def watch_file(self, path: str | os.PathLike[str]) -> None:
        """Reload the rules from this JSON file whenever its mtime changes (checked per request)."""
        with self._lock:
            self._watch = Path(path)
            self._watch_mtime = None

    def _reload_if_changed(self) -> None:
        if self._watch is None:
            return
        try:
            mtime = self._watch.stat().st_mtime
        except OSError:
            return
        if mtime != self._watch_mtime:
            self._watch_mtime = mtime
            try:
                self.rules = _rules_from_json(self._watch.read_text(encoding="utf-8"))
            except (ValueError, KeyError, OSError):
                self.rules = []  # a half-written file must not take the server down

    def http_request(self) -> FaultRule | None:
        """Count one HTTP request; the rule for it by number, if any (removed: fires once)."""
        with self._lock:
            self._reload_if_changed()
            self._http_count += 1
            return self._take(lambda r: r.action is None and r.cmdlet is None and r.request == self._http_count)

    def wsman_request(self, action: str) -> FaultRule | None:
        """Count one request with this WSMan action; the matching per-action rule, if any."""
        with self._lock:
            self._action_counts[action] += 1
            n = self._action_counts[action]
            return self._take(
                lambda r: r.action is not None and r.action.lower() == action.lower() and r.request == n
            )

    def pipeline_completed(self, cmdlets: list[str]) -> FaultRule | None:
        """Count one completed pipeline per cmdlet it ran; the matching `cmdlet` rule, if any."""
        with self._lock:
            found: FaultRule | None = None
            for name in {c.lower() for c in cmdlets}:
                self._cmdlet_counts[name] += 1
                n = self._cmdlet_counts[name]
                found = found or self._take(lambda r, name=name, n=n: r.cmdlet is not None
                                            and r.cmdlet.lower() == name and r.request == n)
            return found

    def _take(self, pred: Any) -> FaultRule | None:
        for rule in self.rules:
            if pred(rule):
                self.rules.remove(rule)
                return rule
        return None


def _rules_from_json(text: str) -> list[FaultRule]:
    data = json.loads(text) if text.strip() else {"rules": []}
    items = data["rules"] if isinstance(data, dict) else data
    return [FaultRule.from_json(d) for d in items]
