"""The report: table, JSON, exit status, and a whole run of checks across services."""

from __future__ import annotations

import json
import socket

from rich.console import Console

from orchestrator.errors import ExitCode
from orchestrator.verify import (
    Finding,
    TlsCheck,
    Verdict,
    exit_code,
    findings_table,
    render_json,
    render_json_lines,
    run_tls_checks,
    summary,
)

from .conftest import Certs, Lab

THUMB = "AB" * 20


def _findings() -> list[Finding]:
    return [
        Finding("EX2010", "https", "mail.example.test", Verdict.OK, "valid", THUMB, 300),
        Finding("EX2010", "IIS", None, Verdict.NOT_REPORTED, "Services not in the remote output"),
        Finding("EX2007", "smtp", "legacy.example.test", Verdict.EXPIRES_SOON, "expires", THUMB, 9),
        Finding("EX2007", "imaps", "legacy.example.test", Verdict.WRONG_CERTIFICATE, "presents CD..",
                "CD" * 20, 80),
        Finding("EX2007", "pop3s", "legacy.example.test", Verdict.UNREACHABLE, "127.0.0.1:1: connect failed"),
    ]


def test_warnings_do_not_fail_the_run_problems_do() -> None:
    findings = _findings()
    assert exit_code(findings[:3]) == ExitCode.OK
    assert exit_code(findings) == ExitCode.VERIFY_FAILED == 4
    assert exit_code([]) == ExitCode.OK
    assert {v for v in Verdict if v.severity == "warning"} == {Verdict.EXPIRES_SOON, Verdict.NOT_REPORTED,
                                                               Verdict.REVOCATION_UNCHECKED}
    assert {v for v in Verdict if v.severity == "ok"} == {Verdict.OK}


def test_summary_counts() -> None:
    assert summary(_findings()) == (
        "5 checks: 1 ok, 2 warnings, 2 problems (unreachable: 1, wrong certificate: 1)"
    )


def test_json_array_and_lines_carry_every_field() -> None:
    findings = _findings()
    array = json.loads(render_json(findings))
    lines = [json.loads(line) for line in render_json_lines(findings).splitlines()]
    assert array == lines
    assert array[3] == {
        "server": "EX2007", "service": "imaps", "name": "legacy.example.test", "verdict": "wrong_certificate",
        "severity": "error", "detail": "presents CD..", "thumbprint_seen": "CD" * 20, "days_left": 80,
    }
    assert array[1]["name"] is None and array[1]["severity"] == "warning"
    assert render_json_lines([]) == "" and json.loads(render_json([])) == []


def test_table_shows_server_service_name_and_result() -> None:
    console = Console(record=True, width=200, color_system=None)
    console.print(findings_table(_findings()))
    text = console.export_text()
    for expected in ("EX2010", "EX2007", "mail.example.test", "wrong certificate", "expires soon",
                     "not reported", "unreachable", "ABABABABABAB…", "5 checks: 1 ok"):
        assert expected in text
    assert text.count("EX2007") == 1  # the server is named once per group


def test_run_tls_checks_keeps_order_and_reports_every_endpoint(lab: Lab, certs: Certs) -> None:
    lab.source.set(certs.good.served, legacy_example_test=certs.good.without_chain())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    wanted = frozenset({certs.intermediate})
    checks = [
        TlsCheck("EX2010", "127.0.0.1", lab.port(service), service, name, certs.good.thumbprint, wanted)
        for service in ("https", "smtp", "imaps", "pop3s")
        for name in ("mail.example.test", "legacy.example.test")
    ] + [TlsCheck("EX2007", "127.0.0.1", closed, "https", "legacy.example.test", certs.good.thumbprint)]
    findings = run_tls_checks(checks, roots=certs.roots, timeout=5, workers=4)
    assert [(f.server, f.service, f.name) for f in findings] == [(c.server, c.service, c.sni) for c in checks]
    expected = [Verdict.OK, Verdict.MISSING_INTERMEDIATE] * 4 + [Verdict.UNREACHABLE]
    assert [f.verdict for f in findings] == expected
    assert exit_code(findings) == ExitCode.VERIFY_FAILED
