"""The CLI with playbooks/lab-winrs.yml: the README's main job (rehearse) and the dry-run."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_rehearse_with_the_2007_target_on_winrs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "rehearse", "playbooks/lab-winrs.yml", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["counts"].get("failed", 0) == 0 and summary["counts"]["changed"] >= 10
    verdicts = [e["verdict"] for e in events if e["event"] == "verify"]
    assert verdicts and set(verdicts) == {"ok"}


def test_the_dry_run_plans_the_winrs_server_like_a_psrp_one(exmig) -> None:  # type: ignore[no-untyped-def]
    winrs = exmig("plan", ROOT / "playbooks" / "lab-winrs.yml", "--server", "EX2007")
    psrp = exmig("plan", ROOT / "playbooks" / "lab.yml", "--server", "EX2007")
    assert winrs.code == 0 and psrp.code == 0
    assert "winrs]" in _steps_part(winrs.out)[0]
    # The dry-run shows what is sent: the password is read from stdin, never on a command line...
    assert "(Get-Credential).Password" in psrp.out and "(Get-Credential).Password" not in winrs.out
    assert "[Console]::In.ReadLine()" in winrs.out and "-Password $exmigSecret1" in winrs.out
    # ...the bytes too (was: "written in base64 chunks", one process per chunk), so the command line is exact
    # before the CA has answered...
    assert "-Value $exmigBytes1 -Encoding 'Byte'" in winrs.out and "Get-Content" not in winrs.out
    # ...and otherwise the same commands: the WinRS scripts are rendered from them, a request's in one script.
    stdin = ("$exmigSecret1 =", "$exmigBytes1 =", "over WinRS", "# which runs:", "$ErrorActionPreference = 'Stop'")
    sent = [line.replace("$exmigBytes1", "<bytes>") for line in _steps_part(winrs.out)[1:]
            if not any(s in line for s in stdin) and "-Password" not in line]
    same = [re.sub(r"-Value (<[^>]*>|\$Export\.FileData)", "-Value <bytes>", line)
            for line in _steps_part(psrp.out)[1:] if "-Password" not in line and "Get-Content" not in line]
    assert sent == same


def _steps_part(out: str) -> list[str]:
    """The plan's text after its first section (the reads before the first change, issue 17), which ends at the
    first blank line."""
    lines = out.splitlines()
    return lines[lines.index("") + 1:] if "" in lines else lines


def _decoded(command_line: str) -> str:
    return base64.b64decode(command_line.rsplit("-EncodedCommand ", 1)[1]).decode("utf-16-le")


def test_the_dry_run_shows_the_powershell_exe_command_line_and_its_decoded_script(exmig) -> None:  # type: ignore[no-untyped-def]
    text = exmig("plan", ROOT / "playbooks" / "lab-winrs.yml", "--server", "EX2007")
    assert text.code == 0
    lines = [line.strip() for line in text.out.splitlines()]
    sent = [i for i, line in enumerate(lines) if line.startswith("# over WinRS: powershell.exe ")]
    assert len(sent) >= 5
    console = '-PSConsoleFile "C:\\Program Files\\Microsoft\\Exchange Server\\bin\\exshell.psc1"'
    for i in sent:
        line = lines[i].removeprefix("# over WinRS: ")
        assert line.startswith("powershell.exe -NoLogo -NoProfile -NonInteractive ") and "-OutputFormat xml" in line
        assert lines[i + 1] == "# which runs:"
        script = _decoded(line).splitlines()
        assert lines[i + 2:i + 2 + len(script)] == script  # the script beside it is exactly what is encoded
        # The Exchange shell's console file for Exchange cmdlets only.
        assert (console in line) == any("ExchangeCertificate" in s for s in script), line
    # The PFX password goes on stdin, so it is in neither the command line nor its script.
    imports = [_decoded(lines[i]) for i in sent if "Import-ExchangeCertificate" in _decoded(lines[i])]
    assert imports and all("-Password $exmigSecret1" in s and "ReadLine()" in s for s in imports)

    as_json = exmig("plan", ROOT / "playbooks" / "lab-winrs.yml", "--server", "EX2007", "--format", "json")
    # Every request the text shows (the reads, the commands and the conditional branches), one process each,
    # with the commands it carries (was: one "winrs" per command).
    plan = json.loads(as_json.out)
    steps = plan["steps"]
    # (a request that needs a thumbprint the CA has not given yet has no command line yet; the first section's
    # reads before the first change come first, as in the text)
    winrs = [r for part in (*plan["preflight"], *steps) for r in part.get("winrs", []) if r["command_line"] is not None]
    assert [r["command_line"] for r in winrs] == [lines[i].removeprefix("# over WinRS: ") for i in sent]
    for r in winrs:
        assert r["command_line"].startswith("powershell.exe -NoLogo") and _decoded(r["command_line"]) == r["script"]
    assert any(len(r["commands"]) > 1 for r in winrs)
    psrp = exmig("plan", ROOT / "playbooks" / "lab.yml", "--server", "EX2007", "--format", "json")
    assert not any("winrs" in step for step in json.loads(psrp.out)["steps"])
