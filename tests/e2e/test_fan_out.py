"""Targets deployed side by side: at most --parallel at once, each target's results its own, and one
target's failure stops neither the others nor hides which one failed."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from orchestrator.execute import RunOptions
from orchestrator.lab.exchange import MY
from orchestrator.playbook import Playbook
from tests.e2e.conftest import build_lab, put_file_in_the_way

TARGETS = [f"EX2007-{i:02d}" for i in range(1, 5)]


def _four_targets(playbook: Playbook) -> Playbook:
    template = playbook.targets[0]
    targets = [template.model_copy(update={"name": name, "client_names": None}) for name in TARGETS]
    return playbook.model_copy(update={"servers": [playbook.source, *targets]})


def _most_at_once(events: list[dict[str, Any]]) -> int:
    """From the order of step events: how many targets were inside their run of steps at the same time."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, e in enumerate(events):
        if e["event"] == "step" and e["server"] in TARGETS and e["step"] != "verify":
            first.setdefault(e["server"], index)
            last[e["server"]] = index
    return max(sum(1 for s in first if first[s] <= index <= last[s]) for index in range(len(events)))


def test_targets_run_side_by_side_bounded_by_parallel(tmp_path: Path) -> None:
    lab = build_lab(tmp_path, mutate=_four_targets)
    try:
        for emulated in lab.site.servers.values():
            emulated.winrm.latency = 0.02  # steps long enough to overlap
        proc, events = lab.run_json("--parallel", "2")
        assert proc.returncode == 0, proc.stderr
        assert _most_at_once(events) == 2
        for name in TARGETS:
            ends = {e["step"]: e["outcome"] for e in events
                    if e["event"] == "step" and e.get("phase") == "end" and e["server"] == name}
            assert ends.get("import") == "changed" and ends.get("enable") == "changed", (name, ends)
    finally:
        lab.site.stop()


def test_one_failing_target_does_not_stop_the_others(tmp_path: Path) -> None:
    lab = build_lab(tmp_path, mutate=_four_targets)
    try:
        # A file where EX2007-03's working folder should be: its chain and copy cannot write there.
        put_file_in_the_way(lab, "EX2007-03", "C:\\Certs")
        proc, events = lab.run_json()
        assert proc.returncode == 1
        failed = {e["server"] for e in events
                  if e["event"] == "step" and e.get("phase") == "end" and e["outcome"] == "failed"}
        assert failed == {"EX2007-03"}
        assert "EX2007-03" in proc.stderr and "already exists" in proc.stderr
        for name in set(TARGETS) - failed:
            done = [e["step"] for e in events if e["event"] == "step" and e.get("phase") == "end"
                    and e["server"] == name and e["outcome"] == "changed"]
            assert {"import", "enable"} <= set(done), (name, done)
        status = lab.exmig("status", str(lab.playbook_path))
        assert "EX2007-03" in status.stdout and "failed" in status.stdout
    finally:
        lab.site.stop()


def test_the_cli_default_is_the_executors() -> None:
    from orchestrator.cli import run

    default = inspect.signature(run).parameters["parallel"].default
    assert default == RunOptions().parallel


def test_several_failed_verifications_keep_exit_4_and_one_line_per_server(tmp_path: Path) -> None:
    lab = build_lab(tmp_path, mutate=_four_targets)
    try:
        proc, events = lab.run_json("--no-verify")
        assert proc.returncode == 0, proc.stderr
        thumb = next(e["reason"].split()[1] for e in events if e["event"] == "step" and e.get("phase") == "end"
                     and e["step"] == "import" and e["outcome"] == "changed")
        broken = ["EX2007-02", "EX2007-04"]
        for name in broken:  # someone removed it there since
            with lab.server(name).inspector.model.transaction() as model:
                model.remove(MY, thumb)
        proc, _ = lab.run_json("--step", "verify")
        assert proc.returncode == 4, proc.stderr
        lines = proc.stderr.splitlines()
        assert lines[0].startswith("exmig: error: 2 of 4 targets failed")
        for name in broken:
            assert sum(1 for line in lines if line.strip().startswith(f"{name}:") and thumb in line) == 1, lines
    finally:
        lab.site.stop()
