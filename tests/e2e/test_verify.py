"""`exmig verify` after a lab migration: all green, then one thing broken at a time, reported exactly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.lab.exchange import CA, MY
from orchestrator.verify.openssl import openssl_verdict, run_s_client
from tests.e2e.conftest import Lab, build_lab, raw_invoke, raw_pool


@pytest.fixture
def migrated(tmp_path: Path) -> Iterator[tuple[Lab, str]]:
    lab = build_lab(tmp_path)
    try:
        proc, events = lab.run_json("--no-verify")
        assert proc.returncode == 0, proc.stderr
        thumb = lab.server("EX2010").inspector.serving()["https"]
        assert thumb is not None
        yield lab, thumb
    finally:
        lab.site.stop()


def verify(lab: Lab, *args: str) -> tuple[int, list[dict[str, Any]]]:
    proc = lab.exmig("verify", str(lab.playbook_path), "--json", "--timeout", "5", *args)
    findings = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert findings, proc.stderr
    return proc.returncode, findings


def failing(findings: list[dict[str, Any]]) -> set[tuple[str, str, str | None, str]]:
    return {(f["server"], f["service"], f["name"], f["verdict"]) for f in findings if f["severity"] == "error"}


def self_signed(lab: Lab, server: str) -> str:
    view = lab.server(server).inspector
    return next(t for t in view.thumbprints(MY) if view.certificate(t, MY).subject.endswith(f"CN={server}")
                or view.certificate(t, MY).subject == f"CN={server}")


def enable_on_2007(lab: Lab, thumb: str, services: list[str]) -> None:
    with raw_pool(lab.server("EX2007"), "Microsoft.PowerShell") as pool:
        raw_invoke(pool, "Add-PSSnapin", Name="Microsoft.Exchange.Management.PowerShell.Admin")
        raw_invoke(pool, "Enable-ExchangeCertificate", Thumbprint=thumb, Services=services, Force=None)


def test_all_green_after_the_migration(migrated: tuple[Lab, str]) -> None:
    lab, thumb = migrated
    code, findings = verify(lab)
    assert code == 0
    assert failing(findings) == set()
    tls = [f for f in findings if f["service"] in ("https", "smtp", "imaps", "pop3s")]
    assert {(f["server"], f["name"]) for f in tls} == {
        ("EX2010", "mail.mitserv.net"), ("EX2010", "autodiscover.mitserv.net"), ("EX2007", "legacy.mitserv.net")}
    assert all(f["thumbprint_seen"] == thumb for f in tls)


def test_2007_enabled_without_iis(migrated: tuple[Lab, str]) -> None:
    lab, thumb = migrated
    enable_on_2007(lab, self_signed(lab, "EX2007"), ["IIS"])  # IIS moves back to the old certificate
    code, findings = verify(lab)
    assert code == 4
    assert failing(findings) == {
        ("EX2007", "IIS", None, "wrong_certificate"),
        ("EX2007", "https", "legacy.mitserv.net", "wrong_certificate"),
    }


def test_intermediate_removed_from_a_ca_store(migrated: tuple[Lab, str]) -> None:
    lab, thumb = migrated
    model = lab.server("EX2007").model
    with model.transaction():
        for intermediate in list(lab.server("EX2007").inspector.thumbprints(CA)):
            model.remove(CA, intermediate)
    code, findings = verify(lab)
    assert code == 4
    broken = failing(findings)
    assert ("EX2007", "CA store", None, "missing_intermediate") in broken
    tls = {(s, svc, n, v) for s, svc, n, v in broken if svc in ("https", "smtp", "imaps", "pop3s")}
    assert tls == {("EX2007", svc, "legacy.mitserv.net", "missing_intermediate")
                   for svc in ("https", "smtp", "imaps", "pop3s")}
    assert all(server == "EX2007" for server, *_ in broken)


def test_2007_pop_keeps_the_self_signed_certificate(migrated: tuple[Lab, str]) -> None:
    lab, thumb = migrated
    enable_on_2007(lab, self_signed(lab, "EX2007"), ["POP"])
    code, findings = verify(lab)
    assert code == 4
    assert failing(findings) == {
        ("EX2007", "POP", None, "wrong_certificate"),
        ("EX2007", "pop3s", "legacy.mitserv.net", "wrong_certificate"),
    }


def test_a_stopped_service(migrated: tuple[Lab, str]) -> None:
    lab, thumb = migrated
    lab.server("EX2010").tls.stop_service("imaps")
    code, findings = verify(lab)
    assert code == 4
    assert failing(findings) == {("EX2010", "imaps", name, "unreachable")
                                 for name in ("mail.mitserv.net", "autodiscover.mitserv.net")}


def test_tls_verdicts_agree_with_openssl(migrated: tuple[Lab, str]) -> None:
    lab, thumb = migrated
    enable_on_2007(lab, self_signed(lab, "EX2007"), ["IMAP"])  # one wrong endpoint among right ones
    _, findings = verify(lab)
    compared = 0
    for f in findings:
        if f["service"] not in ("https", "smtp", "imaps", "pop3s"):
            continue
        port = lab.server(f["server"]).tls.ports[f["service"]]
        result = run_s_client("127.0.0.1", port, f["name"], starttls="smtp" if f["service"] == "smtp" else None,
                              cafile=lab.site.ca_file, verify_hostname=f["name"])
        assert openssl_verdict(result, thumb) == f["verdict"], f
        compared += 1
    assert compared == 12
