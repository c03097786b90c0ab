"""The fault sweep as a program: every request index of both servers x every fault kind, with figures.

    .venv/bin/python -m tests.reliability.sweep                 # the full sweep, 2 worker processes
    .venv/bin/python -m tests.reliability.sweep --kind stall --server EX2007 --index 10 --index 11
    .venv/bin/python -m tests.reliability.sweep --json sweep.json

`pytest -m sweep tests/reliability` runs the same cases as tests (one per server and kind).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.lab.faults import FaultKind
from tests.reliability.harness import KINDS, CaseResult, Figures, LabTemplate, Reference, record_reference, run_case

_worker: tuple[LabTemplate, Reference] | None = None


def _init(root: str, reference: Reference) -> None:
    global _worker
    template = LabTemplate(Path(tempfile.mkdtemp(prefix="worker-", dir=root)))
    _worker = (template, reference)


def _one(case: tuple[str, int, str]) -> CaseResult:
    assert _worker is not None
    template, reference = _worker
    server, index, kind = case
    return run_case(template, reference.state, server, index, FaultKind(kind))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.sweep")
    parser.add_argument("--kind", action="append", choices=[k.value for k in KINDS])
    parser.add_argument("--server", action="append")
    parser.add_argument("--index", action="append", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every case's result here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="exmig-sweep-") as root:
        template = LabTemplate(Path(root) / "main")
        reference = record_reference(template)
        print("fault-free run: " + ", ".join(f"{s} {n} requests" for s, n in reference.requests.items()),
              flush=True)
        cases = [(server, index, kind)
                 for server, count in reference.requests.items() if not args.server or server in args.server
                 for index in range(1, count + 1) if not args.index or index in args.index
                 for kind in (args.kind or [k.value for k in KINDS])]
        figures = Figures()
        per_kind: dict[str, Figures] = {}
        results: list[CaseResult] = []
        start = time.monotonic()
        with ProcessPoolExecutor(max_workers=args.workers, initializer=_init, initargs=(root, reference)) as pool:
            for result in pool.map(_one, cases):
                results.append(result)
                figures.add(result)
                per_kind.setdefault(result.kind, Figures()).add(result)
                if not result.ok:
                    print("NOT CONVERGED: " + result.describe(), flush=True)
        wall = time.monotonic() - start
    for kind, f in per_kind.items():
        print(f"{kind:<18} {f.line()}")
    print(f"{'total':<18} {figures.line()}; wall {wall:.0f} s")
    if args.json:
        data: dict[str, Any] = {"requests": reference.requests, "actions": reference.actions,
                                "results": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(data, indent=1))
    return 0 if figures.converged == figures.runs else 1


if __name__ == "__main__":
    sys.exit(main())
