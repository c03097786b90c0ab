"""The module graph: no import circles, and the step decisions import nothing that does I/O (issue 15).

Every import counts, also one inside a function or under TYPE_CHECKING: a circle hidden in a function is
still a circle to whoever reads the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2] / "orchestrator"

# Modules and packages whose import means I/O: sessions, files, processes, the network, the lab.
IO = ("orchestrator.transport", "orchestrator.execute", "orchestrator.connect", "orchestrator.journal",
      "orchestrator.fileio", "orchestrator.secrets_store", "orchestrator.workstation", "orchestrator.lab",
      "orchestrator.verify", "orchestrator.troubleshoot", "orchestrator.cli", "pypsrp", "winrm", "requests",
      "socket", "subprocess", "ssl", "urllib.request", "http.client")
PURE = ("orchestrator.steps", "orchestrator.decision", "orchestrator.reads", "orchestrator.plan",
        "orchestrator.dialects", "orchestrator.commands", "orchestrator.checks")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from orchestrator import checks`
    return out


def graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first: those count as imported too. But a module's own
    # parent packages are initialized before it runs (`from orchestrator.lab.exchange import pki` inside that
    # package): that order is Python's, not a circle the code made.
    def with_parents(imported: set[str]) -> set[str]:
        return imported | {i.rsplit(".", k)[0] for i in imported for k in range(1, i.count("."))}

    return {name: {i for i in with_parents(_imports(path, name)) if i in files and i != name
                   and not name.startswith(i + ".")}
            for name, path in files.items()}


def _closure(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_module_imports_one_that_imports_it_back() -> None:
    edges = graph()
    circles = sorted(name for name in edges if name in _closure(edges, name))
    assert not circles, f"modules on an import circle: {circles}"


def test_the_decisions_import_nothing_that_does_io() -> None:
    edges = graph()
    for name in PURE:
        reached = _closure(edges, name)
        direct = {i for p in [ROOT.parent / (name.replace(".", "/") + ".py")] for i in _imports(p, name)}
        bad = sorted(m for m in reached | direct if m.startswith(IO) and not m.startswith(PURE))
        assert not bad, f"{name} reaches {bad}"


def test_the_graph_sees_imports() -> None:
    """The test above would pass on an empty graph: check it finds the imports it must."""
    edges = graph()
    assert "orchestrator.steps" in edges["orchestrator.execute"]
    assert "orchestrator.checks" in edges["orchestrator.steps"]
