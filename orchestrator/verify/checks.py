"""Run many TLS checks (server x service x name) with bounded concurrency and return findings in order.

Which endpoints and names to check comes from the caller (the playbook: which names reach which server, on
which ports); this module only probes and judges them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cryptography import x509

from orchestrator.verify.report import Finding, judge
from orchestrator.verify.tls_probe import ServiceKind, probe

__all__ = ["MAX_WORKERS", "TlsCheck", "run_tls_checks"]

MAX_WORKERS = 16  # concurrent probes; each is bounded by its own timeout


@dataclass(frozen=True)
class TlsCheck:
    server: str  # the playbook's server name, as shown in the report
    host: str
    port: int
    service: ServiceKind
    sni: str
    expected_thumbprint: str
    expected_intermediates: frozenset[str] = field(default_factory=frozenset)


def run_tls_checks(
    checks: Sequence[TlsCheck],
    *,
    roots: Sequence[x509.Certificate] | None = None,
    warn_days: int = 30,
    timeout: float = 10.0,
    workers: int = 8,
    now: dt.datetime | None = None,
) -> list[Finding]:
    """Probe and judge every check; the result has one finding per check, in the order given.

    Total time is at most about ceil(len(checks) / workers) * timeout."""
    workers = max(1, min(workers, MAX_WORKERS, len(checks) or 1))

    def one(check: TlsCheck) -> Finding:
        presented = probe(check.host, check.port, check.service, check.sni, timeout, roots=roots, now=now)
        return judge(presented, check.expected_thumbprint, check.expected_intermediates, check.sni, warn_days,
                     server=check.server)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exmig-verify") as pool:
        return list(pool.map(one, checks))
