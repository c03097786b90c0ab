"""The WinRS cmd shell (resource URI .../windows/shell/cmd), as pywinrm's run_cmd uses it.

Each Command runs one program through `registry.native(name)` in a worker thread; its
stdout/stderr come back on Receive with the exit code once it is done. Command lines are
split with CommandLineToArgvW's rules. Lab limits: no cmd.exe built-ins, pipes or
redirections. Stdin sent with Send is kept (`Command.stdin`); the handler signature has no
stdin, so a handler that reads it calls `current_stdin()` from its worker thread (WinRS
`powershell.exe` in `lab/exshell.py` reads the SecureString lines that way).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from orchestrator.lab.registry import NativeResult, Registry, Session


def split_command_line(line: str) -> list[str]:
    """CommandLineToArgvW: argv[0] ends at the closing quote or whitespace, no escapes; later
    arguments honour 2n/2n+1 backslashes before a quote and "" inside quotes."""
    args: list[str] = []
    i, n = 0, len(line)
    while i < n and line[i] in " \t":
        i += 1
    if i >= n:
        return args
    if line[i] == '"':
        end = line.find('"', i + 1)
        end = n if end < 0 else end
        args.append(line[i + 1 : end])
        i = end + 1
    else:
        start = i
        while i < n and line[i] not in " \t":
            i += 1
        args.append(line[start:i])
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return args
        cur: list[str] = []
        quoted = False
        while i < n and (quoted or line[i] not in " \t"):
            c = line[i]
            if c == "\\":
                start = i
                while i < n and line[i] == "\\":
                    i += 1
                count = i - start
                if i < n and line[i] == '"':
                    cur.append("\\" * (count // 2))
                    if count % 2:
                        cur.append('"')
                        i += 1
                else:
                    cur.append("\\" * count)
                continue
            if c == '"':
                if quoted and i + 1 < n and line[i + 1] == '"':
                    cur.append('"')
                    i += 2
                    continue
                quoted = not quoted
                i += 1
                continue
            cur.append(c)
            i += 1
        args.append("".join(cur))


def not_recognized(program: str) -> NativeResult:
    return NativeResult(
        stdout="",
        stderr=f"'{program}' is not recognized as an internal or external command,\r\n"
        "operable program or batch file.\r\n",
        exit_code=1,
    )


@dataclass
class Command:
    command_id: str
    argv: list[str]
    stdin: bytearray = field(default_factory=bytearray)
    result: NativeResult | None = None
    sent: bool = False
    worker: threading.Thread | None = None


_worker = threading.local()


class StdinReader:
    """The stdin of one running program, as its handler may read it (bounded waits only)."""

    def __init__(self, shell: WinrsShell, cmd: Command) -> None:
        self._shell = shell
        self._cmd = cmd
        self._pos = 0

    def read_line(self, timeout: float) -> str | None:
        """The next line (without CR/LF) in the shell's code page, or None if none arrives in time."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._shell._cond:
            while True:
                data = bytes(self._cmd.stdin[self._pos:])
                end = data.find(b"\n")
                if end >= 0:
                    self._pos += end + 1
                    return data[:end].rstrip(b"\r").decode(self._shell.encoding, errors="replace")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._shell._closed:
                    return None
                self._shell._cond.wait(remaining)


def current_stdin() -> StdinReader | None:
    """Stdin of the program the calling native handler runs; None outside a WinRS worker thread."""
    return getattr(_worker, "stdin", None)


def _codec(codepage: str | None) -> str:
    if codepage == "65001":
        return "utf-8"
    return f"cp{codepage}" if codepage and codepage.isdigit() else "cp437"


class WinrsShell:
    resource_uri = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"

    def __init__(self, shell_id: str, registry: Registry, username: str, codepage: str | None = None) -> None:
        self.shell_id = shell_id
        self.registry = registry
        self.session = Session(configuration="cmd", username=username)
        self.encoding = _codec(codepage)
        self._cond = threading.Condition()
        self._commands: dict[str, Command] = {}
        self._closed = False
        self.worker_errors: list[str] = []

    def command(self, program: str, arguments: list[str]) -> str:
        line = " ".join([program, *arguments]) if arguments else program
        argv = split_command_line(line)
        cmd = Command(command_id=str(uuid.uuid4()).upper(), argv=argv)
        with self._cond:
            self._commands[cmd.command_id] = cmd
        cmd.worker = threading.Thread(target=self._run, args=(cmd,), name=f"lab-winrs-{cmd.command_id[:8]}",
                                      daemon=True)
        cmd.worker.start()
        return cmd.command_id

    def _run(self, cmd: Command) -> None:
        _worker.stdin = StdinReader(self, cmd)
        try:
            if not cmd.argv:
                result = NativeResult()
            else:
                spec = self.registry.native(cmd.argv[0])
                result = not_recognized(cmd.argv[0]) if spec is None else spec.handler(cmd.argv[1:], self.session)
        except Exception as exc:  # noqa: BLE001 - a handler bug shows up as a failed program, not a hang
            import traceback

            self.worker_errors.append(traceback.format_exc())
            result = NativeResult(stderr=f"Lab handler failure: {type(exc).__name__}: {exc}\r\n", exit_code=1)
        with self._cond:
            cmd.result = result
            self._cond.notify_all()

    def has_command(self, command_id: str) -> bool:
        with self._cond:
            return command_id.upper() in self._commands

    def commands(self) -> list[tuple[str, str]]:
        """(CommandId, CommandState) of the commands not yet terminated, for WS-Enumeration of commands."""
        with self._cond:
            return [(c.command_id, "Done" if c.result is not None else "Running") for c in self._commands.values()]

    def send(self, command_id: str, data: bytes) -> None:
        with self._cond:
            cmd = self._commands.get(command_id.upper())
            if cmd is not None:
                cmd.stdin += data
                self._cond.notify_all()

    def receive(self, command_id: str, timeout: float) -> tuple[bytes, bytes, int | None] | None:
        """(stdout, stderr, exit code when done) or None on OperationTimeout."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            cmd = self._commands.get(command_id.upper())
            if cmd is None:
                raise KeyError(command_id)
            while cmd.result is None and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if cmd.result is None or cmd.sent:
                return b"", b"", cmd.result.exit_code if cmd.result else None
            cmd.sent = True
            r = cmd.result
            return (
                r.stdout.encode(self.encoding, errors="replace"),
                r.stderr.encode(self.encoding, errors="replace"),
                r.exit_code,
            )

    def signal(self, command_id: str, code: str) -> None:
        if code.lower().endswith("/terminate"):
            with self._cond:
                self._commands.pop(command_id.upper(), None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
