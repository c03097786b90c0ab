"""CLI start-up time: `exmig --help` and `exmig plan playbooks/mitserv.yml`, median of repeated runs.

Targets (issue 2/8): plan under 0.5 s, --help under 0.3 s. Run: `.venv/bin/python benchmarks/startup.py`.
It also prints the slowest imports (python -X importtime) so the cause of a regression is visible.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 15


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def top_imports(args: list[str], count: int = 8) -> list[tuple[int, str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, self_us, cumulative, name = (part.strip() for part in line.split("|", 1)[0].split(":") + line.split("|")[1:])
        rows.append((int(cumulative), name))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    cases = {
        "exmig --help": [sys.executable, "-m", "orchestrator", "--help"],
        "exmig plan playbooks/mitserv.yml": [sys.executable, "-m", "orchestrator", "plan", "playbooks/mitserv.yml"],
    }
    for label, args in cases.items():
        timed(args)  # warm the file cache
        samples = [timed(args) for _ in range(RUNS)]
        print(f"{label:<36} median {statistics.median(samples) * 1000:7.1f} ms  "
              f"min {min(samples) * 1000:7.1f} ms  ({RUNS} runs)")
        for cumulative, name in top_imports(args[1:]):
            print(f"    {cumulative / 1000:7.1f} ms  import {name}")


if __name__ == "__main__":
    main()
