"""End-to-end fixtures: a lab built from playbooks/lab.yml on ports chosen at run time, a playbook file
pointing at it, and the real CLI run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan
from ruamel.yaml import YAML

from orchestrator.lab.site import EmulatedServer, LabSite
from orchestrator.playbook import LabIssuer, Playbook, load_playbook
from tests.conftest import ROOT

LAB_PLAYBOOK = ROOT / "playbooks" / "lab.yml"


def write_playbook(playbook: Playbook, path: Path) -> Path:
    data = playbook.model_dump(mode="json", exclude_none=True)
    yaml = YAML()
    with path.open("w") as handle:
        yaml.dump(data, handle)
    return path


@dataclass
class Lab:
    site: LabSite
    playbook_path: Path
    playbook: Playbook
    tmp: Path

    def server(self, name: str) -> EmulatedServer:
        return self.site.servers[name]

    def exmig(self, *args: str, timeout: float = 240, env_extra: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXMIG_")} | (env_extra or {})
        return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=self.tmp, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def run_json(self, *args: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
        proc = self.exmig("run", str(self.playbook_path), "--yes", "--json", *args)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        return proc, events


def build_lab(tmp: Path, source: Path = LAB_PLAYBOOK, mutate: Any = None, site_options: dict[str, Any] | None = None,
              **lab_settings: Any) -> Lab:
    """`lab_settings`: LabSettings fields to change, e.g. windows_powershell="5.1"; `site_options`: LabSite's
    own (costs, limits)."""
    loaded = load_playbook(source)
    playbook = loaded.playbook
    if mutate is not None:
        playbook = mutate(playbook)
    site = LabSite(playbook, tmp / "lab-state", use_playbook_ports=False, **(site_options or {}))
    site.settings = replace(site.settings, **lab_settings)
    site.start()
    lab_playbook = site.playbook_for_lab().model_copy(
        update={"issuer": LabIssuer(type="lab", ca_dir=str(site.state_dir / "ca"))})
    path = write_playbook(lab_playbook, tmp / "lab.yml")
    return Lab(site, path, lab_playbook, tmp)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = build_lab(tmp_path)
    try:
        yield lab
    finally:
        lab.site.stop()


def raw_pool(emulated: EmulatedServer, configuration: str) -> RunspacePool:
    """A plain pypsrp pool (not exmig code) for checking what a server holds."""
    path = "PowerShell" if configuration == "Microsoft.Exchange" else "wsman"
    wsman = WSMan("127.0.0.1", port=emulated.winrm.port, path=path, ssl=False, auth="ntlm",
                  username=emulated.username, password=emulated.password, encryption="always")
    return RunspacePool(wsman, configuration_name=configuration)


def raw_invoke(pool: RunspacePool, cmdlet: str, **params: Any) -> list[Any]:
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for name, value in params.items():
        ps.add_parameter(name, value)
    out = ps.invoke()
    assert not ps.had_errors, [str(e) for e in ps.streams.error]
    return out


def props(obj: Any) -> dict[str, Any]:
    return {**obj.adapted_properties, **obj.extended_properties}


def ca_store(lab: Lab, name: str) -> set[str]:
    """Thumbprints in the server's LocalMachine\\CA, read with raw pypsrp."""
    with raw_pool(lab.server(name), "Microsoft.PowerShell") as pool:
        return {props(o)["Thumbprint"] for o in raw_invoke(pool, "Get-ChildItem", Path="Cert:\\LocalMachine\\CA")}


def file_exists(lab: Lab, name: str, path: str) -> bool:
    with raw_pool(lab.server(name), "Microsoft.PowerShell") as pool:
        return raw_invoke(pool, "Test-Path", Path=path) == [True]


def put_file_in_the_way(lab: Lab, name: str, path: str) -> None:
    """A file where exmig's working folder should be: New-Item -ItemType Directory cannot make it."""
    with raw_pool(lab.server(name), "Microsoft.PowerShell") as pool:
        raw_invoke(pool, "Set-Content", Path=path, Value=b"in the way", Encoding="Byte")
