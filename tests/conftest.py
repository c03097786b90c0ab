from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ from the current output")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def exmig(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run the real CLI entry point in-process and capture what it prints."""
    from orchestrator.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    update = request.config.getoption("--update-golden")

    def check(name: str, actual: str) -> None:
        path = ROOT / "tests" / "golden" / name
        if update:
            path.write_text(actual, encoding="utf-8")
        assert path.exists(), f"no golden file {path}; run pytest --update-golden once and review it"
        assert actual == path.read_text(encoding="utf-8")

    return check


# -- a lab bug fails the test that met it ----------------------------------------------------------------
# A handler exception in the lab answers HTTP 500 (or a "Lab handler failure" error record), which exmig may
# retry as transient and get past: every lab server a test starts is watched, and what it recorded as an
# internal error during the test fails that test.

_STARTED_LABS: list[Any] = []


@pytest.fixture(scope="session", autouse=True)
def _watch_lab_servers() -> Iterator[None]:
    from orchestrator.lab.server import LabServer

    original = LabServer.start

    def start(self: LabServer) -> LabServer:
        if self not in _STARTED_LABS:
            _STARTED_LABS.append(self)
        return original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LabServer, "start", start)
        yield


@pytest.fixture(autouse=True)
def _no_lab_internal_error(request: pytest.FixtureRequest) -> Iterator[None]:
    before = {id(server): len(server.errors) for server in _STARTED_LABS}
    yield
    if request.node.get_closest_marker("lab_errors_expected"):
        return
    new = [(server.name, error) for server in _STARTED_LABS for error in server.errors[before.get(id(server), 0):]]
    if new:
        name, error = new[0]
        pytest.fail(f"the lab recorded {len(new)} internal error(s); {name}'s first:\n{error[-1500:]}", pytrace=False)
