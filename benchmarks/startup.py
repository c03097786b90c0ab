"""CLI start-up time: `exmig --help` and `exmig plan playbooks/mitserv.yml`, median of repeated runs.

Targets (issue 2/8): plan under 0.5 s, --help under 0.3 s. Run alone: `.venv/bin/python benchmarks/startup.py`
(or as part 3 of `.venv/bin/python -m benchmarks.run`). It runs the installed `exmig` script (what an admin
types; falls back to `python -m orchestrator`) and prints the slowest imports (python -X importtime), so
the cause of a regression is visible.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = 15
TIMEOUT = 30  # seconds per run
# As on an admin's machine, the warm-up run may write bytecode (this sandbox sets PYTHONDONTWRITEBYTECODE,
# which would make every measured run compile exmig's changed modules from source again).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=TIMEOUT,
                   env=ENV)
    return time.perf_counter() - start


def top_imports(args: list[str], count: int = 8) -> list[tuple[float, str]]:
    """(cumulative ms, module) of the slowest imports of `python -m orchestrator <args>`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False, env=ENV)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        fields = line[len("import time:"):].split("|")
        rows.append((int(fields[1]) / 1000, fields[2].strip()))
    return sorted(rows, reverse=True)[:count]


def _exmig() -> list[str]:
    script = Path(sys.executable).parent / "exmig"
    if script.exists():
        return [str(script)]
    found = shutil.which("exmig")
    return [found] if found else [sys.executable, "-m", "orchestrator"]


CASES: list[tuple[str, list[str], float]] = [
    ("exmig --help", ["--help"], 0.3),
    ("exmig plan playbooks/mitserv.yml", ["plan", "playbooks/mitserv.yml"], 0.5),
]


def measure(runs: int = RUNS) -> list[dict[str, Any]]:
    out = []
    exmig = _exmig()
    for label, args, target in CASES:
        timed(exmig + args)  # warm the file cache
        samples = [timed(exmig + args) for _ in range(runs)]
        out.append({"label": label, "median": statistics.median(samples), "min": min(samples), "runs": runs,
                    "target": target, "samples": samples, "imports": top_imports(args)})
    return out


def main() -> None:
    for row in measure():
        print(f"{row['label']:<36} median {row['median'] * 1000:7.1f} ms  min {row['min'] * 1000:7.1f} ms  "
              f"({row['runs']} runs, target < {row['target'] * 1000:.0f} ms)")
        for ms, name in row["imports"]:
            print(f"    {ms:7.1f} ms  import {name}")


if __name__ == "__main__":
    main()
