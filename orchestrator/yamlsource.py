"""YAML loading that remembers where every value came from, for `file:line: field:` errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from orchestrator.errors import PlaybookError

Location = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Line numbers (1-based) of the keys and items of a loaded YAML document."""

    file: str
    lines: dict[Location, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of `loc`, or of its nearest ancestor that has one."""
        path = tuple(loc)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, loc: Sequence[str | int], problem: str) -> PlaybookError:
        return PlaybookError(self.file, self.line_of(loc), dotted(loc), problem)


def dotted(loc: Sequence[str | int]) -> str:
    """('servers', 0, 'connection', 'port') -> 'servers[0].connection.port'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _plain(node: Any, loc: Location, lines: dict[Location, int]) -> Any:
    """Convert ruamel's round-trip nodes to plain dict/list, recording line numbers."""
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            line, _col = node.lc.key(key)
            lines[loc + (key,)] = line + 1
            out[key] = _plain(value, loc + (key,), lines)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            line, _col = node.lc.item(index)
            lines[loc + (index,)] = line + 1
            items.append(_plain(value, loc + (index,), lines))
        return items
    if isinstance(node, str):
        return str(node)  # ruamel's scalar string subclasses confuse pydantic's strict mode
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookError(name, None, "", "file not found; give the path of a playbook (.yml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError(name, None, "", f"cannot read the file: {exc}") from None
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    try:
        node = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise PlaybookError(name, line, "", f"not valid YAML: {problem}") from None
    except YAMLError as exc:
        raise PlaybookError(name, None, "", f"not valid YAML: {str(exc).splitlines()[0]}") from None
    source = SourceMap(name)
    source.lines[()] = 1
    return _plain(node, (), source.lines), source
