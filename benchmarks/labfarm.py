"""Lab servers for the benchmarks: one source and any number of targets, WinRM only, on 127.0.0.1.

`LabSite` also starts four TLS listeners per server (HTTPS, SMTP, IMAPS, POP3S) for `exmig verify`;
the migration itself never touches them, and with 50 targets they would be 200 idle listener
threads competing for the GIL with the servers being measured. So the farm builds `LabServer`s
directly, the way `LabSite._build` does for a PSRP server, without the TLS services.

`LabFarm` runs the servers in this process (as the e2e tests do). `LabFarmProcess` runs the same
servers in a child process (`python -m benchmarks.labfarm serve ...`), so that the lab's CPU work
(it emulates 51 Windows servers) does not share the client's GIL: closer to real remote servers.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Self

from orchestrator.lab.ca import LabCA
from orchestrator.lab.costs import NO_COSTS, UNLIMITED, LabCosts, LabLimits, apply_costs
from orchestrator.lab.exchange import ExchangeServerModel, LabSettings, ServerInspector, build_registry
from orchestrator.lab.rehearsal import rehearsal_playbook
from orchestrator.lab.requestlog import RequestLog
from orchestrator.lab.server import LabServer
from orchestrator.lab.site import LAB_DOMAIN, lab_endpoints, lab_password, lab_username
from orchestrator.playbook import LabIssuer, LoadedPlaybook, Server, load_playbook

ROOT = Path(__file__).resolve().parent.parent
LAB_PLAYBOOK = ROOT / "playbooks" / "lab.yml"
MAX_TARGETS = 200
CHILD_REPLY_TIMEOUT = 120.0  # seconds to wait for the child lab's answer (start-up of 200 servers included)
CHILD_LIFETIME = 3600.0  # the child lab stops on its own after this long, whatever happens to the parent


@dataclass
class ServerCount:
    """One server's requests in one run, from the lab's request log."""

    requests: int
    actions: Counter[str]
    pools: int  # Create
    handshake: int  # auth-only legs (401s and the empty POST that completes NTLM)
    commands: int  # Command (one per pipeline)
    sends: int  # Send: SecureString key exchange and byte[] arguments larger than one fragment
    receives: int
    extra_receives: int  # Receives beyond one per pipeline and one per pool open/key exchange
    deletes: int
    signals: int

    @property
    def minimum(self) -> int:
        """The requests of this run less the Receives only timing made necessary (a pipeline still
        running when its first Receive was answered): the protocol minimum for what this run sent."""
        return self.requests - self.extra_receives


def count(log: RequestLog) -> ServerCount:
    records = log.records()
    actions = Counter(r.action or "(auth)" for r in records)
    pool_sends = sum(1 for r in records if r.action == "Send" and not r.command_id)
    # Needed Receives: one per pipeline; per pool one for the open and one per key exchange.
    needed = actions["Command"] + actions["Create"] + pool_sends
    return ServerCount(
        requests=len(records), actions=actions, pools=actions["Create"], handshake=actions["(auth)"],
        commands=actions["Command"], sends=actions["Send"], receives=actions["Receive"],
        extra_receives=max(0, actions["Receive"] - needed), deletes=actions["Delete"], signals=actions["Signal"],
    )


@dataclass
class FarmServer:
    server: Server
    model: ExchangeServerModel
    winrm: LabServer
    username: str
    password: str

    @property
    def log(self) -> RequestLog:
        return self.winrm.log

    def serves(self, thumbprint: str) -> bool:
        """The certificate serves every TLS service (read from the model: no request, not in the log)."""
        return set(ServerInspector(self.model).serving().values()) == {thumbprint}


class LabFarm:
    """The source and target of `playbooks/lab.yml`, the target repeated `targets` times (EX2007-01...).

    The CA is shared (created once per benchmark run); the servers' state is in memory; the farm's
    folder holds exmig's journal.
    """

    def __init__(self, state_dir: Path, ca: LabCA, targets: int = 1, latency: float = 0.0,
                 powershell: str = "2.0", costs: LabCosts = NO_COSTS, limits: LabLimits = UNLIMITED,
                 winrs_targets: bool = False) -> None:
        """`costs`, `limits`: the lab's cost profile and quotas (costs.py); `winrs_targets`: the 2007 targets
        over WinRS (powershell.exe -PSConsoleFile in a cmd shell) instead of PSRP."""
        self.costs = costs
        self.limits = limits
        self.winrs_targets = winrs_targets
        self.exshells: dict[str, Any] = {}
        if not 1 <= targets <= MAX_TARGETS:
            raise ValueError(f"targets must be between 1 and {MAX_TARGETS}")
        self.state_dir = state_dir
        self.ca = ca
        self.latency = latency
        base = rehearsal_playbook(load_playbook(LAB_PLAYBOOK), state_dir)
        source = base.playbook.source
        template = base.playbook.targets[0]
        names = [template.name] if targets == 1 else [f"{template.name}-{i:02d}" for i in range(1, targets + 1)]
        self.wanted = [source] + [template.model_copy(update={"name": n}) for n in names]
        self._base = base
        self.servers: dict[str, FarmServer] = {}
        self.powershell = powershell  # the hosts' Windows PowerShell (LabSettings.windows_powershell)
        self.settings = LabSettings(third_party_roots=(ca.root_pem,), windows_powershell=powershell)

    def _build(self, server: Server) -> FarmServer:
        fqdn = f"{server.name.lower()}.{LAB_DOMAIN}"
        # In memory (state_dir=None): the lab's own disk writes (an fsync'd state file per change) are not
        # what the benchmark measures, and they would take CPU and I/O from the client on one machine.
        model = ExchangeServerModel.load_or_create(None, name=server.name, version=str(server.version), fqdn=fqdn)
        registry = build_registry(model, self.settings)
        if self.winrs_targets and server.version == 2007:
            from orchestrator.lab.exshell import register_exshell

            self.exshells[server.name] = register_exshell(registry, model)
        apply_costs(registry, self.costs)
        configurations = lab_endpoints(server.version, self.settings)
        username, password = lab_username(server), lab_password(server)
        winrm = LabServer(server.name, registry, {username: password}, configurations=configurations,
                          auth=("negotiate",), port=0, latency=self.latency, costs=self.costs, limits=self.limits)
        return FarmServer(server, model, winrm, username, password)

    def start(self) -> Self:
        try:
            for server in self.wanted:
                farm_server = self._build(server)
                self.servers[server.name] = farm_server
                farm_server.winrm.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for farm_server in self.servers.values():
            farm_server.winrm.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the clients and the benchmark ask ---------------------------------------------------

    @property
    def source_name(self) -> str:
        return self.wanted[0].name

    @property
    def target_names(self) -> list[str]:
        return [s.name for s in self.wanted[1:]]

    def ports(self) -> dict[str, int]:
        return {name: s.winrm.port for name, s in self.servers.items()}

    def credentials(self) -> dict[str, tuple[str, str]]:
        return {s.name: (lab_username(s), lab_password(s)) for s in self.wanted}

    def counts(self) -> dict[str, ServerCount]:
        return {name: count(s.log) for name, s in self.servers.items()}

    def not_serving(self, thumbprint: str) -> list[str]:
        return [name for name, s in self.servers.items() if not s.serves(thumbprint)]

    def lab_cpu(self) -> float | None:
        """CPU seconds the lab used so far; None when it shares this process (then it is in the client's)."""
        return None

    def loaded(self) -> LoadedPlaybook:
        """The playbook pointed at the farm's ports, with the lab CA as issuer."""
        ports = self.ports()
        servers = []
        for server in self.wanted:
            update: dict[str, Any] = {"host": "127.0.0.1", "port": ports[server.name], "system_port": ports[server.name]}
            if self.winrs_targets and server.version == 2007:
                update["transport"] = "winrs"
            connection = server.connection.model_copy(update=update)
            servers.append(server.model_copy(update={"connection": connection}))
        playbook = self._base.playbook.model_copy(update={
            "servers": servers, "issuer": LabIssuer(type="lab", ca_dir=str(self.ca.directory))})
        return self._base.model_copy(update={"playbook": playbook})


class LabFarmProcess(LabFarm):
    """The same farm served by a child process; counts and checks are asked over its stdin/stdout."""

    def __init__(self, state_dir: Path, ca: LabCA, targets: int = 1, latency: float = 0.0,
                 powershell: str = "2.0") -> None:
        super().__init__(state_dir, ca, targets, latency, powershell)
        self._targets = targets
        self._proc: subprocess.Popen[str] | None = None
        self._ports: dict[str, int] = {}

    def start(self) -> Self:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.labfarm", "serve", "--state", str(self.state_dir),
             "--ca", str(self.ca.directory), "--targets", str(self._targets), "--latency", str(self.latency),
             "--powershell", self.powershell],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            self._ports = {k: int(v) for k, v in self._ask(None)["ports"].items()}
        except BaseException:
            self.stop()
            raise
        return self

    def _ask(self, line: str | None) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise RuntimeError("the lab process is not running")
        if line is not None:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        return _read_json_line(proc.stdout, CHILD_REPLY_TIMEOUT)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None and proc.poll() is None:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()  # our own child, by its handle
            proc.wait(timeout=10)

    def ports(self) -> dict[str, int]:
        return dict(self._ports)

    def counts(self) -> dict[str, ServerCount]:
        reply = self._ask("counts")
        return {name: ServerCount(**{**c, "actions": Counter(c["actions"])}) for name, c in reply["counts"].items()}

    def not_serving(self, thumbprint: str) -> list[str]:
        return list(self._ask(f"not-serving {thumbprint}")["servers"])

    def lab_cpu(self) -> float | None:
        return float(self._ask("cpu")["cpu"])


def _read_json_line(stream: IO[str], timeout: float) -> dict[str, Any]:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no answer from the lab process within {timeout:.0f} s")
    line = stream.readline()
    if not line:
        raise RuntimeError("the lab process ended")
    data: dict[str, Any] = json.loads(line)
    return data


def serve(argv: list[str]) -> int:
    """Child side: start the farm, print its ports, answer `counts`, `cpu`, `not-serving THUMB`, `stop`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.labfarm serve")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--targets", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--powershell", default="2.0")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + CHILD_LIFETIME
    with LabFarm(args.state, LabCA.load_or_create(args.ca), args.targets, args.latency, args.powershell) as farm:
        _reply({"ports": farm.ports()})
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sys.stdin], [], [], 5.0)
            if not ready:
                continue
            line = sys.stdin.readline()
            if not line or line.strip() == "stop":
                break
            words = line.split()
            if words[0] == "counts":
                _reply({"counts": {n: {**asdict(c), "actions": dict(c.actions)} for n, c in farm.counts().items()}})
            elif words[0] == "cpu":
                _reply({"cpu": time.process_time()})
            elif words[0] == "not-serving" and len(words) == 2:
                _reply({"servers": farm.not_serving(words[1])})
            else:
                _reply({"error": f"unknown request {line.strip()!r}"})
    return 0


def _reply(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2:]))
    sys.exit("usage: python -m benchmarks.labfarm serve --state DIR --ca DIR [--targets N] [--latency S] [--powershell 2.0|5.1]")
