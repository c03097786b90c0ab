"""What admins expect of a CLI (issue 21): --version, shell completion, help without `<bool>` and with examples."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
import typer

from orchestrator.cli import app
from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _commands() -> Iterator[tuple[list[str], typer.core.TyperCommand]]:
    """Every leaf command with its path of names, e.g. (['lab', 'serve'], <command>)."""
    def walk(group: typer.core.TyperGroup, prefix: list[str]) -> Iterator[tuple[list[str], typer.core.TyperCommand]]:
        for name, command in group.commands.items():
            if isinstance(command, typer.core.TyperGroup):
                yield from walk(command, [*prefix, name])
            else:
                yield [*prefix, name], command

    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    yield from walk(root, [])


COMMANDS = list(_commands())


def test_version_names_exmig_and_the_winrm_libraries(exmig: Callable) -> None:
    result = exmig("--version")
    assert result.code == 0 and result.err == ""
    source_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.out.startswith(f"exmig {source_version} ("), result.out  # the installed exmig is this tree's
    for package in ("pypsrp", "pywinrm", "psrpcore"):
        assert f"{package} {version(package)}" in result.out
    assert len(result.out.splitlines()) == 1


def test_help_and_version_start_without_the_heavy_libraries() -> None:
    """--help and --version stay fast (benchmarks/startup.py): neither imports pydantic, rich or the WinRM clients."""
    probe = ("import sys\nfrom orchestrator.cli import main\n"
             "for args in (['--help'], ['--version']):\n"
             "    main(args)\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'pydantic', 'rich', 'pypsrp', 'winrm', 'psrpcore', 'cryptography', 'ruamel'}))\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    assert proc.stdout.splitlines()[-1] == "[]", proc.stdout[-300:]


def _bash(script: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(home)}
    assert (BIN / "exmig").exists(), f"the exmig script is not installed in {BIN} (pip install -e .)"
    return subprocess.run(["bash", "--norc", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_bash_completion_script_completes_commands_and_choices(tmp_path: Path) -> None:
    # The script typer prints for the shell it detects (bash here), sourced and called as bash would on <Tab>.
    complete = ('source <(exmig --show-completion)\n'
                'COMP_WORDS=({words}); COMP_CWORD={cword}; _exmig_completion exmig; printf "%s\\n" "${{COMPREPLY[@]}}"')
    proc = _bash(complete.format(words="exmig re", cword=1), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == ["rehearse", "renew", "report"]
    proc = _bash(complete.format(words="exmig init --issuer ''", cword=3), tmp_path)
    assert proc.stdout.split() == ["manual", "files", "lab"], proc.stdout + proc.stderr
    proc = _bash(complete.format(words="exmig rehearse x.yml --windows-powershell ''", cword=4), tmp_path)
    assert proc.stdout.split() == ["2.0", "3.0", "4.0", "5.1"], proc.stdout + proc.stderr
    proc = _bash(complete.format(words="exmig lab s", cword=2), tmp_path)
    assert sorted(proc.stdout.split()) == ["serve", "sign"]


def test_install_completion_writes_the_script_bash_sources(tmp_path: Path) -> None:
    proc = _bash("exmig --install-completion", tmp_path)
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / ".bash_completions" / "exmig.sh"
    assert "_EXMIG_COMPLETE=complete_bash" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text() or ".bash_completions/exmig.sh" in (
        tmp_path / ".bashrc").read_text()


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_has_no_type_on_flags_and_a_runnable_example(exmig: Callable, path: list[str],
                                                          command: typer.core.TyperCommand) -> None:
    result = exmig(*path, "--help")
    assert result.code == 0, result.err
    assert "<bool>" not in result.out
    for param in command.params:
        if getattr(param, "is_flag", False):
            line = next(line for line in result.out.splitlines() if param.opts[0] in re.split(r"[ ,]+", line.strip()))
            assert "<" not in line, line
    # Each command shows its most useful invocation, and that invocation parses as this command's arguments.
    lines = result.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:"))
    examples = [line.strip() for line in lines[start + 1:] if line.strip()]
    assert examples
    for example in examples:
        words = shlex.split(example)
        words = words[:next((i for i, w in enumerate(words) if w in (">", "|")), len(words))]  # the shell's part
        assert words[:1 + len(path)] == ["exmig", *path], example
        command.make_context(" ".join(path), words[1 + len(path):])  # raises on an unknown option or argument


def test_root_help_lists_every_command_with_a_whole_sentence(exmig: Callable) -> None:
    result = exmig("--help")
    assert result.code == 0
    assert "<bool>" not in result.out
    for option in ("--version", "--install-completion", "--show-completion"):
        assert option in result.out
    listing = result.out.split("Commands:")[1]
    assert "..." not in listing, listing  # short help fits: not cut off mid-sentence


@pytest.mark.parametrize("args", [[], ["lab"]], ids=["exmig", "exmig lab"])
def test_a_bare_group_prints_its_help(exmig: Callable, args: list[str]) -> None:
    result = exmig(*args)
    assert result.code == 2 and result.err == ""
    assert result.out.startswith(f"Usage: exmig {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND [ARGS]...")
