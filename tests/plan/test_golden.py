"""The exact text `exmig plan` prints, pinned for both dialects."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.conftest import ROOT

MITSERV = ROOT / "playbooks" / "mitserv.yml"
FILES_2010 = ROOT / "tests" / "fixtures" / "playbooks" / "files-2010.yml"
ISSUED = ROOT / "tests" / "fixtures" / "issued"
RETIRE = ROOT / "tests" / "fixtures" / "playbooks" / "retire.yml"


def test_mitserv_plan_text_before_the_ca_answers(exmig: Callable, golden: Callable, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    result = exmig("plan", "playbooks/mitserv.yml")
    assert result.code == 0, result.err
    golden("mitserv.txt", result.out)


def test_mitserv_plan_ps1_with_the_cas_files(exmig: Callable, golden: Callable, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    result = exmig("plan", "playbooks/mitserv.yml", "--format", "ps1",
                   "--certificate", "tests/fixtures/issued/mitserv.crt",
                   "--chain", "tests/fixtures/issued/intermediate.crt")
    assert result.code == 0, result.err
    golden("mitserv-issued.ps1", result.out)


def test_files_issuer_with_2010_and_2007_targets(exmig: Callable, golden: Callable, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    result = exmig("plan", "tests/fixtures/playbooks/files-2010.yml")
    assert result.code == 0, result.err
    golden("files-2010.txt", result.out)


def test_dry_run_prints_the_same_as_plan(exmig: Callable, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert exmig("run", "playbooks/mitserv.yml", "--dry-run").out == exmig("plan", "playbooks/mitserv.yml").out


def test_json_plan_names_secrets_but_never_values(exmig: Callable, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("EXMIG_PASSWORD", "S3cret-server-pw")
    result = exmig("plan", str(FILES_2010), "--format", "json")
    data = json.loads(result.out)
    imports = [c for s in data["steps"] if s["step"] == "import" for c in s["commands"]]
    assert {c["command"] for c in imports} == {"Import-ExchangeCertificate"}
    passwords = [p["value"] for c in imports for p in c["parameters"] if p["name"] == "Password"]
    assert passwords == [{"secret": "pfx-password"}, {"secret": "pfx-password"}]
    assert "S3cret-server-pw" not in result.out


def test_thumbprint_is_computed_locally_from_the_cas_file(exmig: Callable, monkeypatch) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    monkeypatch.chdir(ROOT)
    cert = x509.load_pem_x509_certificate((ISSUED / "mitserv.crt").read_bytes())
    expected = cert.fingerprint(hashes.SHA1()).hex().upper()
    for bundle in ("mitserv.zip", "mitserv.p7b", "mitserv.crt"):
        result = exmig("plan", "playbooks/mitserv.yml", "--step", "enable", "--certificate", str(ISSUED / bundle))
        assert result.code == 0, result.err
        assert result.out.count(f"-Thumbprint '{expected}'") == 2, bundle


def test_selection_by_server_and_step(exmig: Callable, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    result = exmig("plan", "playbooks/mitserv.yml", "--server", "EX2007", "--step", "import", "--format", "json")
    steps = json.loads(result.out)["steps"]
    assert [(s["server"], s["step"]) for s in steps] == [("EX2007", "import")]
    bad = exmig("plan", "playbooks/mitserv.yml", "--step", "imprt")
    assert bad.code == 2 and "--step imprt: not a step" in bad.err and len(bad.err.splitlines()) == 1


def test_steps_lists_every_step_in_order(exmig: Callable) -> None:
    result = exmig("steps")
    names = [line.split()[0] for line in result.out.splitlines()]
    assert names == ["request", "issue", "install-chain", "complete", "enable", "export", "copy", "import",
                     "cleanup", "coexistence", "verify", "retire"]


def test_retire_and_rollback_are_planned(exmig: Callable, golden: Callable, monkeypatch) -> None:
    """Every command the retire step and verify's rollback can send is printed, with placeholders for the
    thumbprints the servers' facts decide (issue 18)."""
    monkeypatch.chdir(ROOT)
    result = exmig("plan", str(RETIRE))
    assert result.code == 0, result.err
    golden("retire.txt", result.out)
    steps = [line.split()[1] for line in result.out.splitlines() if line[:5].strip().rstrip(".").isdigit()]
    assert steps[-4:] == ["verify:", "retire:", "verify:", "retire:"]
    for cmdlet in ("Export-ExchangeCertificate -Thumbprint <thumbprint of a certificate that served before>",
                   "Remove-ExchangeCertificate -Thumbprint <thumbprint of a certificate that served before>",
                   "Enable-ExchangeCertificate -Thumbprint <thumbprint of a certificate that served before>"):
        assert result.out.count(cmdlet) == 2, cmdlet  # on both servers
