"""Kerberos in the playbook: principal names checked when it loads, the SPN settable and shown by `plan`, and
a rehearsal that says how to get the KDC where it is missing. None of these needs a KDC."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.kerberos import check_username, principal_name
from tests.conftest import ROOT, CliResult
from tests.plan.test_playbook_errors import GOOD


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pb.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("old", "new", "line", "expected"), [
    ("      username: admin@mitserv.net\n      password: {env: EX_PW}",
     "      username: MITSERV\\admin\n      password: {env: EX_PW}", 14,
     "servers[0]: credentials.username: 'MITSERV\\admin' is a Windows logon name (DOMAIN\\user); Kerberos needs "
     "user@REALM: the account's UPN with the domain's DNS name in capitals, e.g. admin@CORP.EXAMPLE.COM"),
    ("      username: admin@mitserv.net\n      password: {env: EX_PW}",
     "      username: admin\n      password: {env: EX_PW}", 14,
     "servers[0]: credentials.username: 'admin' is not a Kerberos principal; write user@REALM"),
    ("      password: {prompt: true}", "", 22,
     "servers[1]: credentials.password is needed with auth: negotiate; give `password: {env: VARIABLE}` or "
     "`{prompt: true}` (only auth: kerberos can use a ticket from kinit)"),
    ("      host: ex2010.mitserv.net", "      host: ex2010.mitserv.net\n      spn_service: 'HTTP/x'", 17,
     "servers[0].connection.spn_service: 'HTTP/x' is not an SPN service class such as HTTP, host or WSMAN"),
    ("      host: ex2007.mitserv.net", "      host: ex2007.mitserv.net\n      auth: basic\n"
     "      scheme: https\n      spn_hostname: mail.mitserv.net", 22,
     "servers[1]: connection.spn_service/spn_hostname are for Kerberos; auth is basic"),
])
def test_kerberos_playbook_errors(exmig: Callable[..., CliResult], tmp_path: Path, old: str, new: str, line: int,
                                  expected: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    result = exmig("validate", path)
    assert result.code == 2
    assert result.err.startswith(f"exmig: error: {path}:"), result.err
    assert expected in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_kerberos_server_may_omit_the_password(exmig: Callable[..., CliResult], tmp_path: Path) -> None:
    text = GOOD.replace("      username: admin@mitserv.net\n      password: {env: EX_PW}",
                        "      username: admin@mitserv.net")
    assert exmig("validate", write(tmp_path, text)).code == 0


def test_plan_shows_the_spn(exmig: Callable[..., CliResult], tmp_path: Path) -> None:
    text = GOOD.replace("      host: ex2010.mitserv.net",
                        "      host: ex2010.mitserv.net\n      spn_service: HTTP\n"
                        "      spn_hostname: mail.mitserv.net")
    out = exmig("plan", write(tmp_path, text)).out
    assert "[Microsoft.Exchange, kerberos, SPN HTTP/mail.mitserv.net]" in out
    assert "[Microsoft.PowerShell, negotiate, SPN host/ex2007.mitserv.net]" in out


def test_principal_names() -> None:
    assert principal_name("administrator@mitserv.net") == "administrator@MITSERV.NET"
    assert check_username("administrator@MITSERV.NET") is None
    for bad in ("administrator", "MITSERV\\administrator", "a b@MITSERV.NET", "admin@", "@MITSERV.NET",
                "admin@mit serv.net"):
        assert check_username(bad) is not None, bad


def test_rehearse_without_the_kdc_says_how_to_get_it(exmig: Callable[..., CliResult],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine without krb5-kdc: nothing on PATH, nothing in the sbin folders.
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("orchestrator.lab.children._SBIN", ())
    result = exmig("rehearse", ROOT / "playbooks" / "mitserv.yml")
    assert result.code == 2
    assert result.err.strip() == (
        f"exmig: error: rehearsing {ROOT / 'playbooks' / 'mitserv.yml'} with Kerberos (realm MITSERV.NET) needs "
        "the MIT KDC (krb5kdc, kdb5_util, kadmin.local not found): apt-get install krb5-kdc krb5-admin-server, "
        f"or rehearse with NTLM: exmig rehearse {ROOT / 'playbooks' / 'mitserv.yml'} --auth ntlm")
    assert result.out == ""
