"""Issue 8 benchmarks, one command: `.venv/bin/python -m benchmarks.run` (from the repository root).

1. The full 2010 -> 2007 migration (playbooks/lab.yml's servers) at several added latencies per request:
   HTTP requests (from the lab's request logs) and wall time for exmig, the naive pypsrp baseline and
   the protocol minimum (see benchmarks/clients.py and BENCHMARKS.md for the definitions).
2. Fan-out: the same migration with N 2007 targets at one latency: wall time of the targets' part and
   requests per target, with exmig's default --parallel and with --parallel N.
3. CLI start-up: `exmig --help` and `exmig plan playbooks/mitserv.yml` (benchmarks/startup.py).
4. Realistic costs (issue 19, benchmarks/realistic.py): the migration for exmig, the naive per-cmdlet baseline,
   the minimum, and a 2007 target over WinRS (exmig, and one powershell.exe per command), then the fan-out,
   against the lab's REALISTIC cost profile (x --cost-scale) with WinRM 2.0's and Exchange's limits enforced;
   where the time goes per server, and the issue's targets against the measured figures.

Prints Markdown tables (the ones in BENCHMARKS.md) and writes every number to --json.
Everything runs on 127.0.0.1; every client and lab request is bounded by its timeouts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import realistic, startup
from benchmarks.clients import RunResult, extra_commands, run_exmig, run_plain
from benchmarks.labfarm import LabFarm, LabFarmProcess, ServerCount
from orchestrator.execute import RunOptions
from orchestrator.lab.ca import LabCA

ROOT = Path(__file__).resolve().parent.parent
MAX_TARGETS = 64  # exmig's --parallel maximum; also keeps a run within minutes


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "orchestrator"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "?", ""
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "commit": commit + (" + uncommitted changes in orchestrator/" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": _load(),
    }


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


# --- 1. the migration at several latencies ---------------------------------------------------------


def _per_server(c: dict[str, ServerCount]) -> dict[str, Any]:
    return {name: {"requests": s.requests, "minimum": s.minimum, "actions": dict(s.actions)} for name, s in c.items()}


# exmig against hosts whose Windows PowerShell is 5.1 (WMF upgraded; PSRP 2.3): several commands per
# pipeline where the endpoint allows it. Every other client runs against stock hosts (PowerShell 2.0).
EXMIG_WMF5 = "exmig, hosts with WMF 5.1"
HOSTS_POWERSHELL = {EXMIG_WMF5: "5.1"}


def _run_client(client: str, farm: LabFarm, parallel: int | None = None) -> RunResult:
    if client in ("exmig", EXMIG_WMF5):
        return run_exmig(farm, parallel=parallel, label=client)
    return run_plain(farm, per_command=client == "naive")


def migration(ca: LabCA, tmp: Path, latencies_ms: list[int], farm_class: type[LabFarm]) -> list[dict[str, Any]]:
    rows = []
    clients = ["exmig", EXMIG_WMF5, "naive", "minimum"]
    for latency_ms in latencies_ms:
        for i, client in enumerate(clients):
            state = tmp / f"migration-{latency_ms}-{i}"
            with farm_class(state, ca, targets=1, latency=latency_ms / 1000,
                            powershell=HOSTS_POWERSHELL.get(client, "2.0")) as farm:
                result = _run_client(client, farm)
                c = farm.counts()
            rows.append({"latency_ms": latency_ms, "client": client, "wall": result.wall,
                         "requests": sum(s.requests for s in c.values()), "servers": _per_server(c),
                         "commands": result.commands})
            print(f"  migration latency {latency_ms} ms {client}: {rows[-1]['requests']} requests, "
                  f"{result.wall:.2f} s", file=sys.stderr)
    return rows


def migration_table(rows: list[dict[str, Any]]) -> str:
    out = [("| added latency | client | requests EX2010 | requests EX2007 | requests total | wall (s) "
            "| requests vs naive | requests vs minimum | wall vs naive |"),
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(r["latency_ms"], r["client"]): r for r in rows}
    for r in rows:
        naive = by[(r["latency_ms"], "naive")]
        # The minimum: the minimum client's requests less the Receives only timing made necessary.
        minimum = sum(s["minimum"] for s in by[(r["latency_ms"], "minimum")]["servers"].values())
        servers = list(r["servers"].values())
        out.append(
            f"| {r['latency_ms']} ms | {r['client']} | {servers[0]['requests']} | {servers[1]['requests']} "
            f"| {r['requests']} | {r['wall']:.2f} | {r['requests'] / naive['requests']:.2f}x "
            f"| {r['requests'] / minimum:.2f}x | {r['wall'] / naive['wall']:.2f}x |")
    return "\n".join(out)


def overhead_notes(rows: list[dict[str, Any]], client: str = "exmig") -> str:
    """Which cmdlets `client` sends beyond the plan's (from the last latency run), per server."""
    last = max(r["latency_ms"] for r in rows)
    exmig = next(r for r in rows if r["latency_ms"] == last and r["client"] == client)
    minimum = next(r for r in rows if r["latency_ms"] == last and r["client"] == "minimum")
    # A batched pipeline ("New-Item + Set-Content") counts as its cmdlets: batching shows as fewer requests.
    sent = {server: [n for name in names for n in name.split(" + ")] for server, names in exmig["commands"].items()}
    extra = extra_commands(sent, minimum["commands"])
    lines = []
    for server, names in extra.items():
        total = sum(names.values())
        parts = ", ".join(f"{n}x {name}" for name, n in names.most_common())
        e, m = exmig["servers"][server], minimum["servers"][server]
        lines.append(f"- {server}: {e['requests']} requests, minimum {m['minimum']}: {total} cmdlets beyond "
                     f"the plan's ({parts}) = {2 * total} requests (Command + Receive each)"
                     + _action_diff(e["actions"], m["actions"], e["requests"] - m["minimum"] - 2 * total))
    return "\n".join(lines)


def _action_diff(exmig: dict[str, int], minimum: dict[str, int], unexplained: int) -> str:
    if unexplained == 0:
        return ""
    if unexplained < 0:
        return f"; {-unexplained} requests saved by sending several cmdlets in one pipeline"
    diff = Counter(exmig)
    diff.subtract(minimum)
    detail = ", ".join(f"{a} {n:+d}" for a, n in sorted(diff.items()) if n)
    return (f"; {unexplained:+d} more requests, timing or pool differences (actions vs the minimum client's: "
            f"{detail})")


# --- 2. fan-out -------------------------------------------------------------------------------------


def fanout(ca: LabCA, tmp: Path, targets: list[int], latency_ms: int, parallels: list[str],
           farm_class: type[LabFarm]) -> list[dict[str, Any]]:
    rows = []
    default = RunOptions().parallel
    clients = ["exmig", EXMIG_WMF5]
    for n in targets:
        if not 1 <= n <= MAX_TARGETS:
            raise SystemExit(f"--targets: {n} is outside 1..{MAX_TARGETS}")
        wanted: list[int] = []
        for p in parallels:
            value = default if p == "default" else n if p == "all" else int(p)
            value = max(1, min(value, n, MAX_TARGETS))
            if value not in wanted:
                wanted.append(value)
        for (i, client), parallel in itertools.product(enumerate(clients), wanted):
            state = tmp / f"fanout-{n}-{parallel}-{i}"
            t0 = time.monotonic()
            with farm_class(state, ca, targets=n, latency=latency_ms / 1000,
                            powershell=HOSTS_POWERSHELL.get(client, "2.0")) as farm:
                built = time.monotonic() - t0
                cpu, lab_cpu = time.process_time(), farm.lab_cpu()
                result = _run_client(client, farm, parallel)
                cpu = time.process_time() - cpu
                lab_after = farm.lab_cpu()
                lab_cpu = lab_after - lab_cpu if lab_after is not None and lab_cpu is not None else None
                c = farm.counts()
                per_target = [c[name].requests for name in farm.target_names]
                source = c[farm.source_name].requests
            rows.append({"targets": n, "client": client, "parallel": parallel, "cpu": cpu, "lab_cpu": lab_cpu, "default_parallel": parallel == min(default, n),
                         "wall": result.wall, "target_phase": result.target_phase, "lab_build": built,
                         "per_target_mean": statistics.mean(per_target), "per_target_min": min(per_target),
                         "per_target_max": max(per_target), "source_requests": source,
                         "total_requests": source + sum(per_target)})
            print(f"  fan-out {client} N={n} parallel={parallel}: phase {result.target_phase:.2f} s, wall {result.wall:.2f} s, "
                  f"{rows[-1]['per_target_mean']:.1f} requests/target", file=sys.stderr)
    return rows


def fanout_table(rows: list[dict[str, Any]]) -> str:
    one = {r["client"]: r for r in rows if r["targets"] == 1}
    out = [("| client | targets N | --parallel | targets' part (s) | vs N=1 | whole run (s) | vs N=1 | CPU client / lab (s) "
            "| requests per target (mean, min-max) | source requests |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = one.get(r["client"])
        phase = f"{r['target_phase'] / base['target_phase']:.2f}x" if base else "-"
        whole = f"{r['wall'] / base['wall']:.2f}x" if base else "-"
        lab = "in client" if r["lab_cpu"] is None else f"{r['lab_cpu']:.1f}"
        out.append(f"| {r['client']} | {r['targets']} | {r['parallel']}{' (default)' if r['default_parallel'] else ''} "
                   f"| {r['target_phase']:.2f} | {phase} | {r['wall']:.2f} | {whole} | {r['cpu']:.1f} / {lab} "
                   f"| {r['per_target_mean']:.1f} ({r['per_target_min']}-{r['per_target_max']}) "
                   f"| {r['source_requests']} |")
    return "\n".join(out)


# --- 3. start-up -------------------------------------------------------------------------------------


def startup_table(rows: list[dict[str, Any]]) -> str:
    out = ["| command | median (ms) | min (ms) | runs | target | largest imports (cumulative ms) |",
           "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        imports = ", ".join(f"{name} {ms:.0f}" for ms, name in r["imports"][:4])
        out.append(f"| `{r['label']}` | {r['median'] * 1000:.0f} | {r['min'] * 1000:.0f} | {r['runs']} "
                   f"| < {r['target'] * 1000:.0f} | {imports} |")
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--latencies", type=_ints, default=[0, 20, 100], help="ms added per request (part 1)")
    parser.add_argument("--targets", type=_ints, default=[1, 5, 20, 50], help="fan-out target counts (part 2)")
    parser.add_argument("--fanout-latency", type=int, default=50, help="ms added per request (part 2)")
    parser.add_argument("--parallel", default="default,16,all",
                        help="fan-out concurrency: 'default' (exmig's), 'all' (= N), or numbers; comma-separated")
    parser.add_argument("--startup-runs", type=int, default=15, help="runs per start-up command (part 3)")
    parser.add_argument("--only", default="migration,fanout,startup,realistic", help="which parts to run")
    parser.add_argument("--realistic-latencies", type=_ints, default=[20, 100], help="RTT in ms (part 4)")
    parser.add_argument("--realistic-targets", type=_ints, default=[1, 50], help="fan-out target counts (part 4)")
    parser.add_argument("--realistic-fanout-latency", type=int, default=100, help="RTT in ms (part 4's fan-out)")
    parser.add_argument("--cost-scale", type=float, default=1.0,
                        help="the realistic profile's scale (part 4): 0.5 halves every server cost")
    parser.add_argument("--lab", choices=("process", "inline"), default="process",
                        help="lab servers in a child process (default: their CPU work does not share the client's "
                             "GIL, like remote servers) or in the benchmark's own process")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json",
                        help="where to write all numbers")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if not 1 <= args.startup_runs <= 100:
        parser.error("--startup-runs must be in 1..100")

    results: dict[str, Any] = {"machine": _machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="exmig-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ca = LabCA.load_or_create(tmp / "ca")
        farm_class = LabFarmProcess if args.lab == "process" else LabFarm
        if "migration" in parts:
            results["migration"] = migration(ca, tmp, args.latencies, farm_class)
        if "fanout" in parts:
            results["fanout"] = fanout(ca, tmp, args.targets, args.fanout_latency, args.parallel.split(","),
                                       farm_class)
        if "realistic" in parts:
            if not 0 < args.cost_scale <= 1:
                parser.error("--cost-scale must be in (0, 1]")
            results["realistic"] = realistic.migration(ca, tmp, args.realistic_latencies, args.cost_scale)
            results["realistic_fanout"] = realistic.fanout(ca, tmp, args.realistic_targets,
                                                           args.realistic_fanout_latency, args.cost_scale)
    if "startup" in parts:
        results["startup"] = startup.measure(args.startup_runs)
    results["seconds"] = time.monotonic() - started
    results["load_after"] = _load()

    m = results["machine"]
    print(f"Machine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, {m['platform']}; exmig {m['commit']}; "
          f"{m['date']}; benchmark took {results['seconds']:.0f} s; load average {m['load']} before, "
          f"{results['load_after']} after (1/5/15 min)\n")
    if "migration" in results:
        print("### 1. Full 2010 -> 2007 migration\n")
        print(migration_table(results["migration"]))
        for client in ("exmig", EXMIG_WMF5):
            if any(r["client"] == client for r in results["migration"]):
                print(f"\n{client}: requests beyond the minimum, per server (highest latency):\n")
                print(overhead_notes(results["migration"], client))
        print()
    if "fanout" in results:
        print(f"### 2. Fan-out at {args.fanout_latency} ms per request\n")
        print(fanout_table(results["fanout"]) + "\n")
    if "startup" in results:
        print("### 3. CLI start-up\n")
        print(startup_table(results["startup"]) + "\n")
    if "realistic" in results:
        print("### 4. Realistic server costs and limits\n")
        print(realistic.migration_table(results["realistic"], args.cost_scale) + "\n")
        print(f"Fan-out at {args.realistic_fanout_latency} ms RTT, --parallel = N:\n")
        print(realistic.fanout_table(results["realistic_fanout"]) + "\n")
        print("Issue 19's targets:\n")
        print(realistic.targets_table(results["realistic"], results["realistic_fanout"]) + "\n")
    args.json.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    print(f"(all numbers: {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json})")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, Counter):
        return dict(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    sys.exit(main())
