"""The CLI with playbooks/lab-winrs.yml: the README's main job (rehearse) and the dry-run."""

from __future__ import annotations

import base64
import json
import os
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
    assert "winrs]" in winrs.out.splitlines()[0]
    # The dry-run shows what is sent: the password is read from stdin, never on a command line...
    assert "(Get-Credential).Password" in psrp.out and "(Get-Credential).Password" not in winrs.out
    assert "[Console]::In.ReadLine()" in winrs.out and "-Password $exmigSecret1" in winrs.out
    assert "written in base64 chunks" in winrs.out
    # ...and otherwise the same commands: the WinRS scripts are rendered from them.
    sent = [line for line in winrs.out.splitlines()[1:]
            if "exmigSecret" not in line and "over WinRS" not in line and "# which runs:" not in line]
    same = [line for line in psrp.out.splitlines()[1:] if "-Password" not in line]
    assert sent == same


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
    # Every command the text shows: the reads, the commands and the conditional branches (issue 15).
    commands = [c for step in json.loads(as_json.out)["steps"]
                for c in (*step["reads"], *step["commands"], *(x for b in step["branches"] for x in b["commands"]))]
    winrs = [c["winrs"] for c in commands if "winrs" in c]
    assert len(winrs) == len(sent)
    for c in winrs:
        assert c["command_line"].startswith("powershell.exe -NoLogo") and _decoded(c["command_line"]) == c["script"]
    psrp = exmig("plan", ROOT / "playbooks" / "lab.yml", "--server", "EX2007", "--format", "json")
    assert not any("winrs" in c for step in json.loads(psrp.out)["steps"] for c in step["commands"])
