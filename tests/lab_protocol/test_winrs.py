"""pywinrm (unmodified) against the lab's WinRS cmd shell, plus command-line splitting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import winrm
from winrm.exceptions import InvalidCredentialsError

from orchestrator.lab.server import LabServer
from orchestrator.lab.winrs_shell import split_command_line

from .conftest import PASSWORD, USER


def session(srv: LabServer, transport: str, **kw: object) -> winrm.Session:
    kw.setdefault("operation_timeout_sec", 5)
    kw.setdefault("read_timeout_sec", 10)
    return winrm.Session(srv.url("wsman"), auth=(USER, kw.pop("password", PASSWORD)), transport=transport, **kw)


def test_run_cmd_basic_https(
    make_server: Callable[..., LabServer], server_cert: tuple[bytes, bytes], ca_file: Path
) -> None:
    srv = make_server(auth=("basic",), tls=server_cert)
    s = session(srv, "basic", server_cert_validation="validate", ca_trust_path=str(ca_file))
    r = s.run_cmd("hostname")
    assert (r.status_code, r.std_out, r.std_err) == (0, b"EX1\r\n", b"")
    assert srv.log.actions() == ["Create", "Command", "Receive", "Signal", "Delete"]


def test_run_cmd_ntlm_encrypted_http(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(auth=("negotiate",))
    s = session(srv, "ntlm", message_encryption="always")
    r = s.run_cmd("showargs", ["-a", '"two words"'])
    assert r.std_out == b"[-a]\r\n[two words]\r\n"
    assert r.std_err == b"note on stderr\r\n"
    assert r.status_code == 2
    records = srv.log.records()
    assert [x.status for x in records[:3]] == [401, 401, 200]
    assert all(x.encrypted for x in records if x.action)
    assert srv.log.actions()[3:] == ["Create", "Command", "Receive", "Signal", "Delete"]


def test_unknown_program_like_cmd_exe(basic_server: LabServer) -> None:
    s = session(basic_server, "basic")
    r = s.run_cmd("frobnicate.exe", ["/x"])
    assert r.status_code == 1
    assert r.std_out == b""
    assert r.std_err == (
        b"'frobnicate.exe' is not recognized as an internal or external command,\r\n"
        b"operable program or batch file.\r\n"
    )


def test_full_path_program(basic_server: LabServer) -> None:
    r = session(basic_server, "basic").run_cmd('"C:\\Windows\\System32\\hostname.exe"')
    assert r.std_out == b"EX1\r\n"


def test_wrong_password(make_server: Callable[..., LabServer]) -> None:
    srv = make_server(auth=("negotiate",))
    with pytest.raises(InvalidCredentialsError):
        session(srv, "ntlm", password="nope", message_encryption="always").run_cmd("hostname")


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        ("prog a b", ["prog", "a", "b"]),
        ('"C:\\Program Files\\x.exe" -f "a b"', ["C:\\Program Files\\x.exe", "-f", "a b"]),
        ('p a\\\\"b c"', ["p", 'a\\b c']),  # 2n backslashes + quote: n backslashes, quote toggles
        ('p a\\"b', ["p", 'a"b']),  # 2n+1: literal quote
        ("p a\\b\\\\c", ["p", "a\\b\\\\c"]),  # backslashes not before a quote are literal
        ('p "a""b"', ["p", 'a"b']),
        ('p ""', ["p", ""]),
        ("  p\t x  ", ["p", "x"]),
        ("", []),
    ],
)
def test_split_command_line(line: str, argv: list[str]) -> None:
    assert split_command_line(line) == argv


def test_slow_program_survives_operation_timeouts(basic_server: LabServer) -> None:
    import time as _time

    from orchestrator.lab.registry import NativeCommandSpec, NativeResult

    def slow(args: list[str], session: object) -> NativeResult:
        _time.sleep(1.6)
        return NativeResult(stdout="done\r\n")

    basic_server.registry.register_native(NativeCommandSpec("slow.exe", slow))
    r = session(basic_server, "basic", operation_timeout_sec=1, read_timeout_sec=3).run_cmd("slow.exe")
    assert (r.status_code, r.std_out) == (0, b"done\r\n")
    assert basic_server.log.count(action="Receive", status=500) >= 1


def test_protocol_level_stdin_and_cleanup(basic_server: LabServer) -> None:
    p = session(basic_server, "basic").protocol
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, "showargs", ["one"])
    p.send_command_input(shell_id, command_id, b"ignored input\r\n", end=True)
    out, _err, code = p.get_command_output(shell_id, command_id)
    assert (out, code) == (b"[one]\r\n", 1)
    p.cleanup_command(shell_id, command_id)
    p.close_shell(shell_id)
    assert basic_server.log.actions() == ["Create", "Command", "Send", "Receive", "Signal", "Delete"]
    assert basic_server.shell_ids() == []


def test_run_cmd_ntlm_https_without_message_encryption(
    make_server: Callable[..., LabServer], server_cert: tuple[bytes, bytes], ca_file: Path
) -> None:
    srv = make_server(auth=("negotiate",), tls=server_cert)
    s = session(srv, "ntlm", server_cert_validation="validate", ca_trust_path=str(ca_file))
    assert s.run_cmd("hostname").std_out == b"EX1\r\n"
    assert not any(r.encrypted for r in srv.log.records())
