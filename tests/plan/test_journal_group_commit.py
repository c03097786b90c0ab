"""The journal's group commit: many targets saving at once share writes, and none loses its change.

Real threads, a real file in tmp_path, the real write_atomic. Only counting tests wrap
write_atomic (it still writes); the slow-disk one adds a short sleep so writes overlap saves
the way an fsync on a real disk makes them overlap.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator import journal as journal_module
from orchestrator.fileio import write_atomic
from orchestrator.journal import Journal, load

THREADS = 16
STEPS = 8  # per thread: each is one begin and one finish, so two saves


class WriteCounter:
    """write_atomic, counted (and optionally slowed, standing in for a slow fsync)."""

    def __init__(self, delay: float = 0.0, fail_first: int = 0) -> None:
        self.writes = 0
        self.delay = delay
        self.fail_first = fail_first
        self._lock = threading.Lock()

    def __call__(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        with self._lock:
            self.writes += 1
            fail = self.writes <= self.fail_first
        if fail:
            raise OSError(28, "No space left on device (test)")
        if self.delay:
            time.sleep(self.delay)
        write_atomic(path, data, mode)


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteCounter]:
    counting = WriteCounter(delay=0.002)
    monkeypatch.setattr(journal_module, "write_atomic", counting)
    yield counting


def run_threads(work: Callable[[int], None], count: int = THREADS, timeout: float = 60.0) -> None:
    """`work(0..count-1)` on real threads at once; the first failure is raised here."""
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(work, i) for i in range(count)]
        for future in futures:
            future.result(timeout=max(0.0, deadline - time.monotonic()))


def on_disk(path: Path) -> Journal:
    return load(path, Path("lab.yml"))


def test_every_save_is_on_disk_when_it_returns(tmp_path: Path, counter: WriteCounter) -> None:
    path = tmp_path / "lab.journal.json"
    journal = Journal(path=path, playbook="lab.yml")

    def target(index: int) -> None:
        for step in range(STEPS):
            key = f"EX{index:02}:step{step}"
            journal.begin(key, f"step{step}", f"EX{index:02}")
            # Only this thread touches `key`, so what the file says about it is exactly its own change.
            assert on_disk(path).steps[key].outcome == "running"
            journal.finish(key, "changed", f"done {step}", attempts=2)
            record = on_disk(path).steps[key]
            assert (record.outcome, record.message, record.attempts) == ("changed", f"done {step}", 2)

    run_threads(target)
    final = on_disk(path)
    assert len(final.steps) == THREADS * STEPS
    assert all(r.outcome == "changed" for r in final.steps.values())


def test_concurrent_saves_share_writes(tmp_path: Path, counter: WriteCounter) -> None:
    journal = Journal(path=tmp_path / "lab.journal.json", playbook="lab.yml")

    def target(index: int) -> None:
        for step in range(STEPS):
            journal.begin(f"EX{index:02}:s{step}", f"s{step}", f"EX{index:02}")
            journal.finish(f"EX{index:02}:s{step}", "ok")

    run_threads(target)
    saves = THREADS * STEPS * 2
    # Sixteen threads against a 2 ms write: without grouping there would be one write per save.
    assert counter.writes < saves / 2, f"{counter.writes} writes for {saves} saves"


def test_the_file_is_always_whole_json_while_writers_run(tmp_path: Path) -> None:
    path = tmp_path / "lab.journal.json"
    journal = Journal(path=path, playbook="lab.yml")
    journal.save()
    stop = threading.Event()
    reads: list[int] = []
    bad: list[str] = []

    def reader() -> None:
        count = 0
        deadline = time.monotonic() + 60.0
        while not stop.is_set() and time.monotonic() < deadline and count < 100_000:
            text = path.read_text(encoding="utf-8")
            try:
                data = json.loads(text)
            except ValueError as exc:
                bad.append(f"{exc}: {text[:80]!r}")
                return
            if data.get("format") != 1:
                bad.append(f"no format in {text[:80]!r}")
                return
            count += 1
        reads.append(count)

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    try:
        def target(index: int) -> None:
            for step in range(STEPS):
                journal.begin(f"EX{index:02}:s{step}", f"s{step}", f"EX{index:02}")
                journal.finish(f"EX{index:02}:s{step}", "changed", 'a message with }, " and\na newline')

        run_threads(target)
    finally:
        stop.set()
        watcher.join(10.0)
    assert not bad, bad[0]
    assert reads and reads[0] > 0
    # And no temp files of unfinished writes are left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.journal.json"]


def test_a_failed_write_fails_its_save_and_the_next_save_writes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lab.journal.json"
    monkeypatch.setattr(journal_module, "write_atomic", WriteCounter(fail_first=1))
    journal = Journal(path=path, playbook="lab.yml")
    with pytest.raises(OSError):
        journal.begin("EX01:copy", "copy", "EX01")
    assert not path.exists()
    journal.finish("EX01:copy", "failed", "disk full")
    assert on_disk(path).steps["EX01:copy"].outcome == "failed"


def test_one_line_per_step_and_a_faithful_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "lab.journal.json"
    journal = Journal(path=path, playbook="lab.yml", csr_pem="-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n",
                      chain_pems=["a", "b"])
    journal.runs.append({"started": "2026-01-01T00:00:00Z"})
    for server in ("EX01", "EX02", "EX03"):
        journal.begin(f"{server}:import", "import", server)
        journal.finish(f"{server}:import", "changed", 'tricky: }, "x": {"y": 1}, ü')
    text = path.read_text(encoding="utf-8")
    for server in ("EX01", "EX02", "EX03"):
        assert len([line for line in text.splitlines() if f'"{server}:import"' in line]) == 1
    assert on_disk(path).to_json() == journal.to_json()
