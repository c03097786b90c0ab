"""Secrets audit: full migrations with known passwords (credentials, PFX) through the real CLI process,
with --json, DEBUG logging of every library, the journal, `exmig report` (HTML and Markdown) and a private
TMPDIR; no password appears in any output, log, journal, report or file the run leaves, in any encoding; the
--save-pfx backup is mode 0600."""

from __future__ import annotations

import base64
import os
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from ruamel.yaml import YAML

from orchestrator.lab.faults import FaultKind, FaultRule
from tests.conftest import ROOT
from tests.reliability.harness import InProcessLab, LabTemplate

# The CLI with every logger at DEBUG (pypsrp logs whole WSMan messages there, requests/urllib3 and
# spnego their exchanges): the most verbose a run can be made.
VERBOSE_CLI = ("import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
               "from orchestrator.cli import main; sys.exit(main(sys.argv[1:]))")


def encodings(secret: str) -> dict[str, bytes]:
    """The forms a password could leak in: text, UTF-16 (PowerShell strings), Base64 of both."""
    utf8, utf16 = secret.encode(), secret.encode("utf-16-le")
    return {"utf-8": utf8, "utf-16": utf16, "base64": base64.b64encode(utf8),
            "base64-utf16": base64.b64encode(utf16), "hex": utf8.hex().encode()}


def leaks(blob: bytes, secret_values: dict[str, str]) -> list[str]:
    found = []
    for name, value in secret_values.items():
        for form, encoded in encodings(value).items():
            if encoded in blob:
                found.append(f"{name} ({form})")
    return found


@pytest.fixture
def audit_lab(lab_template: LabTemplate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[tuple[InProcessLab, dict[str, str]]]:
    values = {"credentials": "Cred-" + secrets.token_urlsafe(18), "pfx": "Pfx-" + secrets.token_urlsafe(18)}
    # The lab accepts the credentials password from the same variable the playbook names.
    monkeypatch.setenv("EXMIG_LAB_PASSWORD", values["credentials"])
    lab = lab_template.instantiate(tmp_path / "lab")
    yaml = YAML()
    data = yaml.load(lab.loaded.path.read_text())
    data["pfx_password"] = {"env": "EXMIG_AUDIT_PFX_PASSWORD"}
    with lab.loaded.path.open("w") as handle:
        yaml.dump(data, handle)
    try:
        yield lab, values
    finally:
        lab.stop()


def _cli(lab: InProcessLab, values: dict[str, str], tmpdir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")}
    env |= {"EXMIG_LAB_PASSWORD": values["credentials"], "EXMIG_AUDIT_PFX_PASSWORD": values["pfx"],
            "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", VERBOSE_CLI, *args], cwd=lab.tmp, env=env, capture_output=True,
                          timeout=180, check=False)


def _files(root: Path, skip: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and skip not in path.parents:
            yield path


def test_no_password_in_any_output_log_journal_or_file(audit_lab: tuple[InProcessLab, dict[str, str]]) -> None:
    lab, values = audit_lab
    tmpdir = lab.tmp / "tmpdir"
    tmpdir.mkdir()
    backup = lab.tmp / "backup" / "mitserv.pfx"
    playbook = str(lab.loaded.path)
    outputs: list[tuple[str, bytes]] = []

    # 1. A migration with a lost reply on the way (retry and error texts), --json, DEBUG logs, --save-pfx.
    lab.set_fault("EX2007", FaultRule(FaultKind.RESET_AFTER, request=1, cmdlet="Import-ExchangeCertificate"))
    first = _cli(lab, values, tmpdir, "run", playbook, "--yes", "--json", "--save-pfx", str(backup))
    assert first.returncode == 0, first.stderr[-2000:]
    assert lab.fired("EX2007")
    outputs += [("run 1 stdout", first.stdout), ("run 1 stderr", first.stderr)]
    assert b"DEBUG" in first.stderr  # the libraries' debug logging was on
    # 2. Again (nothing to change), and `status`, and the console (non-JSON) output.
    second = _cli(lab, values, tmpdir, "run", playbook, "--yes")
    assert second.returncode == 0, second.stderr[-2000:]
    status = _cli(lab, values, tmpdir, "status", playbook)
    outputs += [("run 2 stdout", second.stdout), ("run 2 stderr", second.stderr),
                ("status", status.stdout + status.stderr)]
    # 3. A failing run: the target refuses the password given (a wrong one must not be echoed either).
    wrong = dict(values, credentials="Wrong-" + secrets.token_urlsafe(12))
    failed = _cli(lab, wrong, tmpdir, "run", playbook, "--yes", "--json", "--server", "EX2007", "--step", "verify")
    assert failed.returncode != 0
    outputs += [("failed run", failed.stdout + failed.stderr)]
    # 4. The change record, both forms, with the verify matrix asked of the servers (credentials in use).
    for fmt in ("html", "md"):
        record = lab.tmp / f"record.{fmt}"
        made = _cli(lab, values, tmpdir, "report", playbook, "--format", fmt, "--out", str(record), "--timeout", "5")
        assert made.returncode == 0, made.stderr[-2000:]
        assert " checks: " in record.read_text()  # the matrix was asked of the servers, with the credentials
        outputs += [(f"report {fmt}", made.stdout + made.stderr + record.read_bytes())]
    every_secret = {**values, "wrong credentials": wrong["credentials"]}

    # The detector finds a password in every form it looks for (a control for the assertions below).
    for encoded in encodings(values["pfx"]).values():
        assert leaks(b"<log>" + encoded + b"</log>", values) != []
    for name, blob in outputs:
        assert not leaks(blob, every_secret), name
    # Everything the runs left on the workstation: journal, CSR, backups, temp files (not the emulated
    # servers' own disks under lab-state, which are the servers' side).
    left = list(_files(lab.tmp, lab.tmp / "lab-state"))
    assert lab.journal_path in left
    for path in left:
        assert not leaks(path.read_bytes(), every_secret), path
    assert not list(tmpdir.iterdir()), "the run left temp files"

    # The PFX backup: owner-only, and usable with the PFX password (a real backup).
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    key, cert, _ = pkcs12.load_key_and_certificates(backup.read_bytes(), values["pfx"].encode())
    assert key is not None and cert is not None
    # No other PFX anywhere on the workstation side.
    assert [p for p in left if p.suffix.lower() in (".pfx", ".p12")] == [backup]


def test_debug_output_shows_the_clients_logs_without_secrets_pfx_bytes_or_key_material(
        audit_lab: tuple[InProcessLab, dict[str, str]]) -> None:
    """`--debug` (the clients' own DEBUG logs through exmig's redaction), with a lost reply on the way."""
    lab, values = audit_lab
    tmpdir = lab.tmp / "tmpdir"
    tmpdir.mkdir()
    backup = lab.tmp / "backup.pfx"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")}
    env |= {"EXMIG_LAB_PASSWORD": values["credentials"], "EXMIG_AUDIT_PFX_PASSWORD": values["pfx"],
            "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    lab.set_fault("EX2007", FaultRule(FaultKind.RESET_AFTER, request=1, cmdlet="Import-ExchangeCertificate"))
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(lab.loaded.path), "--yes", "--json",
                           "--debug", "--save-pfx", str(backup)], cwd=lab.tmp, env=env, capture_output=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert lab.fired("EX2007")
    out = proc.stdout + proc.stderr
    # The clients' own logs are there: pypsrp's WSMan messages, pyspnego's NTLM steps; exmig's request lines.
    assert b"pypsrp.wsman" in proc.stderr and b"spnego" in proc.stderr and b"exmig.wire EX2007 Command" in proc.stderr
    assert not leaks(out, values)
    # No PFX bytes (any 48-character window of its base64), no SecureString or byte array content.
    pfx = base64.b64encode(backup.read_bytes()).decode()
    windows = {pfx[i:i + 48] for i in range(0, len(pfx) - 48, 16)}
    assert not [w for w in windows if w.encode() in out]
    text = proc.stderr.decode(errors="replace")
    assert "<redacted bytes>" in text and not re.search(r"<(\w+:)?(BA|SS)\b[^>]*>(?!<redacted)[^<]+</", text)
