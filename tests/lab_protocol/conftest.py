"""Lab servers for the protocol tests: small test commands in a Registry, real clients."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.ca import LabCA
from orchestrator.lab.objects import LabEnum, LabList, LabObject
from orchestrator.lab.registry import (
    CommandCall,
    CommandSpec,
    ErrorCategory,
    Kind,
    LabError,
    NativeCommandSpec,
    NativeResult,
    Parameter,
    Registry,
    Session,
)
from orchestrator.lab.server import LabServer

USER = "admin"
PASSWORD = "Lab-Passw0rd!"
USERS = {USER: PASSWORD, "LAB\\operator": "Op3rator-Pass"}

THING_TYPES = ["Lab.Test.Thing", "System.Object"]
SERVICES_TYPES = ["Lab.Test.Services", "System.Enum", "System.ValueType", "System.Object"]
MVP_TYPES = ["Lab.Test.MultiValued`1[[System.String]]", "System.Object"]


def _get_thing(call: CommandCall) -> None:
    name = call.params.get("Name", "default")
    call.write(
        LabObject(
            THING_TYPES,
            adapted={
                "Name": name,
                "Size": 42,
                "Enabled": True,
                "Services": LabEnum(SERVICES_TYPES, 24, "IIS, SMTP"),
                "Names": LabList(MVP_TYPES, ["a.lab", "b.lab"]),
                "Tags": ["x", "y"],
            },
            extended={"PSComputerName": "EX1", "Note": None},
            to_string=f"[Thing {name}]",
        )
    )


def _write_mixed(call: CommandCall) -> None:
    call.write("first")
    call.write_error(LabError("soft failure", "LabSoft,Lab.Test.WriteMixed", ErrorCategory.InvalidData, target="t1"))
    call.write_warning("be careful")
    call.write("second")


def _fail(call: CommandCall) -> None:
    call.write("before failure")
    raise LabError(
        "hard failure",
        "LabHard,Lab.Test.Fail",
        ErrorCategory.InvalidOperation,
        exception_type="System.InvalidOperationException",
        target="t2",
    )


def _echo_bytes(call: CommandCall) -> None:
    data: bytes = call.params["Data"]
    call.write(LabObject(["Lab.Test.BinaryFileData", "System.Object"], adapted={"FileData": data, "Length": len(data)}))


def _test_secret(call: CommandCall) -> None:
    secret = call.params["Password"]
    # Compare on the server; the secret itself never goes back or into a log.
    call.write(secret.reveal() == call.params["Expected"])


def _add_one(call: CommandCall) -> None:
    call.write(call.params["Value"] + 1)


def _sleep(call: CommandCall) -> None:
    deadline = time.monotonic() + call.params.get("Seconds", 1)
    while time.monotonic() < deadline:
        time.sleep(0.02)
    call.write("slept")


def _session_info(call: CommandCall) -> None:
    s = call.session
    call.write(LabObject(["Lab.Test.SessionInfo", "System.Object"],
                         adapted={"User": s.username, "Configuration": s.configuration, "CanPrompt": s.can_prompt}))


def _hostname(args: list[str], session: Session) -> NativeResult:
    return NativeResult(stdout="EX1\r\n")


def _show_args(args: list[str], session: Session) -> NativeResult:
    return NativeResult(stdout="".join(f"[{a}]\r\n" for a in args), stderr="note on stderr\r\n", exit_code=len(args))


def make_registry() -> Registry:
    reg = Registry()
    reg.register(CommandSpec("Get-LabThing", _get_thing, (Parameter("Name", position=0),)))
    reg.register(CommandSpec("Write-LabMixed", _write_mixed))
    reg.register(CommandSpec("Invoke-LabFailure", _fail))
    reg.register(CommandSpec("Send-LabBytes", _echo_bytes, (Parameter("Data", Kind.BYTES, mandatory=True),)))
    reg.register(CommandSpec("Test-LabSecret", _test_secret, (
        Parameter("Password", Kind.SECURE_STRING, mandatory=True), Parameter("Expected", mandatory=True))))
    reg.register(CommandSpec("Add-LabOne", _add_one, (Parameter("Value", Kind.INT, from_pipeline=True),)))
    reg.register(CommandSpec("Start-LabSleep", _sleep, (Parameter("Seconds", Kind.INT),)))
    reg.register(CommandSpec("Get-LabSession", _session_info))
    reg.register_native(NativeCommandSpec("hostname.exe", _hostname, aliases=("hostname",)))
    reg.register_native(NativeCommandSpec("showargs.exe", _show_args, aliases=("showargs",)))
    return reg


@pytest.fixture
def registry() -> Registry:
    return make_registry()


@pytest.fixture(scope="session")
def lab_ca(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA.load_or_create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def ca_file(lab_ca: LabCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab_ca.write_ca_file(tmp_path_factory.mktemp("trust") / "root.pem")


@pytest.fixture(scope="session")
def server_cert(lab_ca: LabCA) -> tuple[bytes, bytes]:
    return lab_ca.issue_server_cert(["ex1.lab.local"])


@pytest.fixture
def make_server(registry: Registry) -> Iterator[Callable[..., LabServer]]:
    started: list[LabServer] = []

    def make(**kw: Any) -> LabServer:
        kw.setdefault("configurations", ["Microsoft.Exchange", "Microsoft.PowerShell"])
        srv = LabServer(kw.pop("name", "EX1"), kw.pop("registry", registry), kw.pop("users", USERS), **kw)
        srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        errors = srv.errors
        srv.stop()
        assert not errors, "\n".join(errors)


@pytest.fixture
def basic_server(make_server: Callable[..., LabServer]) -> LabServer:
    """Basic over plain HTTP (AllowUnencrypted): the cheapest way to drive protocol behaviour."""
    return make_server(allow_unencrypted=True)


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))
