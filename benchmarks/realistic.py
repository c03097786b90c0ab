"""Issue 19 benchmarks: the migration and the fan-out against servers that cost what real ones cost.

The lab's REALISTIC cost profile (orchestrator/lab/costs.py: pool opens, powershell.exe starts, the 2007 snap-in,
each cmdlet's work, all as sleeps) times `scale`, and WinRM 2.0's and Exchange 2010's limits enforced, at added
round-trip latencies. Per server, where the time went: session opens, process starts and cmdlet work (from the
lab's own counters: pools opened per configuration, powershell.exe starts, cmdlets run, each priced by the
profile) and round trips (requests x the added latency). The unavoidable work of a migration is the "minimum"
client's: one session per endpoint, each of the plan's cmdlets once, and its requests' round trips.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.clients import RunResult, run_exmig, run_plain
from benchmarks.labfarm import LabFarm
from orchestrator.lab.ca import LabCA
from orchestrator.lab.costs import REALISTIC, LabCosts, LabLimits

EXMIG = "exmig"
EXMIG_WMF5 = "exmig, hosts with WMF 5.1"
NAIVE = "naive (pool per cmdlet)"
MINIMUM = "minimum"
WINRS = "exmig, 2007 over WinRS"
WINRS_PER_COMMAND = "WinRS, one powershell.exe per command"
CLIENTS = (EXMIG, EXMIG_WMF5, NAIVE, MINIMUM, WINRS, WINRS_PER_COMMAND)
QUOTA_FAULT = 2150859173


def _run(client: str, farm: LabFarm, parallel: int | None = None) -> RunResult:
    if client in (EXMIG, EXMIG_WMF5, WINRS):
        return run_exmig(farm, parallel=parallel, label=client)
    if client == WINRS_PER_COMMAND:
        return run_exmig(farm, parallel=parallel, label=client, one_command_per_request=True)
    return run_plain(farm, per_command=client == NAIVE)


def breakdown(farm: LabFarm, costs: LabCosts, latency: float) -> dict[str, dict[str, float]]:
    """Per server: seconds of session opens, process starts, cmdlet work and round trips, and the counts."""
    out: dict[str, dict[str, float]] = {}
    for name, server in farm.servers.items():
        winrm = server.winrm
        opens = sum(n * costs.pool_open(config) for config, n in winrm.pool_opens.items())
        shell = farm.exshells.get(name)
        starts = 0.0
        processes = 0
        if shell is not None:
            for inv in shell.invocations:
                processes += 1
                starts += costs.native("powershell.exe", inv.command_line.split())
        work = 0.0
        for cmdlet in winrm.registry.ran:
            if cmdlet.lower().startswith("powershell"):
                continue  # priced as a process start
            work += costs.native(cmdlet, []) if cmdlet.lower().endswith(".exe") else costs.cmdlet(cmdlet)
        requests = len(winrm.log.records())
        out[name] = {"session_opens": opens, "process_starts": starts, "cmdlet_work": work,
                     "round_trips": requests * latency, "requests": requests, "pools": sum(winrm.pool_opens.values()),
                     "processes": processes, "cmdlets": len(winrm.registry.ran),
                     "quota_faults": sum(1 for r in winrm.log.records() if r.wsman_fault == QUOTA_FAULT),
                     **{f"peak_{k}": v for k, v in winrm.peaks.items()}}
    return out


def migration(ca: LabCA, tmp: Path, latencies_ms: list[int], scale: float,
              clients: tuple[str, ...] = CLIENTS) -> list[dict[str, Any]]:
    costs = replace(REALISTIC, scale=scale)
    rows = []
    for latency_ms in latencies_ms:
        for i, client in enumerate(clients):
            state = tmp / f"realistic-{latency_ms}-{i}"
            with LabFarm(state, ca, targets=1, latency=latency_ms / 1000,
                         powershell="5.1" if client == EXMIG_WMF5 else "2.0", costs=costs, limits=LabLimits(),
                         winrs_targets=client in (WINRS, WINRS_PER_COMMAND)) as farm:
                result = _run(client, farm)
                servers = breakdown(farm, costs, latency_ms / 1000)
                target = farm.target_names[0]
            phase = result.target_phase
            rows.append({"latency_ms": latency_ms, "client": client, "wall": result.wall, "target": target,
                         "target_phase": phase, "servers": servers,
                         "requests": sum(s["requests"] for s in servers.values())})
            print(f"  realistic migration {latency_ms} ms {client}: {rows[-1]['requests']} requests, "
                  f"{result.wall:.2f} s", file=sys.stderr)
    return rows


def fanout(ca: LabCA, tmp: Path, targets: list[int], latency_ms: int, scale: float) -> list[dict[str, Any]]:
    costs = replace(REALISTIC, scale=scale)
    rows = []
    for n in targets:
        with LabFarm(tmp / f"realistic-fanout-{n}", ca, targets=n, latency=latency_ms / 1000, costs=costs,
                     limits=LabLimits()) as farm:
            t0 = time.monotonic()
            result = run_exmig(farm, parallel=n)
            wall = time.monotonic() - t0
            servers = breakdown(farm, costs, latency_ms / 1000)
        rows.append({"targets": n, "wall": wall, "target_phase": result.target_phase, "servers": servers})
        print(f"  realistic fan-out N={n}: targets' part {result.target_phase:.2f} s, wall {wall:.2f} s",
              file=sys.stderr)
    return rows


def _total(row: dict[str, Any]) -> dict[str, float]:
    keys = ("session_opens", "process_starts", "cmdlet_work", "round_trips")
    return {k: sum(s[k] for s in row["servers"].values()) for k in keys}


def unavoidable(rows: list[dict[str, Any]], latency_ms: int) -> float:
    """The minimum client's server work and round trips: one session per endpoint, each cmdlet once."""
    minimum = next(r for r in rows if r["latency_ms"] == latency_ms and r["client"] == MINIMUM)
    return sum(_total(minimum).values())


def migration_table(rows: list[dict[str, Any]], scale: float) -> str:
    out = [f"Costs: the realistic profile x {scale:g} (every figure below is at that scale; x {1 / scale:g} for "
           "real-server seconds of server work, the round trips stay as measured).\n",
           "| RTT | client | wall (s) | vs naive | vs unavoidable | requests | per server: session opens / process "
           "starts / cmdlet work / round trips (s) |",
           "|---:|---|---:|---:|---:|---:|---|"]
    by = {(r["latency_ms"], r["client"]): r for r in rows}
    for r in rows:
        naive = by.get((r["latency_ms"], NAIVE))
        floor = unavoidable(rows, r["latency_ms"])
        per = "; ".join(f"{name}: {s['session_opens']:.2f} / {s['process_starts']:.2f} / {s['cmdlet_work']:.2f} / "
                        f"{s['round_trips']:.2f} ({s['pools']:.0f} pools, {s['processes']:.0f} processes, "
                        f"{s['requests']:.0f} requests)" for name, s in r["servers"].items())
        vs_naive = f"{naive['wall'] / r['wall']:.2f}x faster" if naive else "-"
        out.append(f"| {r['latency_ms']} ms | {r['client']} | {r['wall']:.2f} | {vs_naive} "
                   f"| {r['wall'] / floor:.2f}x | {r['requests']} | {per} |")
    return "\n".join(out)


def targets_table(rows: list[dict[str, Any]], fan: list[dict[str, Any]]) -> str:
    """The issue's targets against the measured figures."""
    out = ["| target | measured | met |", "|---|---|---|"]
    by = {(r["latency_ms"], r["client"]): r for r in rows}
    top = max(r["latency_ms"] for r in rows)
    exmig, naive = by[(top, EXMIG)], by[(top, NAIVE)]
    floor = unavoidable(rows, top)
    speed = naive["wall"] / exmig["wall"]
    out.append(f"| {top} ms RTT: migration >= 3x faster than naive | {speed:.2f}x ({exmig['wall']:.2f} s vs "
               f"{naive['wall']:.2f} s) | {'yes' if speed >= 3 else 'no'} |")
    ratio = exmig["wall"] / floor
    out.append(f"| {top} ms RTT: within 1.3x of the unavoidable work + round trips | {ratio:.2f}x ({floor:.2f} s) "
               f"| {'yes' if ratio <= 1.3 else 'no'} |")
    winrs, per_command = by[(top, WINRS)], by[(top, WINRS_PER_COMMAND)]
    w = per_command["target_phase"] / winrs["target_phase"]
    out.append(f"| {top} ms RTT: a 2007 target over WinRS >= 3x faster than one process per command (targets' "
               f"part) | {w:.2f}x ({winrs['target_phase']:.2f} s vs {per_command['target_phase']:.2f} s; "
               f"{winrs['servers'][winrs['target']]['processes']:.0f} vs "
               f"{per_command['servers'][per_command['target']]['processes']:.0f} processes) | "
               f"{'yes' if w >= 3 else 'no'} |")
    fewer = naive["requests"] / exmig["requests"]
    out.append(f"| stock PowerShell 2.0 hosts: >= 3x fewer requests than naive | {fewer:.2f}x ({exmig['requests']} "
               f"vs {naive['requests']}) | {'yes' if fewer >= 3 else 'no'} |")
    if fan:
        one = next((f for f in fan if f["targets"] == 1), None)
        big = max(fan, key=lambda f: f["targets"])
        if one is not None and big is not one:
            f = big["target_phase"] / one["target_phase"]
            faults = sum(s["quota_faults"] for s in big["servers"].values())
            shells = max(s["peak_shells"] for s in big["servers"].values())
            ops = max(s["peak_operations"] for s in big["servers"].values())
            out.append(f"| {big['targets']} targets: within 1.5x of one target's time, no limit exceeded | "
                       f"{f:.2f}x ({big['target_phase']:.2f} s vs {one['target_phase']:.2f} s); quota faults "
                       f"{faults}, peak shells {shells}, peak operations {ops} per server | "
                       f"{'yes' if f <= 1.5 and faults == 0 else 'no'} |")
    return "\n".join(out)


def fanout_table(fan: list[dict[str, Any]]) -> str:
    out = ["| targets | targets' part (s) | whole run (s) | quota faults | peak shells / operations / Exchange "
           "sessions (highest server) |", "|---:|---:|---:|---:|---|"]
    for f in fan:
        servers = f["servers"].values()
        out.append(f"| {f['targets']} | {f['target_phase']:.2f} | {f['wall']:.2f} | "
                   f"{sum(s['quota_faults'] for s in servers)} | {max(s['peak_shells'] for s in servers)} / "
                   f"{max(s['peak_operations'] for s in servers)} / "
                   f"{max(s['peak_exchange_sessions'] for s in servers)} |")
    return "\n".join(out)
